"""Every chapter, executed: nbval checks what it prints; its stubs are not attempted.

Each chapter in ``notebooks/`` executes twice per test run:

1. under nbval (``pytest --nbval notebooks/``, part of the suite: see conftest.py), which fails
   any cell that prints something other than its committed output. Every chapter's check
   cells print "✔ <id> passed" in the committed outputs (tested below), so that same
   comparison shows that every solution passes its checker;
2. as the generated learner notebook in ``exercises/``, under the grader: every exercise must
   be "not attempted yet" (the stub's ``NotImplementedError``), with no traceback, and the
   file must be left as it was. The grader does not run the cells tagged ``grader-skip``
   (the long training runs, benchmarks and compilations, which no exercise needs and which
   nbval has just run in the chapter; tests/test_project.py checks that no other cell reads
   what they bind), so this second run takes seconds per chapter.

The book build shows the committed outputs instead of executing them a third time
(``_config.yml``). The rest of this file checks nbval itself as the suite configures it, on
small notebooks with known outputs: a planted wrong number fails, what the sanitize file
masks and the ``nbval-ignore-output`` tag do not, and CI's perturbed initial weights
(``BNCOURSE_PERTURB_WEIGHTS``) reach the kernels.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import pytest

from bncourse import grader
from bncourse.checks import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT = 300  # seconds per cell; the slowest cell of any chapter takes about 30


def expected_exercises(path: Path) -> set[str]:
    return {ex.id for ex in EXERCISES.values() if ex.chapter == path.stem}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_solution_is_committed_passing_its_check(path):
    """What lets nbval's comparison stand for "every solution passes": each of the chapter's
    exercises has a ``check(...)`` cell whose committed output says it passed."""
    passed = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or not cell.source.startswith("check("):
            continue
        exercise_id = cell.source.split('"')[1]
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        if f"✔ {exercise_id} passed" in text:
            passed.add(exercise_id)
    assert passed == expected_exercises(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [ROOT / "exercises" / p.name for p in CHAPTERS], ids=lambda p: p.stem
)
def test_generated_exercises_are_not_attempted_yet(path):
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    results = grader.grade_notebook(path, timeout=TIMEOUT)
    assert {r.exercise for r in results} == expected_exercises(path)
    for result in results:
        assert result.status == "not attempted", (result.exercise, result.status, result.message)
        assert "not attempted yet" in result.message and "Traceback" not in result.message
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, (
        "grading must not modify the notebook"
    )


# --------------------------------------------------------------------------------------------
# nbval as the suite runs it, on known outputs
# --------------------------------------------------------------------------------------------
def stream(text: str):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


# How far the initial weights moved (the median of |perturbed / unperturbed - 1|, to the power of
# ten): 1e-12 where the startup file perturbed them, "unperturbed" where it did not run.
MOVED = """\
import math, torch, bncourse.training as training
if hasattr(training.init_weights, "__wrapped__"):
    model = training.make_model("mlp", "batch", seed=0)
    again = training.init_weights.__wrapped__(training.make_model("mlp", "batch", seed=0))
    a, b = (torch.cat([p.flatten() for p in m.parameters()]) for m in (model, again))
    moved = (a[b != 0] / b[b != 0] - 1).abs().median().item()
    print(f"{10 ** round(math.log10(moved)):.0e}")
else:
    print("unperturbed")"""


# (source, committed outputs, tags): what each cell of the probe notebook checks
PROBE = {
    "a number printed as committed": ("print(round(0.1 + 0.2, 2))", [stream("0.3\n")], []),
    "a planted wrong number": ("print(round(0.1 + 0.2, 2))", [stream("0.4\n")], []),
    "a missing output": ("print('accuracy 0.93')", [], []),
    "the same text on stderr": (
        "import sys; print('0.3', file=sys.stderr)",
        [stream("0.3\n")],
        [],
    ),
    "a memory address": ("print(object())", [stream("<object object at 0x7f3a2b1c9d00>\n")], []),
    "a tagged timing": (
        "import time; print(time.perf_counter())",
        [stream("1.5\n")],
        ["nbval-ignore-output"],
    ),
    "the initial weights, perturbed": (MOVED, [stream("1e-12\n")], []),
}
DIFFERS = {"a planted wrong number", "a missing output", "the same text on stderr"}


def probe_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    for count, (source, outputs, tags) in enumerate(PROBE.values(), start=1):
        cell = nbformat.v4.new_code_cell(source, outputs=outputs, execution_count=count)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def nbval_failures(notebook: Path, **env: str) -> set[str]:
    """Run nbval with the suite's configuration (conftest.py as a plugin, the options of
    pyproject.toml's ``addopts``) on ``notebook``; the names of the :data:`PROBE` cells that
    failed."""
    report = notebook.with_suffix(".xml")
    environment = {k: v for k, v in os.environ.items() if k != "BNCOURSE_PERTURB_WEIGHTS"}
    environment.update(env, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider"]
        + ["-o", "addopts=", "--nbval", "--nbval-current-env", f"--junitxml={report}"]
        + [notebook.name],
        cwd=notebook.parent,
        env=environment,
        capture_output=True,
        timeout=300,
    )
    names = list(PROBE)
    failed = set()
    for case in ElementTree.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(names[int(case.get("name").split()[-1])])  # "Cell 3"
    return failed


def test_a_run_removes_the_folders_it_made(tmp_path):
    """conftest.py gives each run a TorchInductor cache and, with BNCOURSE_PERTURB_WEIGHTS, an
    IPython directory, in the temporary folder: both are gone when the run ends."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    inherited = ("TORCHINDUCTOR_CACHE_DIR", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")
    environment = {k: v for k, v in os.environ.items() if k not in inherited}
    environment.update(
        TMPDIR=str(temporary), BNCOURSE_PERTURB_WEIGHTS="1e-12", PYTHONPATH=str(ROOT)
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider"]
        + ["-o", "addopts=", "-q", "test_nothing.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in temporary.iterdir()) == []


@pytest.mark.parametrize("perturbed", [True, False], ids=["perturbed", "as-is"])
def test_nbval_fails_what_differs_and_nothing_else(tmp_path, perturbed):
    notebook = tmp_path / "probe.ipynb"
    nbformat.write(probe_notebook(), notebook)
    if perturbed:
        assert nbval_failures(notebook, BNCOURSE_PERTURB_WEIGHTS="1e-12") == DIFFERS
    else:
        assert nbval_failures(notebook) == DIFFERS | {"the initial weights, perturbed"}
