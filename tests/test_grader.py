"""The learner side: generated exercise notebooks and the grader.

Small synthetic notebooks (two chapter-1 exercises, no torch import) keep the behavioural
tests fast; the full chapters are graded in tests/test_notebooks.py (solutions: all pass;
generated exercises: all "not attempted yet").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from bncourse import grader
from bncourse.checks import EXERCISES
from bncourse.exercise_notebooks import (
    BEGIN,
    make_exercise_notebook,
    out_of_sync,
    stub_source,
    write_exercises,
)
from bncourse.plain_markdown import Labels, collect_labels, leftover_markup, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def run_grade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bncourse", "grade", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def exercise_cells(exercise_id: str, code: str) -> list:
    """An exercise as the chapters write it: statement, dropdown solution, check cell."""
    function = EXERCISES[exercise_id].function
    return [
        nbformat.v4.new_markdown_cell(
            f"```{{exercise}} Title\n:label: ex-{exercise_id}\n\nWrite it.\n```"
        ),
        nbformat.v4.new_markdown_cell(
            f"```{{solution-start}} ex-{exercise_id}\n:class: dropdown\n```"
        ),
        nbformat.v4.new_code_cell(code),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_code_cell(f'check("{exercise_id}", {function})'),
    ]


STANDARDIZE = f'''def standardize(x):
    """Z-score each column."""
    {BEGIN}
    return (x - x.mean(axis=0)) / x.std(axis=0)
    ### END SOLUTION'''
EXTREME_BATCH = f'''def extreme_batch(m):
    """A batch that reaches Samuelson's bound."""
    {BEGIN}
    x = np.zeros(m)
    x[0] = 1.0
    return x
    ### END SOLUTION'''
EXPECTED_STD = f'''def expected_std(n, c):
    """What output.std() prints."""
    {BEGIN}
    return (n * c / (n * c - 1)) ** 0.5
    ### END SOLUTION'''
PREDICTED_SUM = f"{BEGIN}\npredicted_sum = 0.0\n### END SOLUTION"


def small_chapter(
    standardize: str = STANDARDIZE,
    expected_std: str = EXPECTED_STD,
    extra=(),
    extreme_batch: str = EXTREME_BATCH,
    predicted_sum: str = PREDICTED_SUM,
) -> nbformat.NotebookNode:
    """Chapter 1's four exercises (no torch import): the grader asks for all four."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A small chapter"),
        nbformat.v4.new_code_cell("import numpy as np\nfrom bncourse.checks import check"),
        *extra,
        *exercise_cells("standardize", standardize),
        *exercise_cells("extreme-batch", extreme_batch),
        *exercise_cells("expected-std", expected_std),
        *exercise_cells("predict-output-sum", predicted_sum),
    ]
    return nb


def write(nb, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def statuses(results) -> dict[str, str]:
    return {r.exercise: r.status for r in results}


# --------------------------------------------------------------------------------------------
# Generating exercises/
# --------------------------------------------------------------------------------------------
def test_exercises_folder_is_in_sync_with_notebooks():
    assert out_of_sync(ROOT / "notebooks", ROOT / "exercises") == [], (
        "exercises/ is stale: run `python -m bncourse make-exercises`"
    )


def test_generation_is_idempotent(tmp_path):
    first = [p.read_bytes() for p in write_exercises(ROOT / "notebooks", tmp_path / "a")]
    write_exercises(ROOT / "notebooks", tmp_path / "a")
    again = [p.read_bytes() for p in sorted((tmp_path / "a").glob("*.ipynb"))]
    assert first == again
    stray = tmp_path / "a" / "99_gone.ipynb"
    stray.write_bytes(first[0])  # an exercise notebook whose chapter is gone
    foreign = tmp_path / "a" / "my_notes.ipynb"
    foreign.write_text("{}")
    write_exercises(ROOT / "notebooks", tmp_path / "a")
    assert not stray.exists(), "an exercise notebook with no chapter is removed"
    assert foreign.read_text() == "{}", "a notebook make-exercises did not write is kept"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_generated_notebook_hides_solutions_and_keeps_the_rest(path):
    chapter = nbformat.read(path, as_version=4)
    learner = make_exercise_notebook(chapter, path.stem)
    text = json.dumps(learner)
    for hidden in ("BEGIN SOLUTION", "END SOLUTION", "solution-start", "solution-end"):
        assert hidden not in text
    for cell in learner.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    ids = grader.exercise_ids(learner)
    assert ids == grader.exercise_ids(chapter) and len(ids) >= 2
    sources = "\n".join(c.source for c in learner.cells if c.cell_type == "code")
    for exercise_id in ids:
        ex = EXERCISES[exercise_id]
        function = ex.function
        if ex.prediction:  # the variable, set to None
            assert f"{function} = None  # {exercise_id}: your prediction here" in sources
        else:
            assert (
                f'raise NotImplementedError("{exercise_id}: write your solution here")' in sources
            )
        assert ex.defined_in(sources)
        assert f'check("{exercise_id}", {function})' in sources
    # the chapter's prose and demonstrations are all there, the prose in plain Markdown
    kept = {c.source for c in learner.cells}
    labels, counter = collect_labels(ROOT), [0]
    for cell in chapter.cells:
        if cell.cell_type == "markdown" and "solution-" not in cell.source:
            assert to_markdown(cell.source, path.stem, labels, counter) in kept
        elif cell.cell_type == "code" and "SOLUTION" not in cell.source:
            assert cell.source in kept


@pytest.mark.parametrize("path", sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.stem)
def test_learner_notebooks_read_as_plain_notebooks(path):
    """Jupyter and Colab show MyST raw: the learner notebooks hold none (no directive, role or
    target), exercises are numbered headings as in the book, and no solution marker is left."""
    nb = nbformat.read(path, as_version=4)
    number = int(path.stem.split("_")[0])
    headings = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert leftover_markup(cell.source) == [], (cell.get("id"), cell.source[:200])
            assert not re.search(r"\{(cite|ref|numref|prf:ref|doc)\}`", cell.source)
            headings += re.findall(r"^#### Exercise (\d+)\.(\d+): ", cell.source, re.M)
        assert "BEGIN SOLUTION" not in cell.source and "NBVAL" not in cell.source
    assert headings == [(str(number), str(k)) for k in range(1, len(headings) + 1)], headings
    assert len(headings) == len(grader.exercise_ids(nb)) >= 2


def test_plain_markdown_rules():
    labels = Labels(
        targets={"ch1-bound": ("The bound", "01_a"), "prop-x": ("Proposition (P)", "02_b")},
        citations={"k": "Ioffe and Szegedy, 2015"},
    )
    source = (
        "(ch2-x)=\n## A section\n\nSee {ref}`ch1-bound`, {ref}`this one <ch1-bound>`, "
        "{prf:ref}`prop-x` and {cite}`k`.\n\n```{exercise} Do it\n:label: ex-do-it\n\n"
        "Write `f`.\n```\n"
    )
    out = to_markdown(source, "02_b", labels, [0])
    assert out == (
        "## A section\n\nSee “The bound” in chapter 1, *this one* in chapter 1, "
        "“Proposition (P)” and (Ioffe and Szegedy, 2015).\n\n"
        '#### Exercise 2.1: Do it\n<a id="ex-do-it"></a>\n\nWrite `f`.'
    )
    assert grader.exercise_ids(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(out)])
    ) == ["do-it"]
    assert leftover_markup("```{margin}\nx\n```\n") == ["```{margin}"]


def test_stub_keeps_signature_docstring_and_indentation():
    source = (
        'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n'
        "    ### END SOLUTION"
    )
    assert stub_source(source, "demo") == (
        'def f(x):\n    """Doc."""\n    raise NotImplementedError("demo: write your solution here")'
    )
    with pytest.raises(ValueError, match="without"):
        stub_source("### BEGIN SOLUTION\nx = 1", "demo")


def test_a_prediction_stub_sets_the_variable_to_none():
    """A region at the cell's top level is a prediction's: each variable it assigns becomes
    None (the check says "not attempted"), its comments (the model answer) go, and the
    code around it stays."""
    source = (
        "### BEGIN SOLUTION\npredicted_m = 128\n# because N * H * W\nshape: tuple = (2, 3)\n"
        "### END SOLUTION\nprint('after')"
    )
    assert stub_source(source, "demo") == (
        "predicted_m = None  # demo: your prediction here\n"
        "shape = None  # demo: your prediction here\nprint('after')"
    )
    from bncourse.checks import NotAttempted, check

    with pytest.raises(NotAttempted, match="still None"):
        check("predict-values-per-channel", None)


def test_make_exercises_check_flag_reports_a_stale_folder(tmp_path):
    write_exercises(ROOT / "notebooks", tmp_path)
    victim = sorted(tmp_path.glob("*.ipynb"))[0]
    victim.write_text(victim.read_text().replace("NotImplementedError", "NotImplementedErr"))
    result = subprocess.run(
        [sys.executable, "-m", "bncourse", "make-exercises", "--check", "--target", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and victim.name in result.stdout


def make_exercises(*argv: str, capsys) -> tuple[int, str]:
    """``python -m bncourse make-exercises ARGV`` in this process: (status, stderr)."""
    from bncourse.__main__ import main as cli

    status = cli(["make-exercises", *map(str, argv)])
    return status, capsys.readouterr().err


def test_make_exercises_never_writes_over_its_chapters(tmp_path, capsys):
    """--target the --source folder (by another path too) or a folder inside it would strip
    the solutions from the chapters: refused, one error line, nothing written."""
    source = tmp_path / "notebooks"
    source.mkdir()
    chapter = write(small_chapter(), source / "01_what_batchnorm_does.ipynb")
    before = chapter.read_bytes()
    for target in (source, tmp_path / "notebooks" / ".." / "notebooks", source / "exercises"):
        status, err = make_exercises("--source", source, "--target", target, capsys=capsys)
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "inside it" in err
    assert chapter.read_bytes() == before and sorted(source.iterdir()) == [chapter]
    file_target = tmp_path / "exercises.txt"
    file_target.write_text("mine")
    status, err = make_exercises("--source", source, "--target", file_target, capsys=capsys)
    assert status == 2 and "is a file" in err and file_target.read_text() == "mine"


def test_make_exercises_removes_only_the_notebooks_it_wrote(tmp_path, capsys):
    """An empty --source is refused (every exercise notebook would be stale); a stale
    exercise notebook is removed, but a learner's own notebook in the target survives, and
    one with a chapter's name is not overwritten."""
    source, target = tmp_path / "notebooks", tmp_path / "exercises"
    source.mkdir()
    target.mkdir()
    own = write(small_chapter(), target / "my_work.ipynb")
    mine = own.read_bytes()
    status, err = make_exercises("--source", source, "--target", target, capsys=capsys)
    assert status == 2 and "holds no chapter notebooks" in err and own.read_bytes() == mine
    write(small_chapter(), source / "00_old.ipynb")
    assert make_exercises("--source", source, "--target", target, capsys=capsys)[0] == 0
    (source / "00_old.ipynb").rename(source / "01_what_batchnorm_does.ipynb")
    assert make_exercises("--source", source, "--target", target, capsys=capsys)[0] == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == ["01_what_batchnorm_does.ipynb", "my_work.ipynb"]  # 00_old was ours
    assert own.read_bytes() == mine
    write(small_chapter(), source / "02_numpy_forward.ipynb")
    taken = write(small_chapter(), target / "02_numpy_forward.ipynb")  # a learner's copy
    taken_before = taken.read_bytes()
    status, err = make_exercises("--source", source, "--target", target, capsys=capsys)
    assert status == 2 and "refusing to overwrite" in err and taken.read_bytes() == taken_before


# --------------------------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------------------------
def test_the_command_reports_a_table_json_junit_and_markdown(tmp_path):
    """The full chapters are graded in tests/test_notebooks.py; here the command's reports,
    on a solved and an unsolved copy of a small chapter."""
    write(small_chapter(), tmp_path / "a_solved.ipynb")
    stubbed = small_chapter(
        standardize=stub_source(STANDARDIZE, "standardize"),
        expected_std=stub_source(EXPECTED_STD, "expected-std"),
        extreme_batch=stub_source(EXTREME_BATCH, "extreme-batch"),
        predicted_sum=stub_source(PREDICTED_SUM, "predict-output-sum"),
    )
    unsolved = write(stubbed, tmp_path / "b_unsolved.ipynb")
    before = unsolved.read_bytes()
    reports = [
        "--json",
        str(tmp_path / "g.json"),
        "--junit",
        str(tmp_path / "g.xml"),
        "--markdown",
        str(tmp_path / "summary.md"),
    ]
    solved = run_grade(str(tmp_path / "a_solved.ipynb"), *reports[:4])
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert solved.stdout.splitlines()[-1] == "4/4 exercises passed"
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["passed"] and [r["status"] for r in data["results"]] == ["passed"] * 4
    suites = ET.parse(tmp_path / "g.xml").getroot()
    assert suites.get("tests") == "4" and suites.get("failures") == "0"

    both = run_grade(str(tmp_path), *reports)
    assert both.returncode == 1 and "Traceback" not in both.stdout + both.stderr
    assert both.stdout.count("not attempted yet") == 4 and " TODO " in both.stdout
    assert both.stdout.splitlines()[-1] == "4/8 exercises passed (4 not attempted)"
    data = json.loads((tmp_path / "g.json").read_text())
    assert not data["passed"] and len(data["results"]) == 8
    suites = ET.parse(tmp_path / "g.xml").getroot()
    assert suites.get("tests") == "8" and suites.get("failures") == "4"
    summary = (tmp_path / "summary.md").read_text()
    assert "| exercise | notebook | status | message |" in summary and "⏳ not attempted" in summary
    assert unsolved.read_bytes() == before, "grading must not modify the learner's notebooks"


def test_a_wrong_answer_fails_with_its_diagnosis_and_the_others_are_still_graded(tmp_path):
    wrong = STANDARDIZE.replace("x.std(axis=0)", "x.std(axis=0, ddof=1)")
    path = write(small_chapter(standardize=wrong), tmp_path / "nb.ipynb")
    before = path.read_bytes()
    results = grader.grade_notebook(path, timeout=60)
    assert statuses(results) == {
        "standardize": "failed",
        "extreme-batch": "passed",
        "expected-std": "passed",
        "predict-output-sum": "passed",
    }
    assert "unbiased standard deviation" in results[0].message
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "value, status, message",
    [
        ("0.0", "passed", "you predicted 0"),
        ("1.0", "failed", "not softmax"),
        ("None", "not attempted", "not attempted"),
        ("'0'", "failed", "should be a number"),
        # an object that would say it is 0: it stays in the sandbox, the judge gets a handle
        ("type('Zero', (), {'__float__': lambda self: 0.0})()", "failed", "should be a number"),
        # what the notebook's check accepts, the grader accepts: a fraction, a float subclass
        ("__import__('fractions').Fraction(0)", "passed", "you predicted 0"),
        ("type('F', (float,), {})(0.0)", "passed", "you predicted 0"),
    ],
    ids=["right", "softmax", "stub", "text", "object", "fraction", "float-subclass"],
)
def test_a_prediction_is_judged_on_its_value(tmp_path, value, status, message):
    """A prediction crosses from the sandbox as plain data, never as code the judge runs."""
    answer = f"{BEGIN}\npredicted_sum = {value}\n### END SOLUTION"
    path = write(small_chapter(predicted_sum=answer), tmp_path / "nb.ipynb")
    results = grader.grade_notebook(path, timeout=60)
    assert statuses(results)["predict-output-sum"] == status
    found = next(r for r in results if r.exercise == "predict-output-sum")
    assert message in found.message, found.message


def test_deleted_or_faked_check_cells_change_nothing(tmp_path):
    nb = small_chapter(standardize=STANDARDIZE.replace("x.std(axis=0)", "1.0"))
    for cell in nb.cells:  # the learner replaced the checks with fake success lines
        if cell.cell_type == "code" and cell.source.startswith("check("):
            cell.source = 'print("✔ standardize passed: trust me")'
    results = grader.grade_notebook(write(nb, tmp_path / "nb.ipynb"), timeout=60)
    assert statuses(results) == {
        "standardize": "failed",
        "extreme-batch": "passed",
        "expected-std": "passed",
        "predict-output-sum": "passed",
    }


# Long enough for any honest cell of the small chapter (its imports, NumPy and the checkers,
# take 0.2 s on a quiet 2-core machine; with PyTorch too they took about 3 s on a loaded one,
# and 4 s failed there), short enough to keep the test quick.
LOOP_TIMEOUT = 6


def test_an_infinite_loop_is_graded_in_bounded_time(tmp_path):
    looping = STANDARDIZE.replace(f"{BEGIN}\n", f"{BEGIN}\n    while True:\n        pass\n")
    stuck_cell = nbformat.v4.new_code_cell("while True:\n    pass  # a demo cell that never ends")
    path = write(small_chapter(standardize=looping, extra=[stuck_cell]), tmp_path / "nb.ipynb")
    start = time.perf_counter()
    results = grader.grade_notebook(path, timeout=LOOP_TIMEOUT)
    elapsed = time.perf_counter() - start
    assert statuses(results) == {
        "standardize": "timed out",
        "extreme-batch": "passed",
        "expected-std": "passed",
        "predict-output-sum": "passed",
    }
    assert f"did not finish within {LOOP_TIMEOUT} s" in results[0].message
    assert elapsed < 10 * LOOP_TIMEOUT, elapsed  # two cells time out, the kernel restarts once


def test_cells_tagged_grader_skip_are_not_run(tmp_path):
    """A chapter's long demonstrations are tagged so that grading does not wait for them
    (bncourse/grading/kernel.py); this one would kill the kernel if it ran. A solution in a
    tagged cell (the tag copied with a cell) is not run either, and the message says why."""
    from bncourse.grading.kernel import SKIP_TAG, SKIPPED

    demonstration = nbformat.v4.new_code_cell("import os\nos._exit(3)  # a long training run")
    demonstration.metadata["tags"] = [SKIP_TAG]
    nb = small_chapter(extra=[demonstration])
    solution = next(c for c in nb.cells if c.source.startswith("def standardize("))
    solution.metadata["tags"] = [SKIP_TAG]
    run = grader.run_notebook(write(nb, tmp_path / "nb.ipynb"), timeout=60)
    found = {r.exercise: r for r in run.results}
    assert {k: r.status for k, r in found.items() if k != "standardize"} == dict.fromkeys(
        set(found) - {"standardize"}, "passed"
    )
    assert found["standardize"].status == "error"
    assert "defined only in a cell tagged grader-skip" in found["standardize"].message
    assert run.notes == [], run.notes  # no kernel died
    executed = next(c for c in run.executed.cells if SKIP_TAG in c.metadata.get("tags", []))
    assert executed.outputs[0]["text"] == SKIPPED


def test_a_dead_kernel_is_restarted_without_the_cell_that_killed_it(tmp_path):
    killer = nbformat.v4.new_code_cell("import os\nos._exit(1)")
    path = write(small_chapter(extra=[killer]), tmp_path / "nb.ipynb")
    results = grader.grade_notebook(path, timeout=30)
    assert statuses(results) == {
        "standardize": "passed",
        "extreme-batch": "passed",
        "expected-std": "passed",
        "predict-output-sum": "passed",
    }


def test_a_function_that_does_not_exist_is_an_error_that_says_so(tmp_path):
    renamed = STANDARDIZE.replace("def standardize(", "def standardise(")
    results = grader.grade_notebook(
        write(small_chapter(standardize=renamed), tmp_path / "nb.ipynb"), timeout=60
    )
    assert statuses(results)["standardize"] == "error"
    assert "standardize is not defined" in results[0].message


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", "hello", "is not a notebook: the grader takes .ipynb files"),
        ("missing.ipynb", None, "does not exist"),
    ],
)
def test_refuses_what_is_not_a_notebook(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = run_grade(str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_invalid_notebook_is_reported_and_the_others_are_graded(tmp_path):
    (tmp_path / "a_broken.ipynb").write_text("{not json")
    write(small_chapter(), tmp_path / "b_solved.ipynb")
    result = run_grade(str(tmp_path), "--json", str(tmp_path / "g.json"))
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    rows = json.loads((tmp_path / "g.json").read_text())["results"]
    assert rows[0]["status"] == "error" and "is not a valid Jupyter notebook" in rows[0]["message"]
    assert [r["status"] for r in rows[1:]] == ["passed"] * 4


def test_a_notebook_without_exercises_does_not_pass(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    results = grader.grade_notebook(write(nb, tmp_path / "empty.ipynb"))
    assert [r.status for r in results] == ["error"] and "no exercises found" in results[0].message


# --------------------------------------------------------------------------------------------
# Reports for teachers and CI, on made-up results (no notebook runs)
# --------------------------------------------------------------------------------------------
def made_up_results() -> list[grader.Result]:
    unbiased = "x is wrong: largest error 0.1. Likely cause: unbiased variance (m - 1). More."
    cause = "unbiased variance (m - 1)"
    return [
        grader.Result("a/02.ipynb", "numpy-batch-stats", "passed", "ok", 1.0, "ada"),
        grader.Result("a/02.ipynb", "numpy-forward", "failed", unbiased, 1.0, "ada", 0, cause),
        grader.Result("b/02.ipynb", "numpy-batch-stats", "failed", unbiased, 1.0, "ben", 0, cause),
        grader.Result("b/02.ipynb", "numpy-forward", "failed", unbiased, 1.0, "ben", 0, cause),
        grader.Result("c/02.ipynb", "numpy-forward", "error", "bad\x00\x1b[1m\x07", 1.0, "cy"),
    ]


def test_gradebook_and_class_report(tmp_path):
    from bncourse.grading import classroom

    results = made_up_results()
    classroom.write_gradebook(results, tmp_path / "g.csv")
    assert (tmp_path / "g.csv").read_text().splitlines() == [
        "learner,numpy-batch-stats,numpy-forward,total,max",
        "ada,1,0,1,2",
        "ben,0,0,0,2",
        "cy,0,0,0,2",
    ]
    classroom.write_class_report(results, tmp_path / "c.md")
    report = (tmp_path / "c.md").read_text()
    forward = report.index("(`numpy-forward`)")
    assert forward < report.index("(`numpy-batch-stats`)"), "the most misconceptions first"
    assert "- **2** x unbiased variance (m - 1) (ada, ben)" in report
    assert "02_numpy_forward.html#ex-numpy-forward" in report


def test_reports_stay_valid_whatever_a_message_holds(tmp_path):
    results = made_up_results()
    grader.write_junit(results, tmp_path / "r.xml")
    grader.write_json(results, tmp_path / "r.json")
    text = ET.tostring(ET.parse(tmp_path / "r.xml").getroot(), encoding="unicode")
    assert "bad\\x00\\x1b[1m\\x07" in text
    assert json.loads((tmp_path / "r.json").read_text())["results"][4]["message"].startswith("bad")
    assert "\x1b" not in grader.format_table(results)


def test_the_classroom_workflow_is_in_sync_and_its_steps_can_fail(tmp_path):
    from bncourse.grading import classroom

    workflow = ROOT / ".github" / "workflows" / "classroom.yml"
    assert workflow.read_text() == classroom.classroom_workflow(), (
        "run: python -m bncourse.grading.classroom --workflow > .github/workflows/classroom.yml"
    )
    grader.write_json(made_up_results(), tmp_path / "r.json")
    assert classroom.main(["--passed", "numpy-batch-stats", str(tmp_path / "r.json")]) == 0
    assert classroom.main(["--passed", "numpy-forward", str(tmp_path / "r.json")]) == 1
    assert classroom.main(["--passed", "group-norm", str(tmp_path / "r.json")]) == 1


def test_the_classroom_workflow_runs_the_course_grader_not_the_learners_copy():
    """Classroom's points come from the course's grader, checked out from the repository of
    _config.yml, and Python runs isolated (``-I``) so that the learner's bncourse/ is not on
    its path; the workflow says that its points are a self-check all the same."""
    from bncourse.grading import classroom

    workflow = classroom.classroom_workflow()
    config = (ROOT / "_config.yml").read_text()
    assert f"url: https://github.com/{classroom.COURSE_REPOSITORY}\n" in config
    assert f"repository: {classroom.COURSE_REPOSITORY}\n" in workflow
    assert f"path: {classroom.GRADER_COPY}\n" in workflow
    assert "pip install --no-deps -e .\n" not in workflow and "-r requirements.txt" not in workflow
    commands = [line.strip() for line in workflow.splitlines() if "-m bncourse" in line]
    commands = [line for line in commands if not line.startswith("#")]
    assert commands and all("python -I -m bncourse" in line for line in commands), commands
    assert "self-check" in workflow


def test_names_that_hide_or_reorder_text_are_shown_as_they_are(tmp_path):
    """A learner named with a right-to-left override or zero-width characters would show in
    the reports as someone else (``ada\\u202e...``) or as a name that looks like a
    classmate's: every report writes those characters as escapes."""
    from bncourse.grading import classroom

    tricky = ["ada\u202egnp.exe", "b\u200ben", "\u2066cy\u2069", "=d\u200de\ufeff"]
    results = [
        grader.Result(f"{n}/02.ipynb", "numpy-forward", "failed", f"{n} wrong", 1.0, n, 0, "c")
        for n in tricky
    ]
    classroom.write_gradebook(results, tmp_path / "g.csv")
    classroom.write_class_report(results, tmp_path / "c.md")
    grader.write_markdown(results, tmp_path / "s.md")
    grader.write_junit(results, tmp_path / "r.xml")
    invisible = "\u202e\u200b\u2066\u2069\u200d\ufeff"
    for name in ("g.csv", "c.md", "s.md", "r.xml"):
        text = (tmp_path / name).read_text()
        assert not set(invisible) & set(text), name
    assert "ada\\u202egnp" in (tmp_path / "g.csv").read_text()
    assert "'=d\\u200de\\ufeff" in (tmp_path / "g.csv").read_text()
    assert not set(invisible) & set(grader.format_table(results))
