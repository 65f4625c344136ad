"""Checking an exercise: ``check(id, candidate)``, the one interface of every checker.

Every exercise of the course has a stable id (``python -m bncourse exercises`` lists them).
A notebook's check cell calls::

    from bncourse.checks import check
    check("numpy-forward", batchnorm_forward)

which prints one line, ``✔ numpy-forward passed: ...``, or raises :class:`CheckFailed` (an
``AssertionError``) with a message for the learner: which output is wrong, the largest error
and where, and the likely misconception when the wrong answer matches a known one (unbiased
variance, wrong reduction axes, eps outside the square root, ...). An exercise whose stub
still raises ``NotImplementedError`` fails with :class:`NotAttempted` ("not attempted yet").

The checkers, their inputs and the mistakes they recognise live with their chapter, in
:mod:`bncourse.exercises` (``ch01`` ... ``ch09``); the grader
(:mod:`bncourse.grader`) judges with the same :func:`judge` as :func:`check`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from .exercises import EXERCISES
from .exercises.base import CheckFailed, Exercise, NotAttempted

__all__ = [
    "CheckFailed",
    "NotAttempted",
    "Exercise",
    "EXERCISES",
    "check",
    "judge",
    "grade_in_namespace",
    "RESULT_PREFIX",
]


def check(exercise_id: str, candidate: Callable[..., Any]) -> None:
    """Check ``candidate`` against exercise ``exercise_id``; print one line when it passes.

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
        raise type(failure)(f"{exercise_id}: {failure}") from failure.__cause__
    print(f"✔ {exercise_id} passed: {detail}")


def judge(ex: Exercise, candidate: Any) -> str:
    """Run ``ex``'s checker on ``candidate``: the one-line detail of a pass, or
    :class:`NotAttempted` / :class:`CheckFailed` (without the exercise id) otherwise."""
    if not callable(candidate):
        raise CheckFailed(f"expected a function {ex.signature}, got {type(candidate).__name__}")
    try:
        return ex.run(candidate)
    except NotImplementedError:
        raise NotAttempted(
            "not attempted yet (the function still raises NotImplementedError)"
        ) from None
    except CheckFailed:
        raise
    except Exception as error:  # the learner's code crashed: report it as a failed check
        raise CheckFailed(f"your function raised {type(error).__name__}: {error}") from error


RESULT_PREFIX = "BNCOURSE-RESULT "


def grade_in_namespace(exercise_id: str, namespace: dict[str, Any]) -> None:
    """Check the learner's function found by name in ``namespace``; print one JSON result line.

    Used by the grader (``python -m bncourse grade``), which runs this in the learner's kernel
    after the whole notebook, so a check cell edited or deleted by the learner changes nothing.
    The line is ``BNCOURSE-RESULT {"exercise", "status", "message", "seconds"}`` with status
    ``passed``, ``failed``, ``not attempted`` or ``error``.
    """
    start = time.perf_counter()
    ex = EXERCISES.get(exercise_id)
    if ex is None:
        status, message = "error", f"unknown exercise id {exercise_id!r}"
    elif ex.function not in namespace:
        status, message = (
            "error",
            (
                f"{ex.function} is not defined: run the cell that defines "
                f"it, and check that it runs without an error"
            ),
        )
    else:
        try:
            with redirect_stdout(io.StringIO()):  # what the learner's function prints
                status, message = "passed", judge(ex, namespace[ex.function])
        except NotAttempted:
            status, message = "not attempted", "not attempted yet"
        except CheckFailed as failure:
            status, message = "failed", str(failure)
    result = dict(
        exercise=exercise_id,
        status=status,
        message=message,
        seconds=round(time.perf_counter() - start, 3),
    )
    print(RESULT_PREFIX + json.dumps(result))
