"""Exercise checkers: pass or fail every exercise, and say what went wrong.

Every exercise of the course has a stable id (``python -m bncourse exercises`` lists them).
A notebook's check cell calls::

    from bncourse.checks import check
    check("numpy-forward", batchnorm_forward)

which prints one line, ``✔ numpy-forward passed: ...``, or raises :class:`CheckFailed` (an
``AssertionError``) with a message for the learner: which output is wrong, the largest error
and where, and the likely misconception when the wrong answer matches a known one (unbiased
variance, wrong reduction axes, eps outside the square root, ...).  An exercise whose stub still
raises ``NotImplementedError`` fails with :class:`NotAttempted` ("not attempted yet").

How a misconception is recognised: the checker computes the answers that each known mistake
would give on the same inputs (see :mod:`bncourse.misconceptions`) and reports the one the
learner's answer matches.  Inputs are chosen so that these answers differ from the right one
by far more than the tolerance: small batches (so ``m`` and ``m - 1`` differ), a low-variance
channel (so eps matters), distinct gamma and beta, and spatial axes (so axes can be wrong).

Tolerances: inputs are float64 and answers must match the float64 reference to ``rtol=1e-5,
atol=1e-6`` unless an exercise says otherwise; that admits a float32 computation inside the
learner's code (relative error ~1e-7) and rejects every listed misconception, whose errors
are at least ~1e-2 on the chosen inputs.
"""
from __future__ import annotations

import io
import json
import math
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import misconceptions as mis
from . import numpy_bn

__all__ = ["CheckFailed", "NotAttempted", "Exercise", "EXERCISES", "check", "compare",
           "compare_number", "grade_in_namespace"]


class CheckFailed(AssertionError):
    """An exercise's answer is wrong; the message says how, for the learner."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message is what the learner needs,
        # the frames of the checker are not.
        return [f"{type(self).__name__}: {self}"]


class NotAttempted(CheckFailed):
    """The exercise still raises ``NotImplementedError``: it has not been attempted yet."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its stable id, where it lives, what it asks for, and its checker."""

    id: str
    chapter: str
    title: str
    signature: str
    run: Callable[[Callable[..., Any]], str]

    @property
    def function(self) -> str:
        """The name the learner's function (or class) must have: the signature's first word."""
        return self.signature.split("(", 1)[0].strip()


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, *, chapter: str, title: str, signature: str):
    """Register the decorated function as the checker of exercise ``id``.

    The checker takes the learner's candidate, raises :class:`CheckFailed` if it is wrong
    and returns a short description of what it verified.
    """

    def register(run: Callable[[Callable[..., Any]], str]) -> Callable[[Callable[..., Any]], str]:
        if id in EXERCISES:
            raise ValueError(f"exercise id {id!r} is registered twice")
        EXERCISES[id] = Exercise(id, chapter, title, signature, run)
        return run

    return register


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
        detail = _judge(EXERCISES[exercise_id], candidate)
    except CheckFailed as failure:  # NotAttempted included
        raise type(failure)(f"{exercise_id}: {failure}") from failure.__cause__
    print(f"✔ {exercise_id} passed: {detail}")


def _judge(ex: Exercise, candidate: Any) -> str:
    """Run ``ex``'s checker on ``candidate``: the one-line detail of a pass, or
    :class:`NotAttempted` / :class:`CheckFailed` (without the exercise id) otherwise."""
    if not callable(candidate):
        raise CheckFailed(f"expected a function {ex.signature}, got {type(candidate).__name__}")
    try:
        return ex.run(candidate)
    except NotImplementedError:
        raise NotAttempted("not attempted yet (the function still raises NotImplementedError)") from None
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
        status, message = "error", (f"{ex.function} is not defined: run the cell that defines "
                                    f"it, and check that it runs without an error")
    else:
        try:
            with redirect_stdout(io.StringIO()):  # what the learner's function prints
                status, message = "passed", _judge(ex, namespace[ex.function])
        except NotAttempted:
            status, message = "not attempted", "not attempted yet"
        except CheckFailed as failure:
            status, message = "failed", str(failure)
    result = dict(exercise=exercise_id, status=status, message=message,
                  seconds=round(time.perf_counter() - start, 3))
    print(RESULT_PREFIX + json.dumps(result))


# --------------------------------------------------------------------------------------------
# Comparing answers
# --------------------------------------------------------------------------------------------
def as_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array, or a :class:`CheckFailed` naming what it was instead."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (tuple, list)):
        raise CheckFailed(
            f"{name} should be one array, got a {type(value).__name__} of {len(value)} items"
        )
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        pass
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
    shape: a tuple); when ``got`` matches one of them, the message names it.  The message
    always says which output is wrong, the largest error and where it is.
    """
    mistakes = mistakes or {}
    got = as_array(name, got)
    if got.shape != expected.shape:
        message = f"{name} has shape {got.shape}, expected {expected.shape}."
        for cause, answer in mistakes.items():
            shape = answer if isinstance(answer, tuple) else np.shape(answer)
            if shape == got.shape:
                message += f" Likely cause: {cause}."
                break
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
            f"{name} contains {got[index]} at index {mis.tuple_text(index)} where "
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
        f"{mis.tuple_text(index)} (got {float(got[index]):.6g}, expected "
        f"{float(expected[index]):.6g}; tolerance rtol={rtol:g}, atol={atol:g})."
    )
    for cause, answer in mistakes.items():
        if isinstance(answer, tuple):
            continue
        answer = np.asarray(answer)
        if answer.shape == got.shape and np.allclose(got, answer, rtol=rtol, atol=atol):
            message += f" Likely cause: {cause}."
            break
    raise CheckFailed(message)


def compare_number(name: str, got: Any, expected: float, *, rtol: float = 1e-9,
                   mistakes: dict[str, float] | None = None) -> float:
    """Raise :class:`CheckFailed` unless ``got`` is a number within ``rtol`` of ``expected``.

    ``mistakes`` maps a misconception's description to the number it would produce; when
    ``got`` matches one of them (within ``rtol``), the message names it.  ``rtol=0`` asks for
    an exact match (counts).  Returns ``got`` as a float.
    """
    try:
        number = float(got)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name} should be a number, got {got!r}") from None
    if abs(number - expected) <= rtol * abs(expected):
        return number
    message = f"{name} = {number:.6g}, expected {expected:.6g}."
    for cause, value in (mistakes or {}).items():
        if abs(number - value) <= rtol * abs(value):
            message += f" Likely cause: {cause}."
            break
    raise CheckFailed(message)


def _first_output(result: Any) -> Any:
    """Accept ``out`` or ``(out, cache)`` from a forward function."""
    if isinstance(result, (tuple, list)) and len(result) >= 1:
        return result[0]
    return result


def _part(mistakes: dict[str, tuple[Any, ...]], index: int) -> dict[str, Any]:
    """``{cause: answer[index]}`` for mistakes whose answers are tuples of several outputs."""
    return {cause: answer[index] for cause, answer in mistakes.items()}


def _unpack(name: str, result: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        what = f"a {type(result).__name__}"
        if isinstance(result, (tuple, list)):
            what += f" of {len(result)} items"
        raise CheckFailed(f"{name} should return a tuple ({', '.join(names)}), got {what}")
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Test inputs: small, float64, chosen so that every known mistake is far from the right answer
# --------------------------------------------------------------------------------------------
def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def forward_cases() -> list[dict[str, Any]]:
    """Inputs for the forward-pass exercises: (N, C), (N, C, L), (N, C, H, W) and float32.

    Each case has a low-variance channel (variance ~1e-4, so eps=1e-5 matters), a small
    batch (so dividing by m or m-1 differs), gamma != beta, and non-default eps in one case.
    """
    cases = []
    for seed, shape, eps in [(0, (6, 4), 1e-5), (1, (4, 3, 5), 1e-5), (2, (3, 2, 4, 3), 1e-3)]:
        rng = _rng(seed)
        c = shape[1]
        x = rng.normal(loc=rng.uniform(-2, 2, size=c).reshape(numpy_bn.channel_shape(len(shape))),
                       scale=1.0, size=shape)
        x[:, -1] = 0.5 + 0.01 * rng.normal(size=x[:, -1].shape)  # low-variance channel
        gamma = rng.uniform(0.5, 2.0, size=c) * rng.choice([-1, 1], size=c)
        beta = rng.uniform(-1.0, 1.0, size=c)
        cases.append(dict(x=x, gamma=gamma, beta=beta, eps=eps))
    f32 = cases[0]
    cases.append(dict(x=f32["x"].astype(np.float32), gamma=f32["gamma"].astype(np.float32),
                      beta=f32["beta"].astype(np.float32), eps=1e-5))
    return cases


# --------------------------------------------------------------------------------------------
# Chapter 1: what BatchNorm does to a batch
# --------------------------------------------------------------------------------------------
@exercise("standardize", chapter="01_what_batchnorm_does", title="Standardize each feature",
          signature="standardize(x) -> array, for x of shape (N, C)")
def _check_standardize(standardize: Callable[..., Any]) -> str:
    # This exercise has no eps; a learner who adds a small eps still passes (rtol 1e-4).
    for seed, shape in [(10, (5, 3)), (11, (3, 10)), (12, (8, 2))]:
        rng = _rng(seed)
        x = rng.normal(size=shape) * rng.uniform(0.5, 3, size=shape[1]) + rng.uniform(-3, 3, size=shape[1])
        before = x.copy()
        got = standardize(x)
        if not np.array_equal(x, before):
            raise CheckFailed("standardize changed its input x in place; return a new array")
        expected = (x - x.mean(0)) / x.std(0)
        compare(f"standardize(x) for x of shape {mis.tuple_text(shape)}", got, expected,
                rtol=1e-4, atol=1e-6, mistakes=mis.standardize_mistakes(x))
    return "z-scores per feature, with the biased (divide by N) standard deviation"


@exercise("extreme-batch", chapter="01_what_batchnorm_does",
          title="A batch that reaches Samuelson's bound",
          signature="extreme_batch(m) -> array of shape (m,)")
def _check_extreme_batch(extreme_batch: Callable[..., Any]) -> str:
    for m in [2, 3, 5, 10, 64]:
        x = as_array(f"extreme_batch({m})", extreme_batch(m))
        if x.shape != (m,):
            raise CheckFailed(f"extreme_batch({m}) has shape {x.shape}, expected ({m},)")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise CheckFailed(f"extreme_batch({m}) contains non-finite values")
        std = x.std()
        if std <= 1e-12 * max(1.0, np.abs(x).max()):
            raise CheckFailed(
                f"extreme_batch({m}) is constant: its normalized values are all 0 (0/0 without eps)"
            )
        largest = np.abs((x - x.mean()) / std).max()
        bound = math.sqrt(m - 1)
        if largest < bound * (1 - 1e-6):
            outliers = int(np.sum(np.abs(x - np.median(x)) > 1e-9 * (1 + np.abs(x).max())))
            hint = ""
            if outliers > 1:
                hint = (f" Your batch has {outliers} values away from the rest: put all the "
                        f"spread in one value and keep the other {m - 1} equal.")
            raise CheckFailed(
                f"for m={m} the largest |xhat| of your batch is {largest:.4f}, but the bound "
                f"sqrt(m-1) = {bound:.4f} is reachable.{hint}"
            )
    return "max |xhat| reaches sqrt(m - 1) for m = 2, 3, 5, 10, 64"


@exercise("expected-std", chapter="01_what_batchnorm_does",
          title="Predict what output.std() prints",
          signature="expected_std(n, c) -> float")
def _check_expected_std(expected_std: Callable[..., Any]) -> str:
    for n, c in [(3, 10), (2, 1), (16, 4), (100, 3)]:
        causes = {
            "output.std() is not 1: torch.Tensor.std divides by (number of values - 1)": 1.0,
            "output.std() is taken over all N*C values at once, not per column, so it divides "
            "by N*C - 1": math.sqrt(n / (n - 1)),
        }
        compare_number(f"expected_std({n}, {c})", expected_std(n, c), math.sqrt(n * c / (n * c - 1)),
                       rtol=1e-6, mistakes=causes)
    return "output.std() = sqrt(N*C / (N*C - 1)), e.g. 1.0171 for a (3, 10) batch"


# --------------------------------------------------------------------------------------------
# Chapter 2: the forward pass in NumPy
# --------------------------------------------------------------------------------------------
@exercise("numpy-batch-stats", chapter="02_numpy_forward", title="Per-channel batch statistics",
          signature="batch_stats(x) -> (mean, var), each of shape (C,), for x of shape (N, C, *spatial)")
def _check_batch_stats(batch_stats: Callable[..., Any]) -> str:
    for case in forward_cases():
        x = case["x"]
        name = f"batch_stats(x) for x of shape {mis.tuple_text(x.shape)} ({x.dtype})"
        mean, var = _unpack(name, batch_stats(x.copy()), ("mean", "var"))
        exp_mean, exp_var = numpy_bn.batch_stats(x)
        tol = dict(rtol=1e-4, atol=1e-6) if x.dtype == np.float32 else {}
        compare(f"the mean from {name}", mean, exp_mean,
                mistakes=mis.stats_axes_mistakes(x, np.mean), **tol)
        compare(f"the variance from {name}", var, exp_var,
                mistakes={**mis.variance_mistakes(x), **mis.stats_axes_mistakes(x, np.var)}, **tol)
    return "per-channel mean and biased variance over all axes but 1, for 2-4 dimensions"


@exercise("numpy-forward", chapter="02_numpy_forward", title="The training forward pass",
          signature="batchnorm_forward(x, gamma, beta, eps=1e-5) -> out or (out, cache)")
def _check_forward(batchnorm_forward: Callable[..., Any]) -> str:
    for case in forward_cases():
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        name = f"batchnorm_forward output for x of shape {mis.tuple_text(x.shape)} ({x.dtype}), eps={eps:g}"
        got = _first_output(batchnorm_forward(x.copy(), gamma.copy(), beta.copy(), eps=eps))
        expected, _ = numpy_bn.forward_train(x, gamma, beta, eps)
        tol = dict(rtol=1e-4, atol=1e-5) if x.dtype == np.float32 else {}
        compare(name, got, expected, mistakes=mis.forward_mistakes(x, gamma, beta, eps), **tol)
    return "outputs match nn.BatchNorm's training forward for (N, C), (N, C, L), (N, C, H, W), float32/64"


# --------------------------------------------------------------------------------------------
# Chapter 3: the backward pass by hand
# --------------------------------------------------------------------------------------------
def backward_cases() -> list[dict[str, Any]]:
    """Inputs for the backward exercise: a (N, C) and a (N, C, H, W) batch, float64."""
    cases = []
    for seed, shape in [(20, (8, 3)), (21, (4, 3, 2, 2))]:
        rng = _rng(seed)
        c = shape[1]
        x = rng.normal(size=shape) * 2.0 + 1.0
        gamma = rng.uniform(0.5, 2.0, size=c)
        dout = rng.normal(size=shape)
        cases.append(dict(x=x, gamma=gamma, dout=dout, eps=1e-5))
    return cases


@exercise("numpy-backward", chapter="03_backward_by_hand", title="The closed-form backward pass",
          signature="batchnorm_backward(dout, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)")
def _check_backward(batchnorm_backward: Callable[..., Any]) -> str:
    for case in backward_cases():
        x, gamma, dout, eps = case["x"], case["gamma"], case["dout"], case["eps"]
        name = f"batchnorm_backward for x of shape {mis.tuple_text(x.shape)}"
        dx, dgamma, dbeta = _unpack(name, batchnorm_backward(dout.copy(), x.copy(), gamma.copy(), eps=eps),
                                    ("dx", "dgamma", "dbeta"))
        _, cache = numpy_bn.forward_train(x, gamma, None, eps)
        exp_dx, exp_dgamma, exp_dbeta = numpy_bn.backward(dout, cache)
        compare(f"dbeta from {name}", dbeta, exp_dbeta,
                mistakes={"dgamma and dbeta are swapped": exp_dgamma,
                          "dbeta should sum dout over every axis but 1": mis.sum_over_batch_only(dout)})
        compare(f"dgamma from {name}", dgamma, exp_dgamma,
                mistakes={"dgamma and dbeta are swapped": exp_dbeta,
                          "dgamma should sum dout * xhat over every axis but 1":
                          mis.sum_over_batch_only(dout * cache.xhat)})
        compare(f"dx from {name}", dx, exp_dx,
                mistakes=mis.backward_mistakes(dout, x, gamma, eps))
    return "dx, dgamma, dbeta match the analytic gradients for (N, C) and (N, C, H, W)"


@exercise("numerical-gradient", chapter="03_backward_by_hand",
          title="Central differences",
          signature="numerical_gradient(f, x, h=1e-5) -> array shaped like x")
def _check_numerical_gradient(numerical_gradient: Callable[..., Any]) -> str:
    rng = _rng(30)
    x = rng.normal(size=(3, 4))
    w = rng.normal(size=(3, 4))
    calls = []

    def f(v: np.ndarray) -> float:
        calls.append(1)
        return float(np.sum(np.sin(v) * w) + 0.5 * np.sum(v * v) ** 1.5 * 1e-2)

    def exact(v: np.ndarray) -> np.ndarray:
        return np.cos(v) * w + 1.5 * 1e-2 * np.sum(v * v) ** 0.5 * v

    before = x.copy()
    got = numerical_gradient(f, x, h=1e-5)
    if not np.array_equal(x, before):
        raise CheckFailed(
            "numerical_gradient left x changed: restore each entry after nudging it "
            "(x[i] = old value), or the later entries are measured at the wrong point"
        )
    if not calls:
        raise CheckFailed("numerical_gradient never called f")
    mistakes = {
        "a one-sided (forward) difference (f(x+h) - f(x)) / h, whose error is O(h) instead "
        "of O(h^2)": mis.one_sided_difference(f, x, 1e-5),
        "dividing by h instead of 2h in (f(x+h) - f(x-h)) / (2h)": 2 * exact(x),
    }
    # Central differences with h=1e-5 are accurate to ~1e-10 here; a one-sided difference is
    # off by ~1e-5, so atol=1e-8 tells them apart.
    compare("numerical_gradient(f, x)", got, exact(x), rtol=1e-7, atol=1e-8, mistakes=mistakes)
    return "central differences match the exact gradient to 1e-8"


# --------------------------------------------------------------------------------------------
# Chapter 4: running statistics, training and evaluation (inputs are float64 torch tensors)
# --------------------------------------------------------------------------------------------
def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.array(array, dtype=np.float64))


def _numpy(name: str, value: Any) -> np.ndarray:
    """A learner's tensor (or array) as float64 NumPy, for :func:`compare`."""
    return as_array(name, value).astype(np.float64, copy=False)


@exercise("state-sizes", chapter="04_running_stats",
          title="How many numbers BatchNorm learns and how many it stores",
          signature="state_sizes(num_features, affine, track_running_stats) -> "
                    "(learnable, buffer_values)")
def _check_state_sizes(state_sizes: Callable[..., Any]) -> str:
    for c, affine, track in [(3, True, True), (64, True, True), (3, False, True),
                             (3, True, False), (5, False, False)]:
        call = f"state_sizes({c}, affine={affine}, track_running_stats={track})"
        got = _unpack(call, state_sizes(c, affine, track), ("learnable", "buffer_values"))
        try:
            got = tuple(int(v) for v in got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{call} should return two integers, got {got!r}") from None
        right = (2 * c if affine else 0, 2 * c + 1 if track else 0)
        if got == right:
            continue
        as_parameters = (right[0] + (2 * c if track else 0), 1 if track else 0)
        causes = [  # in this order: the cases before this one passed
            ((2 * c, 2 * c + 1), "affine=False has no weight and bias and "
                                 "track_running_stats=False no buffers (they are None)"),
            (as_parameters, "running_mean and running_var counted as learnable: they are "
                            "buffers, updated by the forward pass, never by the optimizer"),
            ((as_parameters[0], right[1]), "running_mean and running_var counted as learnable "
                                           "(and as buffers): they are buffers only"),
            ((right[0], 2 * c if track else 0), "num_batches_tracked forgotten: a third buffer, "
                                                "one int64 that counts the training batches"),
            ((2 if affine else 0, 3 if track else 0), "tensors counted, not numbers: weight and "
                                                      "bias hold C numbers each"),
        ]
        message = f"{call} = {got}, expected {right}."
        for answer, cause in causes:
            if got == answer:
                message += f" Likely cause: {cause}."
                break
        raise CheckFailed(message)
    return "2*C learnable numbers with affine=True; 2*C + 1 buffer values with tracking"


def running_stats_cases() -> list[dict[str, Any]]:
    """Batches for the running-statistics exercises: small (m and m - 1 differ), running
    statistics far from the batch's (so either momentum convention shows), (N, C) and
    (N, C, L), a fixed momentum and momentum=None after a few batches and on the first one."""
    cases = []
    for seed, shape, momentum, tracked in [(40, (4, 3), 0.1, 1), (41, (3, 2, 4), 0.3, 5),
                                           (42, (5, 3), None, 3), (43, (3, 2, 2), None, 1)]:
        rng = _rng(seed)
        c = shape[1]
        x = rng.normal(loc=rng.uniform(-3, 3, size=c).reshape(numpy_bn.channel_shape(len(shape))),
                       scale=rng.uniform(0.5, 2.0, size=c).reshape(numpy_bn.channel_shape(len(shape))),
                       size=shape)
        cases.append(dict(x=x, running_mean=rng.uniform(-1, 1, size=c),
                          running_var=rng.uniform(0.5, 3.0, size=c), momentum=momentum,
                          num_batches_tracked=tracked))
    return cases


@exercise("running-stats-update", chapter="04_running_stats",
          title="One update of the running statistics",
          signature="update_running_stats(running_mean, running_var, x, momentum, "
                    "num_batches_tracked) -> (new_mean, new_var), float64 tensors")
def _check_running_stats_update(update_running_stats: Callable[..., Any]) -> str:
    for case in running_stats_cases():
        x, rm, rv = case["x"], case["running_mean"], case["running_var"]
        momentum, tracked = case["momentum"], case["num_batches_tracked"]
        name = (f"update_running_stats for x of shape {mis.tuple_text(x.shape)}, momentum={momentum}, "
                f"num_batches_tracked={tracked}")
        result = update_running_stats(_tensor(rm), _tensor(rv), _tensor(x), momentum, tracked)
        got_mean, got_var = _unpack(name, result, ("new_mean", "new_var"))
        mean, var = numpy_bn.batch_stats(x)
        factor = 1.0 / tracked if momentum is None else momentum
        exp_mean, exp_var = numpy_bn.update_running_stats(
            rm, rv, mean, var, numpy_bn.num_per_channel(x.shape), factor, tracked)
        wrong = mis.running_stats_mistakes(rm, rv, x, momentum, tracked)
        compare(f"the running mean from {name}", _numpy("new_mean", got_mean), exp_mean,
                mistakes=_part(wrong, 0))
        compare(f"the running variance from {name}", _numpy("new_var", got_var), exp_var,
                mistakes=_part(wrong, 1))
    return ("running = (1 - momentum) * running + momentum * batch, unbiased variance, "
            "momentum=None as a cumulative average")


@exercise("batchnorm-modes", chapter="04_running_stats",
          title="BatchNorm in training and in evaluation mode",
          signature="batch_norm(x, running_mean, running_var, weight, bias, training, "
                    "momentum=0.1, eps=1e-5) -> out, updating the running statistics in place")
def _check_batchnorm_modes(batch_norm: Callable[..., Any]) -> str:
    for case in running_stats_cases()[:2]:
        x, rm, rv, momentum = case["x"], case["running_mean"], case["running_var"], case["momentum"]
        rng = _rng(44)
        c = x.shape[1]
        # a low-variance channel, in the batch and in the running statistics: eps matters
        x[:, -1] = 0.5 + 0.01 * rng.normal(size=x[:, -1].shape)
        rm[-1], rv[-1] = 0.5, 1e-4
        gamma, beta = rng.uniform(0.5, 2.0, size=c), rng.uniform(-1.0, 1.0, size=c)
        m = numpy_bn.num_per_channel(x.shape)
        trained, _ = numpy_bn.forward_train(x, gamma, beta, 1e-5)
        evaluated = numpy_bn.forward_eval(x, rm, rv, gamma, beta, 1e-5)
        new_mean, new_var = numpy_bn.update_running_stats(
            rm, rv, *numpy_bn.batch_stats(x), m, momentum, 1)
        for training in (True, False):
            mode = "training" if training else "evaluation"
            name = f"batch_norm in {mode} mode for x of shape {mis.tuple_text(x.shape)}"
            rm_t, rv_t = _tensor(rm), _tensor(rv)
            out = batch_norm(_tensor(x), rm_t, rv_t, _tensor(gamma), _tensor(beta), training,
                             momentum=momentum, eps=1e-5)
            if training:
                mistakes = {mis.RUNNING_STATS_IN_TRAINING: evaluated,
                            mis.RUNNING_STATS_IN_TRAINING + " (here the freshly updated ones)":
                                numpy_bn.forward_eval(x, new_mean, new_var, gamma, beta, 1e-5),
                            **mis.forward_mistakes(x, gamma, beta, 1e-5)}
                compare(f"the output of {name}", _numpy("out", out), trained, mistakes=mistakes)
                if np.array_equal(rm_t.numpy(), rm) and np.array_equal(rv_t.numpy(), rv):
                    raise CheckFailed(
                        f"{name} left running_mean and running_var unchanged: update them in "
                        f"place (running_mean.mul_(1 - momentum).add_(momentum * mean), or "
                        f"running_mean.copy_(...)); `running_mean = ...` only rebinds a local "
                        f"name, the caller's tensor stays as it was")
                wrong = mis.running_stats_mistakes(rm, rv, x, momentum, 1)
                compare(f"running_mean after {name}", rm_t, new_mean,
                        mistakes=_part(wrong, 0))
                compare(f"running_var after {name}", rv_t, new_var,
                        mistakes=_part(wrong, 1))
            else:
                compare(f"the output of {name}", _numpy("out", out), evaluated,
                        mistakes=mis.eval_mistakes(x, rm, rv, gamma, beta, 1e-5))
                if not (np.array_equal(rm_t.numpy(), rm) and np.array_equal(rv_t.numpy(), rv)):
                    raise CheckFailed(
                        f"{name} changed running_mean or running_var: in evaluation mode they "
                        f"are read, never updated. Likely cause: {mis.BATCH_STATS_IN_EVAL}.")
    return "batch statistics and an in-place update in training, running statistics in evaluation"


# --------------------------------------------------------------------------------------------
# Chapter 5: an autograd.Function with the closed-form backward; the module's forward
# --------------------------------------------------------------------------------------------
@exercise("autograd-function", chapter="05_pytorch_module",
          title="BatchNorm as a torch.autograd.Function",
          signature="BatchNormTrain(torch.autograd.Function): forward(ctx, x, weight, bias, "
                    "eps) and backward(ctx, grad_output) -> (dx, dweight, dbias, None)")
def _check_autograd_function(candidate: Callable[..., Any]) -> str:
    import torch

    is_function = isinstance(candidate, type) and issubclass(candidate, torch.autograd.Function)
    apply = candidate.apply if is_function else candidate
    for case in backward_cases() + forward_cases()[2:3]:
        x, gamma, eps = case["x"], case["gamma"], case["eps"]
        beta = case.get("beta", _rng(45).uniform(-1, 1, size=gamma.shape))
        dout = case.get("dout", _rng(46).normal(size=x.shape))
        name = f"BatchNormTrain for x of shape {mis.tuple_text(x.shape)}"
        xt, gt, bt = (_tensor(a).requires_grad_() for a in (x, gamma, beta))
        out = apply(xt, gt, bt, eps)
        expected, cache = numpy_bn.forward_train(x, gamma, beta, eps)
        compare(f"the output of {name}", _numpy("output", out), expected,
                mistakes=mis.forward_mistakes(x, gamma, beta, eps))
        node = type(out.grad_fn).__name__ if out.grad_fn is not None else None
        if node != f"{getattr(candidate, '__name__', '?')}Backward":
            raise CheckFailed(
                f"the output of {name} has grad_fn {node}: autograd recorded the forward's "
                f"operations instead of one node of your Function. Write a subclass of "
                f"torch.autograd.Function, call it with .apply, and pass the class to check")
        try:
            dx, dgamma, dbeta = torch.autograd.grad(out, (xt, gt, bt), _tensor(dout),
                                                    allow_unused=True)
        except RuntimeError as error:
            hint = ""
            if "incorrect number of gradients" in str(error):
                hint = (" Likely cause: backward returns one gradient per input of forward, in "
                        "order: (dx, dweight, dbias, None), None for eps.")
            raise CheckFailed(f"backward of {name} raised RuntimeError: {error}{hint}") from None
        exp_dx, exp_dgamma, exp_dbeta = numpy_bn.backward(dout, cache)
        for label, got, right, other in [("dbias", dbeta, exp_dbeta, exp_dgamma),
                                         ("dweight", dgamma, exp_dgamma, exp_dbeta)]:
            if got is None:
                raise CheckFailed(f"{label} from {name} is None: return the gradient of every "
                                  f"tensor input")
            compare(f"{label} from {name}", _numpy(label, got), right,
                    mistakes={"dweight and dbias swapped: return (dx, dweight, dbias, None) in "
                              "the order of forward's inputs": other})
        if dx is None:
            raise CheckFailed(f"dx from {name} is None: return the gradient of every tensor input")
        compare(f"dx from {name}", _numpy("dx", dx), exp_dx,
                mistakes=mis.backward_mistakes(dout, x, gamma, eps))
    return "training forward and closed-form backward in one autograd node, (N, C) to (N, C, H, W)"


# The module-forward exercise walks these configurations through training and evaluation
# steps (True = module.train(), False = module.eval()); each starts from random parameters
# and running statistics, momentum=None after two batches already counted.
MODULE_SCRIPT: list[tuple[dict[str, Any], list[bool]]] = [
    (dict(momentum=0.1), [True, True, False, True]),
    (dict(momentum=None), [True, True, False, True]),
    (dict(momentum=0.3, track_running_stats=False), [True, False]),
    (dict(momentum=0.5, affine=False), [True, False]),
]


def _module_hint(error: Exception) -> str:
    text = str(error)
    if isinstance(error, TypeError) and "momentum" in text and "NoneType" in text:
        return (" Likely cause: momentum=None reached batch_norm; the module turns it into "
                "1 / num_batches_tracked (a cumulative average).")
    if isinstance(error, ZeroDivisionError):
        return f" Likely cause: {mis.NONE_COUNT_BEFORE_BATCH}."
    if "must be defined in evaluation mode" in text:
        return (" Likely cause: without running statistics (track_running_stats=False) "
                "evaluation normalizes with the batch's statistics: pass training=True when "
                "running_mean is None.")
    return ""


@exercise("module-forward", chapter="05_pytorch_module",
          title="The forward of nn.BatchNorm: which statistics, which momentum",
          signature="module_forward(module, x) -> out, using torch_bn.batch_norm and updating "
                    "module's buffers like nn.BatchNorm*d")
def _check_module_forward(module_forward: Callable[..., Any]) -> str:
    import copy

    import torch

    from . import torch_bn

    steps = 0
    for index, (options, modes) in enumerate(MODULE_SCRIPT):
        generator = torch.Generator().manual_seed(50 + index)
        module = torch_bn.BatchNorm1d(3, dtype=torch.float64, **options)
        with torch.no_grad():
            if module.affine:
                module.weight.uniform_(0.5, 2.0, generator=generator)
                module.bias.uniform_(-1.0, 1.0, generator=generator)
            if module.track_running_stats:
                module.running_mean.uniform_(-1.0, 1.0, generator=generator)
                module.running_var.uniform_(0.5, 3.0, generator=generator)
                module.num_batches_tracked.fill_(2)
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        for training in modes:
            steps += 1
            module.train(training)
            x = (torch.randn(3, 3, 2, generator=generator, dtype=torch.float64) * 2
                 + torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64).view(1, 3, 1))
            mode = "training" if training else "evaluation"
            name = f"module_forward for BatchNorm1d(3, {described}) in {mode} mode (step {steps})"
            reference = copy.deepcopy(module)
            mistakes = mis.module_forward_mistakes(module, x)
            with torch.no_grad():
                expected = reference(x)
            try:
                out = module_forward(module, x.clone())
            except NotImplementedError:
                raise
            except (TypeError, ZeroDivisionError, RuntimeError, ValueError) as error:
                raise CheckFailed(f"{name} raised {type(error).__name__}: {error}"
                                  f"{_module_hint(error)}") from None
            got = {"num_batches_tracked": module.num_batches_tracked,
                   "running_mean": module.running_mean, "running_var": module.running_var}
            wanted = {"num_batches_tracked": reference.num_batches_tracked,
                      "running_mean": reference.running_mean, "running_var": reference.running_var}
            compare(f"the output of {name}", _numpy("out", out), expected.detach().numpy(),
                    mistakes=_part(mistakes, 0))
            for slot, key in [(3, "num_batches_tracked"), (1, "running_mean"), (2, "running_var")]:
                if wanted[key] is None:
                    continue
                compare(f"{key} after {name}", np.atleast_1d(_numpy(key, got[key])),
                        np.atleast_1d(_numpy(key, wanted[key])), check_dtype=False,
                        mistakes={cause: np.atleast_1d(np.asarray(answer[slot], dtype=np.float64))
                                  for cause, answer in mistakes.items()})
    return ("momentum=None, train/eval and track_running_stats handled like nn.BatchNorm1d "
            f"over {steps} steps")


# --------------------------------------------------------------------------------------------
# Chapter 6: the identity-recovery argument
# --------------------------------------------------------------------------------------------
def _pair(name: str, result: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    first, second = _unpack(name, result, names)
    return as_array(f"{names[0]} from {name}", first), as_array(f"{names[1]} from {name}", second)


@exercise("identity-params", chapter="06_identity_recovery",
          title="Parameters that make eval mode the identity",
          signature="identity_params(running_mean, running_var, eps=1e-5) -> (gamma, beta), each (C,)")
def _check_identity_params(identity_params: Callable[..., Any]) -> str:
    # One low-variance channel (1e-4): there sqrt(var) and sqrt(var + eps) differ by 5%.
    running_mean = np.array([2.0, -1.5, 0.3, 10.0, 0.0])
    running_var = np.array([4.0, 0.25, 1e-4, 9.0, 1.0])
    x = _rng(60).normal(size=(7, 5)) * np.sqrt(running_var) + running_mean
    for eps in (1e-5, 1e-3):
        name = f"identity_params(running_mean, running_var, eps={eps:g})"
        gamma, beta = _pair(name, identity_params(running_mean.copy(), running_var.copy(), eps=eps),
                            ("gamma", "beta"))
        compare(f"gamma from {name}", gamma, np.sqrt(running_var + eps),
                mistakes=mis.identity_params_mistakes(running_mean, running_var, eps))
        compare(f"beta from {name}", beta, running_mean,
                mistakes=mis.identity_beta_mistakes(running_mean, running_var, eps))
        out = numpy_bn.forward_eval(x, running_mean, running_var, gamma, beta, eps)
        compare(f"eval-mode BatchNorm with your gamma and beta (eps={eps:g}) on a batch x", out, x)
    return "eval-mode BatchNorm with these gamma, beta returns its input, for eps = 1e-5 and 1e-3"


@exercise("samuelson-bound", chapter="06_identity_recovery",
          title="Samuelson's bound for either standard deviation",
          signature="samuelson_bound(m, ddof=0) -> float")
def _check_samuelson_bound(samuelson_bound: Callable[..., Any]) -> str:
    for ddof in (0, 1):
        for m in (3, 5, 10, 100, 2):  # m = 2 last: there sqrt(m - 1) = m - 1 hides mistakes
            # The bound is reached by one value away from m - 1 equal ones: compute it that way.
            batch = np.r_[np.zeros(m - 1), 1.0]
            reached = np.abs(batch - batch.mean()).max() / batch.std(ddof=ddof)
            compare_number(f"samuelson_bound({m}, ddof={ddof})", samuelson_bound(m, ddof=ddof),
                           float(reached), mistakes=mis.samuelson_bound_mistakes(m, ddof))
    return "sqrt(m - 1) for the biased std, (m - 1) / sqrt(m) for the unbiased one"


@exercise("output-range", chapter="06_identity_recovery",
          title="Stretch the output onto any range",
          signature="range_params(x, low, high, eps=1e-5) -> (gamma, beta), each (C,)")
def _check_output_range(range_params: Callable[..., Any]) -> str:
    low = np.array([-1.0, 0.0, 10.0])
    high = np.array([1.0, 250.0, 10.5])
    for case in forward_cases()[:2]:  # (6, 4) and (4, 3, 5); the last channel has variance ~1e-4
        x = case["x"][:, [0, 1, -1]]
        name = f"range_params(x, low, high) for x of shape {mis.tuple_text(x.shape)}"
        gamma, beta = _pair(name, range_params(x.copy(), low.copy(), high.copy(), eps=1e-5),
                            ("gamma", "beta"))
        for label, value in (("gamma", gamma), ("beta", beta)):
            if value.shape != (3,):
                raise CheckFailed(f"{label} from {name} has shape {value.shape}, expected (3,): "
                                  f"one value per channel")
        got = mis.output_range(x, gamma, beta, 1e-5)
        compare(f"the (min, max) of each channel of BatchNorm's output with {name}", got,
                np.stack([low, high]), mistakes=mis.output_range_mistakes(x, low, high, 1e-5))
    return "training-mode BatchNorm maps each channel onto exactly [low, high]"


# --------------------------------------------------------------------------------------------
# Chapter 7: BatchNorm in training
# --------------------------------------------------------------------------------------------
@exercise("values-per-statistic", chapter="07_bn_in_training",
          title="How many values behind each statistic?",
          signature="values_per_statistic(norm, shape, groups=1) -> int, norm in 'batch', 'layer', 'group'")
def _check_values_per_statistic(values_per_statistic: Callable[..., Any]) -> str:
    cases = [("batch", (2, 64), 1, 2), ("batch", (2, 8, 8, 8), 1, 128), ("batch", (5, 3, 7), 1, 35),
             ("layer", (2, 64), 1, 64), ("layer", (4, 16, 4, 4), 1, 256),
             ("group", (2, 64), 4, 16), ("group", (3, 16, 4, 4), 4, 64), ("group", (8, 6, 5), 2, 15)]
    for norm, shape, groups, right in cases:
        compare_number(f"values_per_statistic({norm!r}, {shape}, groups={groups})",
                       values_per_statistic(norm, shape, groups=groups), right, rtol=0.0,
                       mistakes=mis.values_per_statistic_mistakes(norm, shape, groups))
    return "m for BatchNorm, LayerNorm and GroupNorm on (N, C), (N, C, L) and (N, C, H, W) inputs"


@exercise("freeze-batchnorm", chapter="07_bn_in_training", title="Freeze the BatchNorm layers",
          signature="freeze_batchnorm(model) -> None or model (changes model in place)")
def _check_freeze_batchnorm(freeze_batchnorm: Callable[..., Any]) -> str:
    import torch

    with torch.random.fork_rng(devices=[]):  # the learner's random state is left as it was
        torch.manual_seed(0)
        return _freeze_batchnorm_checked(freeze_batchnorm)


def _freeze_batchnorm_checked(freeze_batchnorm: Callable[..., Any]) -> str:
    """The checks of ``freeze-batchnorm`` on a small conv + linear model with Dropout."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2),
    )
    norms = {"BatchNorm2d": model[1], "BatchNorm1d": model[5]}
    others = {"Conv2d": model[0], "Linear": model[4]}
    model.train()
    freeze_batchnorm(model)
    for name, layer in norms.items():
        if layer.training:
            raise CheckFailed(
                f"the {name} layer is still in training mode, so it normalizes with batch "
                f"statistics and keeps updating its running statistics: call .eval() on every "
                f"BatchNorm layer (BatchNorm1d, 2d and 3d)")
        if any(p.requires_grad for p in layer.parameters()):
            raise CheckFailed(
                f"gamma and beta of the {name} layer still get gradients, so fine-tuning "
                f"changes them: eval mode only affects the statistics; also set requires_grad "
                f"to False on its parameters")
    if not model[7].training:
        raise CheckFailed("the Dropout layer is in eval mode too: freeze only the BatchNorm "
                          "layers, not the whole model (model.eval() switches every layer)")
    for name, layer in others.items():
        if not all(p.requires_grad for p in layer.parameters()):
            raise CheckFailed(f"the {name} layer no longer gets gradients: freeze only the "
                              f"BatchNorm layers")
    # A fine-tuning step: the frozen layers must come out exactly as they went in.
    saved = {name: {k: v.clone() for k, v in layer.state_dict().items()} for name, layer in norms.items()}
    weight_before = model[4].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 1, 4, 4) * 3 + 1
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, layer in norms.items():
        for key, value in layer.state_dict().items():
            if not torch.equal(value, saved[name][key]):
                raise CheckFailed(f"{name}.{key} changed during a fine-tuning step")
    if torch.equal(model[4].weight, weight_before):
        raise CheckFailed("a fine-tuning step no longer changes the Linear layer's weight")
    return "BatchNorm1d/2d layers in eval mode with frozen gamma and beta; other layers still train"


# --------------------------------------------------------------------------------------------
# Chapter 9: beyond one device and beyond BatchNorm
# --------------------------------------------------------------------------------------------
def _merge_cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-process ``(counts, means, m2s)`` made from real data, one case with an empty process."""
    cases = []
    for seed, counts in [(70, [2, 5, 3]), (71, [4, 0, 6, 1])]:
        rng = _rng(seed)
        parts = [rng.normal(loc=rng.uniform(-5, 5), scale=rng.uniform(0.5, 2), size=(n, 3)) for n in counts]
        means = np.array([p.mean(0) if len(p) else np.zeros(3) for p in parts])
        m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(3) for p in parts])
        cases.append((np.array(counts, dtype=np.float64), means, m2s))
    return cases


@exercise("chan-merge", chapter="09_beyond_one_device",
          title="Merge per-process statistics with Chan's formula",
          signature="merge_stats(counts, means, m2s) -> (count, mean, m2); counts (P,), means and m2s (P, C)")
def _check_chan_merge(merge_stats: Callable[..., Any]) -> str:
    for counts, means, m2s in _merge_cases():
        name = f"merge_stats for counts {counts.astype(int).tolist()}"
        count, mean, m2 = _unpack(name, merge_stats(counts.copy(), means.copy(), m2s.copy()),
                                  ("count", "mean", "m2"))
        total = counts.sum()
        exp_mean = (counts[:, None] * means).sum(0) / total
        exp_m2 = m2s.sum(0) + (counts[:, None] * (means - exp_mean) ** 2).sum(0)
        wrong = mis.merge_stats_mistakes(counts, means, m2s)
        compare_number(f"the count from {name}", count, float(total), rtol=0, mistakes=wrong["count"])
        compare(f"the mean from {name}", mean, exp_mean, mistakes=wrong["mean"])
        compare(f"M2 from {name}", m2, exp_m2, mistakes=wrong["m2"])
    return "count, mean and M2 of the union, also with a process that holds no values"


def _fold_cases() -> list[dict[str, np.ndarray]]:
    """A square Linear (so a wrong axis does not fail by shape alone) and a Conv2d weight."""
    cases = []
    for seed, shape in [(72, (4, 4)), (73, (4, 3, 3, 3))]:
        rng = _rng(seed)
        out = shape[0]
        cases.append(dict(weight=rng.normal(size=shape), bias=rng.normal(size=out),
                          running_mean=rng.normal(size=out) * 2,
                          running_var=np.array([4.0, 0.25, 1e-4, 1.0]),  # 1e-4: eps matters
                          gamma=rng.uniform(0.5, 2.0, size=out), beta=rng.normal(size=out)))
    return cases


@exercise("fold-batchnorm", chapter="09_beyond_one_device",
          title="Fold BatchNorm into the layer before it",
          signature="fold_bn(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5) -> (weight, bias)")
def _check_fold_batchnorm(fold_bn: Callable[..., Any]) -> str:
    for case in _fold_cases():
        name = f"fold_bn for a weight of shape {mis.tuple_text(case['weight'].shape)}"
        copies = {k: v.copy() for k, v in case.items()}
        weight, bias = _unpack(name, fold_bn(**copies, eps=1e-5), ("weight", "bias"))
        a = case["gamma"] / np.sqrt(case["running_var"] + 1e-5)
        exp_weight = case["weight"] * a.reshape((-1,) + (1,) * (case["weight"].ndim - 1))
        exp_bias = a * (case["bias"] - case["running_mean"]) + case["beta"]
        wrong = mis.fold_mistakes(**case, eps=1e-5)
        compare(f"the weight from {name}", weight, exp_weight, mistakes=wrong["weight"])
        compare(f"the bias from {name}", bias, exp_bias, mistakes=wrong["bias"])
    return "one scale per output channel, bias a * (b - running_mean) + beta, for Linear and Conv2d weights"


@exercise("group-norm", chapter="09_beyond_one_device", title="GroupNorm in NumPy",
          signature="group_norm(x, groups, eps=1e-5) -> array shaped like x, for x of shape (N, C, *spatial)")
def _check_group_norm(group_norm: Callable[..., Any]) -> str:
    cases = [(74, (3, 6, 4), 2), (75, (2, 4, 3, 3), 2), (76, (2, 6, 5), 3), (77, (2, 4, 3), 1), (78, (2, 4, 3), 4)]
    for seed, shape, groups in cases:
        rng = _rng(seed)
        x = rng.normal(size=shape) * rng.uniform(0.5, 3, size=(1, shape[1]) + (1,) * (len(shape) - 2)) \
            + rng.uniform(-3, 3, size=(1, shape[1]) + (1,) * (len(shape) - 2))
        name = f"group_norm(x, groups={groups}) for x of shape {mis.tuple_text(shape)}"
        got = group_norm(x.copy(), groups, eps=1e-5)
        n, c = shape[:2]
        view = x.reshape(n, groups, c // groups, *shape[2:])
        expected = mis.normalize_over(view, tuple(range(2, view.ndim)), 1e-5).reshape(shape)
        compare(name, got, expected, mistakes=mis.group_norm_mistakes(x, groups, 1e-5))
    return "statistics per sample and group of C // G neighbouring channels; 1 group = LayerNorm, C groups = InstanceNorm"


# --------------------------------------------------------------------------------------------
# Chapter 8: BatchNorm on the GPU
# --------------------------------------------------------------------------------------------
@exercise("bn-bytes", chapter="08_gpu_triton", title="Bytes a BatchNorm layer moves in training",
          signature="bn_bytes(shape, itemsize) -> (forward_bytes, backward_bytes)")
def _check_bn_bytes(bn_bytes: Callable[..., Any]) -> str:
    for shape, itemsize in [((256, 64, 56, 56), 4), ((65536, 256), 4), ((32, 128, 28, 28), 2),
                            ((8, 3, 5), 2)]:
        name = f"bn_bytes({mis.tuple_text(shape)}, itemsize={itemsize})"
        forward, backward = _unpack(name, bn_bytes(shape, itemsize), ("forward_bytes", "backward_bytes"))
        size = math.prod(shape) * itemsize
        wrong = mis.bn_bytes_mistakes(shape, itemsize)
        compare_number(f"the forward's bytes from {name}", forward, 3 * size, rtol=0,
                       mistakes=wrong["forward"])
        compare_number(f"the backward's bytes from {name}", backward, 5 * size, rtol=0,
                       mistakes=wrong["backward"])
    return "forward 2 reads + 1 write, backward 4 reads + 1 write of N * C * (spatial) values of itemsize bytes"


@exercise("welford-update", chapter="08_gpu_triton",
          title="Welford's update: one more value into (count, mean, M2)",
          signature="welford_update(count, mean, m2, x) -> (count, mean, m2); mean, m2 and x of shape (C,)")
def _check_welford_update(welford_update: Callable[..., Any]) -> str:
    rng = _rng(80)
    values = rng.normal(loc=[5.0, -3.0, 1e4], scale=[2.0, 0.5, 1.0], size=(9, 3))
    # Later steps first: from an empty or one-value start several mistakes coincide (with
    # count 0, x^2 is (x - mean)^2), so a wrong update is named where they differ.
    for i in [*range(3, len(values)), 0, 1, 2]:
        seen = values[:i]
        count = i
        mean = seen.mean(0) if i else np.zeros(3)
        m2 = ((seen - mean) ** 2).sum(0) if i else np.zeros(3)
        x = values[i]
        name = f"welford_update after {i} value{'s' if i != 1 else ''}"
        result = welford_update(count, mean.copy(), m2.copy(), x.copy())
        new_count, new_mean, new_m2 = _unpack(name, result, ("count", "mean", "m2"))
        whole = values[: i + 1]
        wrong = mis.welford_mistakes(count, mean, m2, x)
        compare_number(f"the count from {name}", new_count, float(i + 1), rtol=0, mistakes=wrong["count"])
        compare(f"the mean from {name}", new_mean, whole.mean(0), rtol=1e-9, atol=1e-9,
                mistakes=wrong["mean"])
        compare(f"M2 from {name}", new_m2, ((whole - whole.mean(0)) ** 2).sum(0), rtol=1e-7,
                atol=1e-9, mistakes=wrong["m2"])
    return "count, mean and M2 after every value, from an empty start, also for a channel near 1e4"


@exercise("tile-partials", chapter="08_gpu_triton", title="Per-tile partial statistics",
          signature="tile_partials(values, tile) -> (counts, means, m2s), each of shape (T,), "
                    "T = ceil(len(values) / tile)")
def _check_tile_partials(tile_partials: Callable[..., Any]) -> str:
    rng = _rng(81)
    for n, tile in [(23, 5), (16, 4), (7, 10), (30, 7)]:
        values = rng.normal(loc=3.0, scale=2.0, size=n) + np.repeat(rng.uniform(-4, 4, size=-(-n // tile)), tile)[:n]
        name = f"tile_partials(values of length {n}, tile={tile})"
        counts, means, m2s = _unpack(name, tile_partials(values.copy(), tile), ("counts", "means", "m2s"))
        tiles = [values[i:i + tile] for i in range(0, n, tile)]
        wrong = mis.tile_partials_mistakes(values, tile)
        compare(f"the counts from {name}", counts, np.array([len(t) for t in tiles], dtype=float),
                mistakes=wrong["counts"], check_dtype=False)
        compare(f"the means from {name}", means, np.array([t.mean() for t in tiles]),
                mistakes=wrong["means"], check_dtype=False)
        compare(f"the M2s from {name}", m2s, np.array([((t - t.mean()) ** 2).sum() for t in tiles]),
                mistakes=wrong["m2s"], check_dtype=False)
    return "count, mean and M2 of every tile, the last one shorter when len(values) % tile != 0"

