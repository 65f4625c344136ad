"""Issue 15 for teachers: a made-up class graded in one command, gradebook and class report.

Five learners hand in chapter 2 (one also chapter 4, one chapter 3 instead): the solutions,
the stubs, and four kinds of wrong answers (unbiased variance; statistics over all values;
gamma and beta not reshaped, with a Keras-style running update; a backward whose dx alone is
wrong, for partial credit). The notebooks are made by :mod:`grading_notebooks`; ``--jobs 2``
grades two at a time, each in its own sandbox.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import grading_notebooks as made
import pytest

from bncourse.grading import classroom, sandbox

ROOT = Path(__file__).resolve().parents[1]
NEEDS_SANDBOX = pytest.mark.skipif(
    sandbox.isolation() is not None, reason=f"no sandbox here: {sandbox.isolation()}"
)
CHAPTER2, CHAPTER3, CHAPTER4 = "02_numpy_forward", "03_backward_by_hand", "04_running_stats"
WRONG_DX_ONLY = """\
def batchnorm_backward(dout, x, gamma, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    dbeta, dgamma = dout.sum(axes), (dout * xhat).sum(axes)
    return gamma.reshape(shape) * dout, dgamma, dbeta  # dx without its mean and variance paths"""

UNBIASED_STATS = """\
def batch_stats(x):
    axes = (0,) + tuple(range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes, ddof=1)"""
UNBIASED_FORWARD = """\
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, ddof=1, keepdims=True) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape)"""
ALL_VALUES_STATS = "def batch_stats(x):\n    return x.mean(), x.var()"
ALL_VALUES_FORWARD = """\
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - x.mean()) / np.sqrt(x.var() + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape)"""
NOT_RESHAPED_FORWARD = """\
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, keepdims=True) + eps)
    return gamma * xhat + beta"""
KERAS_UPDATE = """\
def update_running_stats(running_mean, running_var, x, momentum, num_batches_tracked):
    dims = [0] + list(range(2, x.ndim))
    return (momentum * running_mean + (1 - momentum) * x.mean(dim=dims),
            momentum * running_var + (1 - momentum) * x.var(dim=dims, correction=0))"""


def make_class(folder: Path) -> None:
    """The made-up class: one subfolder per learner (the convention of ``grade``)."""
    learners = {
        "ada": {},
        "cy": {"numpy-batch-stats": UNBIASED_STATS, "numpy-forward": UNBIASED_FORWARD},
        "dee": {"numpy-batch-stats": ALL_VALUES_STATS, "numpy-forward": ALL_VALUES_FORWARD},
        "eve": {"numpy-forward": NOT_RESHAPED_FORWARD},
    }
    for name, answers in learners.items():
        made.write(made.chapter_notebook(CHAPTER2, answers), folder / name / f"{CHAPTER2}.ipynb")
    made.write(
        made.chapter_notebook(CHAPTER2, default="stub"), folder / "ben" / f"{CHAPTER2}.ipynb"
    )
    made.write(
        made.chapter_notebook(CHAPTER4, {"running-stats-update": KERAS_UPDATE}),
        folder / "eve" / f"{CHAPTER4}.ipynb",
    )
    made.write(
        made.chapter_notebook(CHAPTER3, {"numpy-backward": WRONG_DX_ONLY}),
        folder / "fay" / f"{CHAPTER3}.ipynb",
    )


@NEEDS_SANDBOX
@pytest.mark.slow
def test_a_class_is_graded_in_one_command(tmp_path):
    make_class(tmp_path / "class")
    out = {name: tmp_path / name for name in ("grades.csv", "class.md", "grades.json")}
    run = subprocess.run(
        [
            sys.executable, "-m", "bncourse", "grade", str(tmp_path / "class"),
            "--jobs", "2", "--timeout", "30",
            "--gradebook", str(out["grades.csv"]),
            "--class-report", str(out["class.md"]),
            "--json", str(out["grades.json"]),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stderr
    rows = list(csv.DictReader(out["grades.csv"].open()))
    points = {row["learner"]: (row["total"], row["max"]) for row in rows}
    # chapters 2, 3 and 4 hold 3 + 3 + 5 = 11 exercises, their predictions included (right
    # in every notebook but ben's stubs)
    assert points == {
        "ada": ("3", "11"),
        "ben": ("0", "11"),
        "cy": ("1", "11"),
        "dee": ("1", "11"),
        "eve": ("6", "11"),
        "fay": ("2.67", "11"),
    }
    assert list(rows[0])[1:3] == ["numpy-batch-stats", "numpy-forward"]
    assert "numpy-backward" in rows[0]
    report = out["class.md"].read_text()
    assert "6 learners: ada, ben, cy, dee, eve, fay." in report
    forward = report.split("(`numpy-forward`)")[1].split("###")[0]
    assert "/notebooks/02_numpy_forward.html#ex-numpy-forward" in forward
    for cause, who in [
        ("unbiased variance", "cy"),
        ("statistics over all values instead of per channel", "dee"),
        ("gamma and beta are not reshaped", "eve"),
    ]:
        line = next(line for line in forward.splitlines() if cause in line)
        assert line.startswith("- **1** x ") and line.endswith(f"({who})"), line
    data = json.loads(out["grades.json"].read_text())
    assert data["tamper_proof"] is True
    results = data["results"]
    causes = {(r["learner"], r["exercise"]): r["misconception"] for r in results}
    assert "unbiased" in causes[("cy", "numpy-batch-stats")]
    keras = next(r for r in results if r["exercise"] == "running-stats-update")
    assert "Keras/TensorFlow and CS231n convention" in keras["message"]
    assert keras["learner"] == "eve"


@NEEDS_SANDBOX
@pytest.mark.slow
def test_one_notebook_per_learner_and_chapter_counts(tmp_path):
    """A learner who hands in several notebooks for one chapter does not get the best of
    them: the notebook named as in exercises/ is graded, another copy is an error row that
    says it was not graded; with several copies and none so named, none is graded."""
    from bncourse import grader

    folder = tmp_path / "class"
    stub = made.chapter_notebook(CHAPTER2, default="stub")
    made.write(stub, folder / "ada" / f"{CHAPTER2}.ipynb")
    made.write(made.chapter_notebook(CHAPTER2), folder / "ada" / f"{CHAPTER2} (1).ipynb")
    made.write(made.chapter_notebook(CHAPTER2), folder / "ben" / "02_mine.ipynb")
    made.write(made.chapter_notebook(CHAPTER2), folder / "ben" / "02_copy.ipynb")
    made.write(made.chapter_notebook(CHAPTER2), folder / "cy" / "02_mine.ipynb")  # the only one
    results = grader.grade([str(folder)], timeout=30, jobs=2)
    by_learner: dict[str, list] = {}
    for result in results:
        by_learner.setdefault(result.learner, []).append(result)
    assert sum(r.points for r in by_learner["ada"]) == 0
    (copy,) = [r for r in by_learner["ada"] if r.exercise == "(notebook)"]
    assert copy.status == "error" and "(1).ipynb" in copy.notebook
    assert "not graded" in copy.message and f"{CHAPTER2}.ipynb counts" in copy.message
    assert [r.exercise for r in by_learner["ben"]] == ["(notebook)", "(notebook)"]
    assert all("none named" in r.message for r in by_learner["ben"])
    assert sum(r.passed for r in by_learner["cy"]) == 3  # chapter 2's three exercises
    classroom.write_gradebook(results, tmp_path / "grades.csv")
    rows = {
        row["learner"]: row["total"] for row in csv.DictReader((tmp_path / "grades.csv").open())
    }
    assert rows == {"ada": "0", "ben": "0", "cy": "3"}
