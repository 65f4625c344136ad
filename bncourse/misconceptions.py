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
