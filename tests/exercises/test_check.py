"""The checking interface: check(id, candidate), its exceptions, one test module per chapter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bncourse.checks import EXERCISES, CheckFailed, NotAttempted, check

HERE = Path(__file__).resolve().parent


def test_every_chapter_with_exercises_has_a_test_module():
    chapters = {ex.chapter for ex in EXERCISES.values()}
    modules = {path.stem for path in HERE.glob("test_ch[0-9][0-9].py")}
    assert modules == {f"test_ch{chapter[:2]}" for chapter in chapters}


def test_the_checkers_import_without_pytorch():
    """Chapters 1 to 4 need only NumPy: a learner's ``from bncourse.checks import check`` (and
    the grader's command, and its runner in the sandbox) does not pay for importing PyTorch.
    A checker that needs it imports it when it runs."""
    probe = "import sys, bncourse.checks; print(sorted(m for m in sys.modules if m == 'torch'))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", "bncourse.checks imported torch"


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)
    assert issubclass(NotAttempted, CheckFailed)


def test_a_crash_is_reported_as_a_failure():
    def crashes(x, gamma, beta, eps=1e-5):
        return x.mean(axis=7)

    with pytest.raises(CheckFailed, match="numpy-forward: your function raised AxisError"):
        check("numpy-forward", crashes)


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(KeyError, match="known ids: .*numpy-forward"):
        check("numpy-forwards", lambda x, gamma, beta, eps=1e-5: x)


@pytest.mark.parametrize("answer", ["1.0", b"1.0", bytearray(b"1.0")])
def test_a_number_given_as_text_is_refused(answer):
    """``float("1.0")`` is 1.0: without a type check a string would pass a numeric answer."""
    from bncourse.exercises.base import compare_number

    with pytest.raises(CheckFailed, match="should be a number, got a"):
        compare_number("x", answer, 1.0)
    assert compare_number("x", 1, 1.0) == 1.0  # an int is a number
