"""Chapter 6, what BatchNorm buys you: identity parameters, Samuelson's bound, any output range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy_bn
from ..conventions import normalize_over, reduce_axes
from .base import (
    CheckFailed,
    Mistakes,
    as_array,
    compare,
    compare_number,
    compare_prediction,
    exercise,
    prediction,
    rng,
    tuple_text,
    unpack,
)
from .ch02 import forward_cases

CHAPTER = "06_identity_recovery"


def pair(name: str, result: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays returned as a tuple, e.g. ``(gamma, beta)``."""
    first, second = unpack(name, result, names)
    return as_array(f"{names[0]} from {name}", first), as_array(f"{names[1]} from {name}", second)


# --------------------------------------------------------------------------------------------
# identity_params: gamma and beta that make eval-mode BatchNorm the identity
# --------------------------------------------------------------------------------------------
GAMMA, BETA = Mistakes(), Mistakes()  # arguments: (running_mean, running_var, eps)


@GAMMA.add(
    "eps missing: gamma = sqrt(running_var) only shrinks the output by sqrt(var / (var + "
    "eps)); eval mode divides by sqrt(running_var + eps), so gamma must be exactly that"
)
def gamma_without_eps(running_mean, running_var, eps):
    return np.sqrt(running_var)


@GAMMA.add("gamma and beta swapped: gamma scales (a standard deviation), beta shifts (a mean)")
def gamma_as_the_mean(running_mean, running_var, eps):
    return running_mean


@GAMMA.add("gamma should be a standard deviation, sqrt(running_var + eps), not a variance")
def gamma_as_a_variance(running_mean, running_var, eps):
    return running_var + eps


@GAMMA.add(
    "gamma is the inverse of what it should be: BatchNorm divides by sqrt(running_var + "
    "eps), so gamma multiplies by it"
)
def gamma_inverted(running_mean, running_var, eps):
    return 1.0 / np.sqrt(running_var + eps)


@GAMMA.family
def gamma_with_eps_fixed_at_1e_5(running_mean, running_var, eps):
    if eps != 1e-5:  # (with eps = 1e-5 it is the right answer)
        yield (
            f"the eps argument is ignored (1e-5 used instead of eps={eps:g})",
            np.sqrt(running_var + 1e-5),
        )


@BETA.add(
    "gamma and beta swapped: beta shifts back by the mean, gamma scales by the standard deviation"
)
def beta_as_the_standard_deviation(running_mean, running_var, eps):
    return np.sqrt(running_var + eps)


@BETA.add(
    "beta has the wrong sign: BatchNorm subtracts running_mean, and y = gamma * xhat + beta "
    "adds beta, so beta = +running_mean"
)
def beta_negated(running_mean, running_var, eps):
    return -running_mean


@BETA.add("beta = 0 does not put the mean back")
def beta_zero(running_mean, running_var, eps):
    return np.zeros_like(running_mean)


@exercise(
    "identity-params",
    chapter=CHAPTER,
    title="Parameters that make eval mode the identity",
    signature="identity_params(running_mean, running_var, eps=1e-5) -> (gamma, beta), each (C,)",
)
def check_identity_params(identity_params: Callable[..., Any]) -> str:
    # One low-variance channel (1e-4): there sqrt(var) and sqrt(var + eps) differ by 5%.
    running_mean = np.array([2.0, -1.5, 0.3, 10.0, 0.0])
    running_var = np.array([4.0, 0.25, 1e-4, 9.0, 1.0])
    x = rng(60).normal(size=(7, 5)) * np.sqrt(running_var) + running_mean
    for eps in (1e-5, 1e-3):
        name = f"identity_params(running_mean, running_var, eps={eps:g})"
        result = identity_params(running_mean.copy(), running_var.copy(), eps=eps)
        gamma, beta = pair(name, result, ("gamma", "beta"))
        compare(
            f"gamma from {name}",
            gamma,
            np.sqrt(running_var + eps),
            mistakes=GAMMA.answers(running_mean, running_var, eps),
        )
        compare(
            f"beta from {name}",
            beta,
            running_mean,
            mistakes=BETA.answers(running_mean, running_var, eps),
        )
        out = numpy_bn.forward_eval(x, running_mean, running_var, gamma, beta, eps)
        compare(f"eval-mode BatchNorm with your gamma and beta (eps={eps:g}) on a batch x", out, x)
    return "eval-mode BatchNorm with these gamma, beta returns its input, for eps = 1e-5 and 1e-3"


# --------------------------------------------------------------------------------------------
# samuelson_bound: the largest |x_i - mean| / std over batches of m, for either std
# --------------------------------------------------------------------------------------------
SAMUELSON = Mistakes()  # arguments: (m, ddof)


@SAMUELSON.add(
    "ddof is ignored: the unbiased std (ddof=1) is larger than the biased one by "
    "sqrt(m / (m - 1)), so the bound is smaller, (m - 1) / sqrt(m)"
)
def ignoring_ddof(m, ddof):
    return float(np.sqrt(m - 1)) if ddof == 1 else None


@SAMUELSON.add(
    "the correction goes the other way: the unbiased std is the larger one, so divide "
    "by sqrt(m / (m - 1)), do not multiply"
)
def correcting_the_wrong_way(m, ddof):
    return float(np.sqrt(m)) if ddof == 1 else None


@SAMUELSON.add(
    "ddof=0 is the biased std (divide by m), whose bound is sqrt(m - 1); "
    "(m - 1) / sqrt(m) belongs to the unbiased std"
)
def the_unbiased_bound_for_the_biased_std(m, ddof):
    return float((m - 1) / np.sqrt(m)) if ddof == 0 else None


@SAMUELSON.add(
    "sqrt(m) is never reached: the other m - 1 values must balance the extreme one, "
    "which gives sqrt(m - 1) for the biased std"
)
def sqrt_m(m, ddof):
    return float(np.sqrt(m)) if ddof == 0 else None


@SAMUELSON.add(
    "m - 1 bounds the squared value, (x_i - mean)^2 / var <= m - 1; take the square root"
)
def the_squared_bound(m, ddof):
    return float(m - 1)


@exercise(
    "samuelson-bound",
    chapter=CHAPTER,
    title="Samuelson's bound for either standard deviation",
    signature="samuelson_bound(m, ddof=0) -> float",
)
def check_samuelson_bound(samuelson_bound: Callable[..., Any]) -> str:
    for ddof in (0, 1):
        for m in (3, 5, 10, 100, 2):  # m = 2 last: there sqrt(m - 1) = m - 1 hides mistakes
            # The bound is reached by one value away from m - 1 equal ones: compute it that way.
            batch = np.r_[np.zeros(m - 1), 1.0]
            reached = np.abs(batch - batch.mean()).max() / batch.std(ddof=ddof)
            compare_number(
                f"samuelson_bound({m}, ddof={ddof})",
                samuelson_bound(m, ddof=ddof),
                float(reached),
                mistakes=SAMUELSON.answers(m, ddof),
            )
    return "sqrt(m - 1) for the biased std, (m - 1) / sqrt(m) for the unbiased one"


# --------------------------------------------------------------------------------------------
# range_params: gamma and beta that stretch each channel's output onto [low, high]
# --------------------------------------------------------------------------------------------
def output_range(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Per-channel ``(min, max)`` of training-mode BatchNorm's output, shape ``(2, C)``."""
    out, _ = numpy_bn.forward_train(x, gamma, beta, eps)
    axes = reduce_axes(x.ndim)
    return np.stack([out.min(axis=axes), out.max(axis=axes)])


def params_for(
    xhat: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(gamma, beta)`` that map the range of ``xhat`` per channel onto ``[low, high]``."""
    axes = reduce_axes(xhat.ndim)
    smallest, largest = xhat.min(axis=axes), xhat.max(axis=axes)
    gamma = (high - low) / (largest - smallest)
    return gamma, low - gamma * smallest


RANGE = Mistakes()  # arguments: (x, low, high, eps); answers: the output range they give


@RANGE.add(
    "gamma and beta were computed from the range of x, not of the normalized xhat; "
    "BatchNorm applies them to xhat"
)
def params_from_the_range_of_x(x, low, high, eps):
    return output_range(x, *params_for(x, low, high), eps)


@RANGE.add(
    "xhat computed with the unbiased variance (ddof=1); BatchNorm normalizes with the biased one"
)
def params_from_an_unbiased_xhat(x, low, high, eps):
    xhat = normalize_over(x, reduce_axes(x.ndim), eps, ddof=1)
    return output_range(x, *params_for(xhat, low, high), eps)


@RANGE.add("eps missing from xhat: BatchNorm divides by sqrt(var + eps)")
def params_from_xhat_without_eps(x, low, high, eps):
    return output_range(x, *params_for(normalize_over(x, reduce_axes(x.ndim), 0.0), low, high), eps)


@RANGE.add("gamma and beta swapped")
def params_swapped(x, low, high, eps):
    gamma, beta = params_for(normalize_over(x, reduce_axes(x.ndim), eps), low, high)
    return output_range(x, beta, gamma, eps)


@exercise(
    "output-range",
    chapter=CHAPTER,
    title="Stretch the output onto any range",
    signature="range_params(x, low, high, eps=1e-5) -> (gamma, beta), each (C,)",
)
def check_output_range(range_params: Callable[..., Any]) -> str:
    low = np.array([-1.0, 0.0, 10.0])
    high = np.array([1.0, 250.0, 10.5])
    for case in forward_cases()[:2]:  # (6, 4) and (4, 3, 5); the last channel has variance ~1e-4
        x = case["x"][:, [0, 1, -1]]
        name = f"range_params(x, low, high) for x of shape {tuple_text(x.shape)}"
        gamma, beta = pair(
            name, range_params(x.copy(), low.copy(), high.copy(), eps=1e-5), ("gamma", "beta")
        )
        for label, value in (("gamma", gamma), ("beta", beta)):
            if value.shape != (3,):
                raise CheckFailed(
                    f"{label} from {name} has shape {value.shape}, expected (3,): "
                    f"one value per channel"
                )
        compare(
            f"the (min, max) of each channel of BatchNorm's output with {name}",
            output_range(x, gamma, beta, 1e-5),
            np.stack([low, high]),
            mistakes=RANGE.answers(x, low, high, 1e-5),
        )
    return "training-mode BatchNorm maps each channel onto exactly [low, high]"


# --------------------------------------------------------------------------------------------
# predict-bias-grad: before the bias before BatchNorm is shown to do nothing
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-bias-grad",
    chapter=CHAPTER,
    title="Predict the gradient of a bias before BatchNorm",
    signature="predicted_bias_grad: a number, the largest |dL/db| of Linear then BatchNorm1d",
)
def check_predict_bias_grad(predicted_bias_grad: Any) -> str:
    # Tolerance 1e-6: the gradient is exactly 0 (float64 leaves about 1e-14), while any
    # number a trained parameter's gradient would have is of order 1 (the weight's is 24).
    got = compare_prediction(
        "predicted_bias_grad",
        predicted_bias_grad,
        0.0,
        tolerance=1e-6,
        otherwise=(
            "BatchNorm subtracts the batch mean, so adding b to a channel leaves its output "
            "unchanged: the loss does not depend on b, and dL/db, the sum of dL/dx over the "
            "batch, is 0 (chapter 3's first identity)"
        ),
    )
    return f"you predicted {got}: a bias before BatchNorm never learns anything"
