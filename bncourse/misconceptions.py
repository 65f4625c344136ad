"""Known mistakes, implemented on purpose: what a wrong BatchNorm answer looks like.

Each function returns a dict that maps a learner-facing description of a misconception to the
answer that misconception produces on the given input (an array, or a shape tuple when the
mistake shows as a wrong shape).  :func:`bncourse.checks.compare` names the misconception whose
answer matches the learner's.  The same dicts feed the tests that make sure every checker can
fail, so each mistake here is written once.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from .numpy_bn import channel_shape, forward_train, num_per_channel, reduce_axes

__all__ = [
    "axes_subsets",
    "normalize_over",
    "standardize_mistakes",
    "stats_axes_mistakes",
    "variance_mistakes",
    "forward_mistakes",
    "backward_mistakes",
    "sum_over_batch_only",
    "one_sided_difference",
    "identity_params_mistakes",
    "identity_beta_mistakes",
    "samuelson_bound_mistakes",
    "output_range_mistakes",
    "values_per_statistic_mistakes",
]


def axes_subsets(ndim: int) -> list[tuple[int, ...]]:
    """Every non-empty set of axes of an ``ndim`` array except BatchNorm's own."""
    right = reduce_axes(ndim)
    subsets = []
    for k in range(1, ndim + 1):
        for axes in itertools.combinations(range(ndim), k):
            if axes != right:
                subsets.append(axes)
    return subsets


def _axes_text(axes: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(a) for a in axes) + ")"


def _wrong_axes_cause(ndim: int, axes: tuple[int, ...]) -> str:
    right = reduce_axes(ndim)
    hint = ""
    if 1 in axes:
        hint = "; axis 1 holds the channels, and each channel gets its own statistics"
    elif ndim > 2:
        hint = "; images and sequences share one mean per channel over N and every spatial axis"
    return (f"wrong reduction axes: statistics over axes {_axes_text(axes)} instead of "
            f"{_axes_text(right)}{hint}")


def normalize_over(x: np.ndarray, axes: tuple[int, ...], eps: float, ddof: int = 0) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` with statistics over ``axes`` (any axes, kept dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    return (x - mean) / np.sqrt(var + eps)


def _affine(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    shape = channel_shape(xhat.ndim)
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


def standardize_mistakes(x: np.ndarray) -> dict[str, Any]:
    """Mistakes in z-scoring the columns of a ``(N, C)`` batch."""
    mean = x.mean(axis=0)
    return {
        "unbiased standard deviation (ddof=1); BatchNorm divides by N, not N - 1":
            (x - mean) / x.std(axis=0, ddof=1),
        "statistics per row (axis=1, one per sample, like LayerNorm) instead of per "
        "feature (axis=0)": (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),
        "one mean and std for the whole array instead of one per feature (axis=0)":
            (x - x.mean()) / x.std(),
        "min-max scaling to [0, 1] instead of a z-score":
            (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0)),
        "subtracting the mean without dividing by the standard deviation": x - mean,
    }


def stats_axes_mistakes(x: np.ndarray, statistic: Callable[..., np.ndarray]) -> dict[str, Any]:
    """Per-channel statistics computed over the wrong axes, or returned with kept dims."""
    mistakes: dict[str, Any] = {}
    right = reduce_axes(x.ndim)
    mistakes["the statistics keep the reduced dimensions (keepdims=True); return one value "
              "per channel, shape (C,)"] = statistic(x, axis=right, keepdims=True)
    for axes in axes_subsets(x.ndim):
        mistakes[_wrong_axes_cause(x.ndim, axes)] = statistic(x, axis=axes)
    return mistakes


def variance_mistakes(x: np.ndarray) -> dict[str, Any]:
    """Mistakes in the per-channel variance used for normalization."""
    axes = reduce_axes(x.ndim)
    return {
        "unbiased variance (divide by m - 1); BatchNorm normalizes with the biased variance "
        "(divide by m)": x.var(axis=axes, ddof=1),
        "standard deviation instead of variance": x.std(axis=axes),
    }


def forward_mistakes(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong training-mode forward passes, on input ``x`` with parameters ``(C,)``."""
    axes = reduce_axes(x.ndim)
    m = num_per_channel(x.shape)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    xc = x - mean
    mistakes: dict[str, Any] = {
        f"unbiased variance (divide by m - 1 = {m - 1}); BatchNorm normalizes with the biased "
        f"variance (divide by m = {m})": _affine(normalize_over(x, axes, eps, ddof=1), gamma, beta),
        "eps outside the square root: use (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)":
            _affine(xc / (np.sqrt(var) + eps), gamma, beta),
        "eps missing: divide by sqrt(var + eps), not sqrt(var)": _affine(xc / np.sqrt(var), gamma, beta),
        "gamma and beta swapped: y = gamma * xhat + beta":
            _affine(normalize_over(x, axes, eps), beta, gamma),
        "gamma and beta not applied: return gamma * xhat + beta, not xhat":
            normalize_over(x, axes, eps),
    }
    if eps != 1e-5:
        mistakes[f"the eps argument is ignored (1e-5 used instead of eps={eps:g})"] = _affine(
            normalize_over(x, axes, 1e-5), gamma, beta)
    for wrong in axes_subsets(x.ndim):
        mistakes[_wrong_axes_cause(x.ndim, wrong)] = _affine(normalize_over(x, wrong, eps), gamma, beta)
    return mistakes


def backward_mistakes(
    dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong ``dx`` from the closed form with one of its paths or factors missing."""
    _, cache = forward_train(x, gamma, None, eps)
    shape = channel_shape(x.ndim)
    axes = reduce_axes(x.ndim)
    inv_std = cache.inv_std.reshape(shape)
    g = dout * gamma.reshape(shape)
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_gx = (g * cache.xhat).mean(axis=axes, keepdims=True)
    dout_mean = dout.mean(axis=axes, keepdims=True)
    dout_x = (dout * cache.xhat).mean(axis=axes, keepdims=True)
    return {
        "the mean path is missing (the gradient through mu): the per-channel sum of dx "
        "should be 0": inv_std * (g - cache.xhat * mean_gx),
        "the variance path is missing (the gradient through var): the per-channel sum of "
        "dx * xhat should be 0": inv_std * (g - mean_g),
        "both the mean and the variance paths are missing: dx is not just gamma * dout / "
        "sqrt(var + eps)": inv_std * g,
        "gamma is missing from dx: the gradient reaching xhat is gamma * dout":
            inv_std * (dout - dout_mean - cache.xhat * dout_x),
    }


def sum_over_batch_only(a: np.ndarray) -> np.ndarray:
    """A per-channel sum taken over axis 0 only (shape ``(C, *spatial)``)."""
    return a.sum(axis=0)


def one_sided_difference(f: Callable[[np.ndarray], float], x: np.ndarray, h: float) -> np.ndarray:
    """``(f(x + h e_i) - f(x)) / h`` for every entry ``i``: the forward difference."""
    x = x.astype(np.float64).copy()
    base = f(x)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        grad[index] = (f(x) - base) / h
        x[index] = old
    return grad


# --------------------------------------------------------------------------------------------
# Chapter 6: the identity-recovery argument
# --------------------------------------------------------------------------------------------
def identity_params_mistakes(
    running_mean: np.ndarray, running_var: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong ``gamma`` for eval-mode identity parameters (``beta`` has its own, see below)."""
    mistakes: dict[str, Any] = {
        "eps missing: gamma = sqrt(running_var) only shrinks the output by "
        "sqrt(var / (var + eps)); eval mode divides by sqrt(running_var + eps), so gamma must "
        "be exactly that": np.sqrt(running_var),
        "gamma and beta swapped: gamma scales (a standard deviation), beta shifts (a mean)":
            running_mean,
        "gamma should be a standard deviation, sqrt(running_var + eps), not a variance":
            running_var + eps,
        "gamma is the inverse of what it should be: BatchNorm divides by sqrt(running_var + eps), "
        "so gamma multiplies by it": 1.0 / np.sqrt(running_var + eps),
    }
    if eps != 1e-5:
        mistakes[f"the eps argument is ignored (1e-5 used instead of eps={eps:g})"] = np.sqrt(
            running_var + 1e-5)
    return mistakes


def identity_beta_mistakes(running_mean: np.ndarray, running_var: np.ndarray, eps: float) -> dict[str, Any]:
    """Wrong ``beta`` for eval-mode identity parameters."""
    return {
        "gamma and beta swapped: beta shifts back by the mean, gamma scales by the standard "
        "deviation": np.sqrt(running_var + eps),
        "beta has the wrong sign: BatchNorm subtracts running_mean, and y = gamma * xhat + beta "
        "adds beta, so beta = +running_mean": -running_mean,
        "beta = 0 does not put the mean back": np.zeros_like(running_mean),
    }


def samuelson_bound_mistakes(m: int, ddof: int) -> dict[str, float]:
    """Wrong answers for the largest ``|x_i - mean| / x.std(ddof=ddof)`` over batches of ``m``."""
    biased, unbiased = np.sqrt(m - 1), (m - 1) / np.sqrt(m)
    mistakes: dict[str, float] = {}
    if ddof == 1:
        mistakes["ddof is ignored: the unbiased std (ddof=1) is larger than the biased one by "
                 "sqrt(m / (m - 1)), so the bound is smaller, (m - 1) / sqrt(m)"] = float(biased)
        mistakes["the correction goes the other way: the unbiased std is the larger one, so "
                 "divide by sqrt(m / (m - 1)), do not multiply"] = float(np.sqrt(m))
    else:
        mistakes["ddof=0 is the biased std (divide by m), whose bound is sqrt(m - 1); "
                 "(m - 1) / sqrt(m) belongs to the unbiased std"] = float(unbiased)
        mistakes["sqrt(m) is never reached: the other m - 1 values must balance the extreme "
                 "one, which gives sqrt(m - 1) for the biased std"] = float(np.sqrt(m))
    mistakes["m - 1 bounds the squared value, (x_i - mean)^2 / var <= m - 1; take the square "
             "root"] = float(m - 1)
    return mistakes


def _range_from(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Per-channel ``(min, max)`` of training-mode BatchNorm's output, shape ``(2, C)``."""
    out, _ = forward_train(x, gamma, beta, eps)
    axes = reduce_axes(x.ndim)
    return np.stack([out.min(axis=axes), out.max(axis=axes)])


def output_range_mistakes(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, eps: float
) -> dict[str, Any]:
    """The output range ``(2, C)`` that each wrong ``(gamma, beta)`` gives for ``range_params``."""
    axes = reduce_axes(x.ndim)

    def params(xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        smallest, largest = xhat.min(axis=axes), xhat.max(axis=axes)
        gamma = (high - low) / (largest - smallest)
        return gamma, low - gamma * smallest

    mean = x.mean(axis=axes, keepdims=True)
    wrong = {
        "gamma and beta were computed from the range of x, not of the normalized xhat; "
        "BatchNorm applies them to xhat": params(x),
        "xhat computed with the unbiased variance (ddof=1); BatchNorm normalizes with the "
        "biased one": params((x - mean) / np.sqrt(x.var(axis=axes, keepdims=True, ddof=1) + eps)),
        "eps missing from xhat: BatchNorm divides by sqrt(var + eps)":
            params((x - mean) / np.sqrt(x.var(axis=axes, keepdims=True))),
    }
    mistakes = {cause: _range_from(x, g, b, eps) for cause, (g, b) in wrong.items()}
    right_gamma, right_beta = params(normalize_over(x, axes, eps))
    mistakes["gamma and beta swapped"] = _range_from(x, right_beta, right_gamma, eps)
    return mistakes


# --------------------------------------------------------------------------------------------
# Chapter 7: BatchNorm in training
# --------------------------------------------------------------------------------------------
def values_per_statistic_mistakes(norm: str, shape: tuple[int, ...], groups: int) -> dict[str, int]:
    """Wrong counts of the values behind one mean and variance, for ``norm`` on ``shape``."""
    n, c = shape[0], shape[1]
    positions = int(np.prod(shape[2:]))
    if norm == "batch":
        return {
            "BatchNorm also reduces over every spatial position: m = N * H * W (times any "
            "other spatial axes), not N": n,
            "BatchNorm keeps one statistic per channel: the channels are not pooled, "
            "m = N * H * W, not N * C * H * W": n * c * positions,
        }
    if norm == "layer":
        return {
            "LayerNorm over (C, H, W) also reduces over the spatial positions: m = C * H * W": c,
            "LayerNorm keeps one statistic per sample: the batch is not pooled": n * c * positions,
        }
    return {
        "groups is the number of groups, not the channels per group: a group holds "
        "C // groups channels": groups * positions,
        "the groups were ignored: GroupNorm(groups, C) reduces over C // groups channels": c * positions,
        "GroupNorm keeps statistics per sample: the batch is not pooled": n * (c // groups) * positions,
    }
