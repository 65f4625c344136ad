"""Checking an exercise: ``check(id, candidate)``, the one interface of every checker.

Every exercise of the course has a stable id (``python -m bncourse exercises`` lists them).
A notebook's check cell calls::

    from bncourse.checks import check
    check("numpy-forward", batchnorm_forward)

which prints ``✔ numpy-forward passed: ...`` (wrapped at 79 columns, the width of the book's
code column), or raises :class:`CheckFailed` (an ``AssertionError``) with a message for the
learner: which output is wrong, the largest error and where, and the likely misconception
when the wrong answer matches a known one (unbiased variance, wrong reduction axes, eps
outside the square root, ...). An exercise whose stub still raises ``NotImplementedError``
fails with :class:`NotAttempted` ("not attempted yet").

The checkers, their inputs and the mistakes they recognise live with their chapter, in
:mod:`bncourse.exercises` (``ch01`` ... ``ch09``); the grader
(:mod:`bncourse.grading`) judges with the same :func:`judge` as :func:`check`, outside the
sandbox the learner's code runs in (:mod:`bncourse.grading.judge`). A failing candidate's
message ends with the chapter's extra feedback, where it has some (the smallest batch it
fails on, the convention its running statistics follow).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from .exercises import EXERCISES
from .exercises.base import CheckFailed, Exercise, NotAttempted, more_feedback

__all__ = [
    "CheckFailed",
    "NotAttempted",
    "Exercise",
    "EXERCISES",
    "check",
    "judge",
]


def check(exercise_id: str, candidate: Callable[..., Any]) -> None:
    """Check ``candidate`` against exercise ``exercise_id``; print one message when it passes
    (``✔ <id> passed: <detail>``, wrapped at :data:`WIDTH` columns).

    ``candidate`` is the learner's function or class, or for a prediction exercise the
    predicted value (``None``, the stub's value, is not attempted).

    Raises :class:`NotAttempted` if the candidate raises ``NotImplementedError`` and
    :class:`CheckFailed` (with the exercise id in the message) for any wrong answer, including
    an exception raised by the candidate.
    """
    if exercise_id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"unknown exercise id {exercise_id!r}; known ids: {known}")
    try:
        detail = judge(EXERCISES[exercise_id], candidate)
    except CheckFailed as failure:  # NotAttempted included
        raise type(failure)(
            f"{exercise_id}: {failure}", credit=failure.credit, cause=failure.cause
        ) from failure.__cause__
    print(passed_message(exercise_id, detail))


WIDTH = 79
"""Columns of a check cell's printed message: the book's code column shows 83 characters."""


def passed_message(exercise_id: str, detail: str) -> str:
    """``✔ <id> passed: <detail>`` wrapped at :data:`WIDTH` columns, continuation lines
    indented by two spaces, so that it reads without scrolling in the book."""
    return textwrap.fill(
        f"✔ {exercise_id} passed: {detail}",
        width=WIDTH,
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def judge(ex: Exercise, candidate: Any) -> str:
    """Run ``ex``'s checker on ``candidate``: the one-line detail of a pass, or
    :class:`NotAttempted` / :class:`CheckFailed` (without the exercise id) otherwise."""
    if ex.prediction:
        if candidate is None:
            raise NotAttempted("not attempted yet (the prediction is still None)")
        try:
            return ex.run(candidate)
        except (TypeError, ValueError, AttributeError, OverflowError) as error:
            # a value the checker cannot read (a grader's error passes through): a failure
            raise CheckFailed(
                f"could not read the prediction ({type(error).__name__}: {error})"
            ) from error
    if not callable(candidate):
        raise CheckFailed(f"expected a function {ex.signature}, got {type(candidate).__name__}")
    try:
        return ex.run(candidate)
    except NotImplementedError:
        raise NotAttempted(
            "not attempted yet (the function still raises NotImplementedError)"
        ) from None
    except NotAttempted:
        raise
    except CheckFailed as failure:
        more = more_feedback(ex.id, candidate)
        if not more:
            raise
        raise CheckFailed(
            f"{failure}{more}", credit=failure.credit, cause=failure.cause
        ) from failure
    except Exception as error:  # the learner's code crashed: report it as a failed check
        more = more_feedback(ex.id, candidate)
        raise CheckFailed(f"your function raised {type(error).__name__}: {error}{more}") from error
