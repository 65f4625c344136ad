"""Every chapter, executed: it prints what is committed, its solutions pass, its stubs do not.

Each chapter in ``notebooks/`` runs once, under the grader, in a fresh kernel from its folder
(as a learner runs it). That one run is both checks: every output must equal the committed
one (:func:`bncourse.notebooks.output_differences`, nbval's strict rules), and every exercise
must pass. Each generated notebook in ``exercises/`` runs once too: every exercise must be
"not attempted yet" (the stub's ``NotImplementedError``), with no traceback, and the file
must be left as it was. So each chapter executes twice per test run; the book build shows
the committed outputs instead of executing them a third time (``_config.yml``).

The same tests run again under another CPU configuration in CI (``.ci/run``), so that no
committed number depends on the machine's instruction set or thread count. That run also sets
``BNCOURSE_PERTURB_WEIGHTS`` (say ``1e-12``): every model :func:`bncourse.training.make_model`
builds then starts from weights multiplied by ``1 + 1e-12 z``, a stand-in for the last-bit
differences of any other machine, which a chaotic training run would amplify into another
printed number (chapter 7, "Why float64").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat
import pytest

from bncourse import grader
from bncourse.checks import EXERCISES
from bncourse.notebooks import output_differences

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT = 300  # seconds per cell; the slowest cell of any chapter takes about 30


PERTURB = os.environ.get("BNCOURSE_PERTURB_WEIGHTS")
PERTURBING_CELL = f"""\
# tests/test_notebooks.py, BNCOURSE_PERTURB_WEIGHTS={PERTURB}
import bncourse.training as _training
_unperturbed = _training.init_weights
def _perturbed(model, init_scale=1.0, seed=0):
    return _training.perturb(_unperturbed(model, init_scale, seed), {PERTURB}, seed=seed + 1)
_training.init_weights = _perturbed"""


def expected_exercises(path: Path) -> set[str]:
    return {ex.id for ex in EXERCISES.values() if ex.chapter == path.stem}


def run_chapter(path: Path, work: Path) -> tuple[nbformat.NotebookNode, grader.Run]:
    """The committed notebook, and its run (with :data:`PERTURBING_CELL` first if asked)."""
    committed = nbformat.read(path, as_version=4)
    if not PERTURB:
        return committed, grader.run_notebook(path, timeout=TIMEOUT)
    perturbed = nbformat.read(path, as_version=4)
    perturbed.cells.insert(0, nbformat.v4.new_code_cell(PERTURBING_CELL))
    copy = work / path.name
    nbformat.write(perturbed, copy)
    run = grader.run_notebook(copy, timeout=TIMEOUT)
    assert not run.executed.cells[0].outputs, run.executed.cells[0].outputs
    run.executed.cells.pop(0)
    return committed, run


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_prints_what_is_committed_and_its_solutions_pass(path, tmp_path):
    committed, run = run_chapter(path, tmp_path)
    problems = output_differences(committed, run.executed)
    problems += [f"{r.exercise}: {r.status}: {r.message}" for r in run.results if not r.passed]
    assert not problems, "\n\n".join(problems)
    assert {r.exercise for r in run.results} == expected_exercises(path)


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
# The comparison itself, on known-different runs
# --------------------------------------------------------------------------------------------
def notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, outputs=outputs) for source, outputs in cells]
    return nb


def stream(text: str, name: str = "stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def figure(text: str = "<Figure size 640x480 with 1 Axes>", png: str = "iVBOR"):
    return nbformat.v4.new_output("display_data", data={"text/plain": text, "image/png": png})


def test_the_comparison_finds_a_changed_number_and_says_where():
    committed = notebook(("x = 1", []), ("print(acc)", [stream("accuracy 0.93\n")]))
    fresh = notebook(("x = 1", []), ("print(acc)", [stream("accuracy 0.94\n")]))
    [difference] = output_differences(committed, fresh)
    assert difference.startswith("cell 2 (print(acc))")
    assert "-[stdout] accuracy 0.93" in difference and "+[stdout] accuracy 0.94" in difference


@pytest.mark.parametrize(
    "fresh_outputs, why",
    [
        ([], "a cell that stopped printing"),
        ([stream("accuracy 0.93\n"), stream("extra\n")], "an extra line"),
        ([stream("accuracy 0.93\n", name="stderr")], "the same text on stderr"),
        (
            [nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])],
            "an error",
        ),
        ([figure()], "a figure instead of text"),
    ],
)
def test_the_comparison_fails_on_any_other_output(fresh_outputs, why):
    committed = notebook(("print(acc)", [stream("accuracy 0.93\n")]))
    assert output_differences(committed, notebook(("print(acc)", fresh_outputs))), why


def test_the_comparison_ignores_only_what_varies_by_nature():
    committed = notebook(
        ("print(a); print(b)", [stream("a 1\nb 2\n")]),
        ("print(model)", [stream("<object at 0x7f3a2b1c9d00>\n")]),
        ("plt.show()", [figure(png="AAAA")]),
        ("# NBVAL_IGNORE_OUTPUT\nprint(seconds)", [stream("0.13 s\n")]),
    )
    fresh = notebook(
        ("print(a); print(b)", [stream("a 1\n"), stream("b 2\n")]),  # split differently
        ("print(model)", [stream("<object at 0x55d0e1f2a3b4>\n")]),
        ("plt.show()", [figure(png="BBBB")]),  # other bytes, still a figure
        ("# NBVAL_IGNORE_OUTPUT\nprint(seconds)", [stream("0.21 s\n")]),
    )
    assert output_differences(committed, fresh) == []
    fresh.cells[2].outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "<Figure size 640x480 with 1 Axes>"}
        )
    ]
    assert output_differences(committed, fresh), "a figure that disappeared is a difference"
