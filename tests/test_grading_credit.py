"""Partial credit: an exercise with independent parts (chapter 3's dx, dgamma, dbeta) earns
the fraction of them that is right, from the judge's verdict to the gradebook."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest

from bncourse import grader
from bncourse.grading import judge
from bncourse.grading.classroom import write_gradebook

ROOT = Path(__file__).resolve().parents[1]

WRONG_DX_ONLY = textwrap.dedent(
    """\
    import numpy as np

    def batchnorm_backward(dout, x, gamma, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
        dbeta, dgamma = dout.sum(axes), (dout * xhat).sum(axes)
        return gamma.reshape(shape) * dout, dgamma, dbeta  # dx without its mean and variance paths
    """
)


def learner_function(source: str, name: str):
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace[name]


def test_the_judge_gives_a_part_right_its_share_of_the_points():
    """The verdict the judge makes (here on a local function; in a run, on the sandbox's
    stand-in): failed, 2 of 3 parts right, and the misconception as a field of its own."""
    verdict = judge._decide("numpy-backward", learner_function(WRONG_DX_ONLY, "batchnorm_backward"))
    assert verdict.status == "failed", verdict
    assert verdict.credit == pytest.approx(2 / 3)
    assert "dx from" in verdict.message and "right: dgamma, dbeta" in verdict.message
    assert verdict.misconception == "a wrong answer the checker does not name"
    unbiased = learner_function(
        "import numpy as np\n"
        "def batch_stats(x):\n"
        "    axes = (0,) + tuple(range(2, x.ndim))\n"
        "    return x.mean(axis=axes), x.var(axis=axes, ddof=1)",
        "batch_stats",
    )
    verdict = judge._decide("numpy-batch-stats", unbiased)
    assert "unbiased" in verdict.misconception and verdict.misconception in verdict.message


def test_the_gradebook_counts_partial_credit_and_only_for_failed_answers(tmp_path):
    rows = [
        grader.Result(
            "a/03.ipynb", "numpy-backward", "failed", "dx ...", credit=2 / 3, learner="a"
        ),
        grader.Result("a/03.ipynb", "numerical-gradient", "passed", "", learner="a"),
        grader.Result("b/03.ipynb", "numpy-backward", "timed out", "", credit=0.5, learner="b"),
        grader.Result("b/03.ipynb", "numerical-gradient", "failed", "", learner="b"),
    ]
    write_gradebook(rows, tmp_path / "grades.csv")
    table = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert [(r["learner"], r["numpy-backward"], r["total"], r["max"]) for r in table] == [
        ("a", "0.67", "1.67", "2"),
        ("b", "0", "0", "2"),
    ]


def test_the_summary_and_the_json_add_up_the_points(tmp_path):
    rows = [
        grader.Result("03.ipynb", "numpy-backward", "failed", "dx ...", credit=2 / 3),
        grader.Result("03.ipynb", "numerical-gradient", "passed", ""),
    ]
    assert grader.summary_line(rows) == "1/2 exercises passed (1 failed); 1.67 of 2 points"
    grader.write_json(rows, tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["points"] == pytest.approx(5 / 3, abs=1e-4)
    assert [r["points"] for r in data["results"]] == [pytest.approx(2 / 3, abs=1e-4), 1.0]
    assert grader.summary_line(rows[1:]) == "1/1 exercises passed"  # no credit, no points
