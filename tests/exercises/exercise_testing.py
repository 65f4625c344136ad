"""What every chapter's exercise tests share (tests/exercises/test_chNN.py).

Each chapter's test module writes a right answer for each of its exercises, and wrong ones
the way a learner would write them (never taken from ``bncourse.exercises``, so that a
checker that stops recognising a mistake, or describes it wrongly, fails its test). The
right answers are written independently of bncourse's reference implementations, which the
checkers compare against: with ``torch.nn.functional``, or directly from the formulas.

:func:`standard_tests` gives each module the same three tests over its right answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bncourse.checks import EXERCISES, NotAttempted, check


def axes_of(x: Any) -> tuple[int, ...]:
    """BatchNorm's reduction axes, as a learner writes them: all but axis 1."""
    return (0,) + tuple(range(2, x.ndim))


def shape_of(x: Any) -> tuple[int, ...]:
    """The view of a per-channel vector, as a learner writes it: ``(1, -1, 1, ...)``."""
    return (1, -1) + (1,) * (x.ndim - 2)


def standard_tests(
    chapter: str, right: dict[str, Callable[..., Any]]
) -> tuple[Callable[..., None], ...]:
    """Three tests for a chapter's test module, given its right answer to each exercise (a
    function, or for a prediction exercise the right value):
    every exercise of ``chapter`` has one; each passes its check with one message that fits
    the book's code column (79 columns, continuation lines indented); a stub that
    still raises ``NotImplementedError`` is "not attempted yet"."""

    def test_every_exercise_of_the_chapter_has_a_right_answer():
        assert set(right) == {ex.id for ex in EXERCISES.values() if ex.chapter == chapter}

    @pytest.mark.parametrize("exercise_id", sorted(right))
    def test_right_answers_pass_with_one_line(exercise_id, capsys):
        check(exercise_id, right[exercise_id])
        out = capsys.readouterr().out
        assert out.startswith(f"✔ {exercise_id} passed: ") and out.endswith("\n")
        first, *rest = out.splitlines()
        assert all(len(line) <= 79 for line in out.splitlines())
        assert all(line.startswith("  ") and line.strip() for line in rest)

    @pytest.mark.parametrize("exercise_id", sorted(right))
    def test_a_stub_is_not_attempted(exercise_id):
        def stub(*args, **kwargs):
            raise NotImplementedError("write your solution here")

        if EXERCISES[exercise_id].prediction:
            stub = None  # a prediction's stub: the variable set to None
        with pytest.raises(NotAttempted, match=f"^{exercise_id}: not attempted yet"):
            check(exercise_id, stub)

    return (
        test_every_exercise_of_the_chapter_has_a_right_answer,
        test_right_answers_pass_with_one_line,
        test_a_stub_is_not_attempted,
    )
