"""What every chapter's exercises share: the registry, the comparisons, and named mistakes.

An exercise is registered with :func:`exercise` by the module of its chapter
(:mod:`bncourse.exercises.ch01` ... ``ch09``): a stable id, the chapter, a title, the
signature the learner writes, and a *checker*. A checker calls the learner's function (the
*candidate*) on small float64 inputs, compares each result with the right answer, and either
returns a one-line description of what it verified or raises :class:`CheckFailed` with a
message for the learner: which output is wrong, the largest error and where, and the
misconception it looks like, when it recognises one. A chapter may add more feedback for a
failing candidate with :func:`feedback` (the smallest failing batch, the convention probed),
which :func:`bncourse.checks.judge` appends to the message.

A misconception is recognised by computing, on the same inputs, what each known mistake
returns: :class:`Mistakes` holds the small, named, wrong variants of the right code of one
exercise, each with the sentence that tells the learner what went wrong. :func:`compare`
names the first one the learner's answer matches. Inputs are chosen so that these answers
differ from the right one by far more than the tolerance: small batches (so ``m`` and
``m - 1`` differ), a low-variance channel (so eps matters), distinct gamma and beta, and
spatial axes (so axes can be wrong).

Tolerances: inputs are float64 and answers must match the float64 reference to ``rtol=1e-5,
atol=1e-6`` unless an exercise says otherwise; that admits a float32 computation inside the
learner's code (relative error ~1e-7) and rejects every listed mistake, whose errors are at
least ~1e-2 on the chosen inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CheckFailed",
    "NotAttempted",
    "Parts",
    "Exercise",
    "EXERCISES",
    "FEEDBACK",
    "exercise",
    "prediction",
    "feedback",
    "more_feedback",
    "array_text",
    "quoted",
    "Mistakes",
    "as_array",
    "compare",
    "compare_number",
    "compare_prediction",
    "predicted_letters",
    "compare_letters",
    "unpack",
    "first_output",
    "tuple_text",
    "rng",
]


class CheckFailed(AssertionError):
    """An exercise's answer is wrong; the message says how, for the learner.

    ``credit`` is the fraction of the exercise's points the answer still earns: 0 unless the
    exercise has independent parts (:class:`Parts`) and some of them are right. ``cause`` is
    the misconception the checker recognised (the sentence after "Likely cause:" in the
    message), set by the checker itself: the class report counts it, and never reads it out
    of a message, which may quote the learner's own text.
    """

    def __init__(self, message: str = "", *, credit: float = 0.0, cause: str = "") -> None:
        super().__init__(message)
        self.credit = credit
        self.cause = cause

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message is what the learner needs,
        # the frames of the checker are not.
        return [f"{type(self).__name__}: {self}"]


class NotAttempted(CheckFailed):
    """The exercise still raises ``NotImplementedError``: it has not been attempted yet."""


class Parts:
    """The independent parts of one answer (``dx``, ``dgamma``, ``dbeta``, say), each judged
    on its own, for partial credit::

        parts = Parts("dx", "dgamma", "dbeta")
        for case in cases:
            with parts.case():
                dx, dgamma, dbeta = batchnorm_backward(...)
                with parts.judging("dbeta"):
                    compare(f"dbeta from {name}", dbeta, right_dbeta)
                ...
        parts.verdict()  # raises CheckFailed naming every wrong part, credit = right / all

    A part earns its share only if it is right on every case; its first failure is the one
    reported, and a wrong part does not stop the others being judged. When the learner's
    function raises before any part has failed, the check ends there with no credit, as
    without parts; when it raises on a later case (a wrong answer may break on the next
    shape), the first failure stays the diagnosis and no part earns credit, since none was
    shown right on every case.
    """

    def __init__(self, *names: str) -> None:
        self.names = names
        self.failures: dict[str, CheckFailed] = {}
        self.crashed: Exception | None = None

    @contextmanager
    def case(self) -> Iterator[None]:
        try:
            yield
        except CheckFailed:
            raise
        except Exception as error:
            if not self.failures:
                raise
            self.crashed = self.crashed or error

    @contextmanager
    def judging(self, name: str) -> Iterator[None]:
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of the parts {self.names}")
        try:
            yield
        except NotAttempted:
            raise
        except CheckFailed as failure:
            self.failures.setdefault(name, failure)

    def verdict(self) -> None:
        if not self.failures:
            return
        right = [name for name in self.names if name not in self.failures]
        wrong = [name for name in self.names if name in self.failures]
        message = "\n".join(str(self.failures[name]) for name in wrong)
        if self.crashed is not None:
            error = self.crashed
            message += (
                f"\n(and on a later case your function raised {type(error).__name__}: {error}; "
                "no part was shown right on every case, so none earns partial credit)"
            )
            right = []
        elif right:
            message += (
                f"\n(right: {', '.join(right)}; {len(right)} of the {len(self.names)} parts, "
                "for partial credit)"
            )
        first = self.failures[wrong[0]].cause
        raise CheckFailed(message, credit=len(right) / len(self.names), cause=first)


@dataclass(frozen=True)
class Exercise:
    """One exercise: its stable id, where it lives, what it asks for, and its checker."""

    id: str
    chapter: str
    title: str
    signature: str
    run: Callable[[Any], str]
    prediction: bool = False
    """A prediction exercise (:func:`prediction`): the learner writes a value, not a function."""

    @property
    def function(self) -> str:
        """The name the learner's function, class or prediction must have: the signature's
        first word."""
        return re.match(r"\s*([A-Za-z_]\w*)", self.signature).group(1)

    def defined_in(self, source: str) -> bool:
        """Whether code ``source`` defines :attr:`function` (``def``, ``class``, or for a
        prediction an assignment at the start of a line)."""
        name = self.function
        if self.prediction:
            return re.search(rf"^{name}\s*=", source, re.M) is not None
        return f"def {name}(" in source or f"class {name}" in source


EXERCISES: dict[str, Exercise] = {}
"""Every registered exercise by id, in the order the chapters register them."""

FEEDBACK: dict[str, list[Callable[[Callable[..., Any]], str | None]]] = {}
"""More feedback for a *failing* candidate, by exercise id: functions registered with
:func:`feedback` that take the candidate and return a paragraph (or ``None``), such as the
smallest batch it fails on or the convention it follows."""


def exercise(id: str, *, chapter: str, title: str, signature: str):
    """Register the decorated function as the checker of exercise ``id``.

    The checker takes the learner's candidate, raises :class:`CheckFailed` if it is wrong and
    returns a short description of what it verified.
    """

    def register(run: Callable[[Callable[..., Any]], str]) -> Callable[[Callable[..., Any]], str]:
        if id in EXERCISES:
            raise ValueError(f"exercise id {id!r} is registered twice")
        EXERCISES[id] = Exercise(id, chapter, title, signature, run)
        return run

    return register


def prediction(id: str, *, chapter: str, title: str, signature: str):
    """Register the decorated function as the checker of prediction exercise ``id``.

    The learner writes a value before running the cell that reveals it (a number, a shape, the
    name of the run that fails), in a variable named by the signature's first word
    (``"predicted_std: a float"``); the check cell is ``check(id, predicted_std)`` and the
    checker receives the value itself. The exercise notebook's stub sets the variable to
    ``None``, which :func:`bncourse.checks.judge` reports as not attempted.
    """

    def register(run: Callable[[Any], str]) -> Callable[[Any], str]:
        if id in EXERCISES:
            raise ValueError(f"exercise id {id!r} is registered twice")
        EXERCISES[id] = Exercise(id, chapter, title, signature, run, prediction=True)
        return run

    return register


def feedback(*ids: str):
    """Register the decorated function as more feedback for failing candidates of ``ids``."""

    def register(explain: Callable[[Callable[..., Any]], str | None]):
        for exercise_id in ids:
            FEEDBACK.setdefault(exercise_id, []).append(explain)
        return explain

    return register


def more_feedback(exercise_id: str, candidate: Callable[..., Any]) -> str:
    """The paragraphs of :data:`FEEDBACK` for ``candidate``, each after a blank line; a
    feedback function that fails (on a candidate that crashes, say) adds nothing."""
    paragraphs = []
    for explain in FEEDBACK.get(exercise_id, []):
        try:
            text = explain(candidate)
        except Exception:
            text = None
        if text:
            paragraphs.append(text)
    return "".join(f"\n\n{text}" for text in paragraphs)


def array_text(value: Any) -> str:
    """A small array as NumPy prints it, 4 decimals, on one line per row."""
    return np.array2string(np.asarray(value, dtype=np.float64), precision=4, suppress_small=True)


# --------------------------------------------------------------------------------------------
# Named mistakes
# --------------------------------------------------------------------------------------------
class Mistakes:
    """The known wrong versions of one computation, each with what it misunderstood.

    Register a mistake by decorating a function that takes the right computation's arguments
    and returns the wrong answer (or ``None`` where the mistake does not apply to these
    arguments)::

        FORWARD = Mistakes()

        @FORWARD.add("eps outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps")
        def eps_outside_the_root(x, gamma, beta, eps):
            ...

    A *family* of mistakes (one per wrong set of axes, say) is a generator of
    ``(cause, answer)`` pairs registered with :meth:`family`. :meth:`answers` runs them all
    and returns ``{cause: answer}`` for :func:`compare`, in registration order: when two
    mistakes give the same answer, the first one names it.
    """

    def __init__(self) -> None:
        self._makers: list[Callable[..., Iterator[tuple[str, Any]]]] = []

    def add(self, cause: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(wrong: Callable[..., Any]) -> Callable[..., Any]:
            def one(*args: Any, **kwargs: Any) -> Iterator[tuple[str, Any]]:
                answer = wrong(*args, **kwargs)
                if answer is not None:
                    yield cause, answer

            self._makers.append(one)
            return wrong

        return register

    def family(self, generate: Callable[..., Iterator[tuple[str, Any]]]) -> Callable[..., Any]:
        self._makers.append(generate)
        return generate

    def answers(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for make in self._makers:
            for cause, answer in make(*args, **kwargs):
                found.setdefault(cause, answer)
        return found


# --------------------------------------------------------------------------------------------
# Comparing answers
# --------------------------------------------------------------------------------------------
QUOTED = 300  # characters of a learner's answer a message quotes


def quoted(value: Any, limit: int = QUOTED) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters and then how many were
    left out: a learner's answer of millions of values would make every report that long."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 20
    text = short.repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def tuple_text(values: tuple[int, ...]) -> str:
    """``(2, 3)`` for a shape, axes or an index (NumPy integers included)."""
    return "(" + ", ".join(str(int(v)) for v in values) + ")"


def rng(seed: int) -> np.random.Generator:
    """The generator every checker draws its inputs from: a fixed seed per exercise."""
    return np.random.default_rng(seed)


def as_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array, or a :class:`CheckFailed` naming what it was instead."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (tuple, list)):
        raise CheckFailed(
            f"{name} should be one array, got a {type(value).__name__} of {len(value)} items"
        )
    import torch  # (here: a checker of a NumPy exercise does not need torch)

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (int, float, np.number)):
        return np.asarray(value)
    raise CheckFailed(f"{name} should be a NumPy array, got {type(value).__name__}")


def compare(
    name: str,
    got: Any,
    expected: np.ndarray,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    mistakes: dict[str, Any] | None = None,
    check_dtype: bool = True,
) -> None:
    """Raise :class:`CheckFailed` unless ``got`` matches ``expected``.

    ``mistakes`` maps a misconception's description to the answer it would produce (or to a
    shape: a tuple); when ``got`` matches one of them, the message names it. The message
    always says which output is wrong, the largest error and where it is.
    """
    mistakes = mistakes or {}
    got = as_array(name, got)
    if got.shape != expected.shape:
        message = f"{name} has shape {got.shape}, expected {expected.shape}."
        for cause, answer in mistakes.items():
            shape = answer if isinstance(answer, tuple) else np.shape(answer)
            if shape == got.shape:
                raise CheckFailed(f"{message} Likely cause: {cause}.", cause=cause)
        raise CheckFailed(message)
    if check_dtype and got.dtype != expected.dtype:
        raise CheckFailed(
            f"{name} has dtype {got.dtype}, expected {expected.dtype}: keep the input's dtype "
            f"(float32 in, float32 out; float64 in, float64 out)."
        )
    bad = ~np.isfinite(got) & np.isfinite(expected)
    if bad.any():
        index = tuple(np.argwhere(bad)[0])
        raise CheckFailed(
            f"{name} contains {got[index]} at index {tuple_text(index)} where "
            f"{expected[index]:.6g} was expected ({int(bad.sum())} non-finite values in all)."
        )
    if np.allclose(got, expected, rtol=rtol, atol=atol):
        return
    error = np.atleast_1d(np.abs(got.astype(np.float64) - expected.astype(np.float64)))
    error[~np.isfinite(error)] = np.inf
    error = error.reshape(got.shape)
    index = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
    message = (
        f"{name} is wrong: largest error {float(error[index]):.3g} at index "
        f"{tuple_text(index)} (got {float(got[index]):.6g}, expected "
        f"{float(expected[index]):.6g}; tolerance rtol={rtol:g}, atol={atol:g})."
    )
    for cause, answer in mistakes.items():
        if isinstance(answer, tuple):
            continue
        answer = np.asarray(answer)
        if answer.shape == got.shape and np.allclose(got, answer, rtol=rtol, atol=atol):
            raise CheckFailed(f"{message} Likely cause: {cause}.", cause=cause)
    raise CheckFailed(message)


def compare_number(
    name: str,
    got: Any,
    expected: float,
    *,
    rtol: float = 1e-9,
    mistakes: dict[str, float] | None = None,
) -> float:
    """Raise :class:`CheckFailed` unless ``got`` is a number within ``rtol`` of ``expected``.

    ``mistakes`` maps a misconception's description to the number it would produce; when
    ``got`` matches one of them (within ``rtol``), the message names it. ``rtol=0`` asks for
    an exact match (counts). Returns ``got`` as a float.
    """
    if isinstance(got, str | bytes | bytearray):  # float("1.0") would accept a string
        raise CheckFailed(f"{name} should be a number, got a {type(got).__name__}: {got!r:.80}")
    try:
        number = float(got)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name} should be a number, got {quoted(got)}") from None
    if abs(number - expected) <= rtol * abs(expected):
        return number
    digits = next((d for d in range(6, 17) if f"{number:.{d}g}" != f"{expected:.{d}g}"), 17)
    message = f"{name} = {number:.{digits}g}, expected {expected:.{digits}g}."  # digits that differ
    for cause, value in (mistakes or {}).items():
        if abs(number - value) <= rtol * abs(value):
            raise CheckFailed(f"{message} Likely cause: {cause}.", cause=cause)
    raise CheckFailed(message)


def compare_prediction(
    name: str,
    got: Any,
    expected: float,
    *,
    tolerance: float,
    mistakes: dict[str, float] | None = None,
    otherwise: str = "",
) -> str:
    """Judge a learner's predicted number: within ``tolerance`` (absolute, its edge
    included despite float rounding) of ``expected`` passes; otherwise :class:`CheckFailed`,
    naming the mistake ``got`` matches (within the same tolerance) or, failing that,
    ``otherwise`` (the reason the typical wrong prediction misses), as the cause. Each
    prediction exercise states and justifies its tolerance: a number worked out by hand to a
    few digits must pass, the nearest mistake must not.
    Returns the prediction as text, for the pass message."""
    dtype = str(getattr(got, "dtype", ""))  # numpy's and torch's scalars and 0-d arrays
    if (
        isinstance(got, str | bytes | bytearray | bool | complex)
        or got is None
        or "bool" in dtype
        or "complex" in dtype
    ):
        raise CheckFailed(f"{name} should be a number, got {quoted(got)}")
    if getattr(got, "ndim", 0) != 0:
        raise CheckFailed(f"{name} should be one number, got {quoted(got)}")
    try:
        number = float(got)
    except (TypeError, ValueError, OverflowError):
        raise CheckFailed(f"{name} should be a number, got {quoted(got)}") from None
    if not math.isfinite(number):
        raise CheckFailed(f"{name} should be a finite number, got {number}")
    # the tolerance's edge passes: 4.999 against 5 with 1e-3 is 1.0000000000000334e-3 away
    # in floats; 1e-9 of the tolerance more covers that rounding and nothing a learner types
    within = tolerance * (1 + 1e-9)
    if abs(number - expected) <= within:
        return f"{number:g}"
    message = f"{name} = {number:g}, but the answer is {expected:g} (the cells below show it)."
    for cause, value in (mistakes or {}).items():
        if abs(number - value) <= within:
            raise CheckFailed(f"{message} Likely cause: {cause}.", cause=cause)
    if otherwise:
        raise CheckFailed(f"{message} {otherwise}.", cause=otherwise)
    raise CheckFailed(message)


def predicted_letters(name: str, value: Any, choices: str) -> set[str]:
    """A prediction of which runs fail as a set of letters: from ``"ac"``, ``"a, c"`` or
    ``["a", "c"]``; a :class:`CheckFailed` for anything else."""
    if isinstance(value, str):
        items = [ch for ch in value.lower() if not ch.isspace() and ch not in ",;"]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(v, str) for v in value
    ):
        items = [v.strip().lower() for v in value]
    else:
        raise CheckFailed(
            f'{name} should be the letters of the runs that fail, such as "ab", got {quoted(value)}'
        )
    unknown = sorted(set(items) - set(choices))
    if unknown:
        raise CheckFailed(
            f"{name} holds {', '.join(map(repr, unknown))}: the runs are {', '.join(choices)}"
        )
    return set(items)


def compare_letters(
    name: str,
    value: Any,
    runs: dict[str, str],
    right: set[str],
    why: dict[str, str],
    said: tuple[str, str],
) -> None:
    """A prediction of which of ``runs`` (``{letter: description}``) do something, against the
    ``right`` letters: the first wrong letter raises :class:`CheckFailed` with its run and its
    misconception (``why[letter]``); ``said`` is what a letter means when predicted and when
    left out (``("fails", "runs")``)."""
    got = predicted_letters(name, value, "".join(runs))
    for letter in sorted(got ^ right):
        cause = why[letter]
        raise CheckFailed(
            f"you predicted that run {letter} ({runs[letter]}) "
            f"{said[0] if letter in got else said[1]}. Likely cause: {cause}.",
            cause=cause,
        )


def first_output(result: Any) -> Any:
    """Accept ``out`` or ``(out, cache)`` from a forward function."""
    if isinstance(result, (tuple, list)) and len(result) >= 1:
        return result[0]
    return result


def unpack(name: str, result: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """``result`` as a tuple of ``len(names)`` outputs, or a :class:`CheckFailed` saying what
    it was instead."""
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        what = f"a {type(result).__name__}"
        if isinstance(result, (tuple, list)):
            what += f" of {len(result)} items"
        raise CheckFailed(f"{name} should return a tuple ({', '.join(names)}), got {what}")
    return tuple(result)
