"""Chapter 2, BatchNorm in NumPy: per-channel statistics and the training forward pass.

The inputs here (:func:`forward_cases`) and the forward-pass mistakes (:data:`FORWARD`) serve
later chapters too: chapter 4's evaluation mode, chapter 5's autograd.Function, chapter 6.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import numpy_bn
from ..conventions import channel_shape, normalize_over, reduce_axes, values_per_channel
from .base import Mistakes, compare, exercise, first_output, rng, tuple_text, unpack

CHAPTER = "02_numpy_forward"


def forward_cases() -> list[dict[str, Any]]:
    """Inputs for the forward-pass exercises: (N, C), (N, C, L), (N, C, H, W) and float32.

    Each case has a low-variance channel (variance ~1e-4, so eps=1e-5 matters), a small
    batch (so dividing by m or m-1 differs), gamma != beta, and non-default eps in one case.
    """
    cases = []
    for seed, shape, eps in [(0, (6, 4), 1e-5), (1, (4, 3, 5), 1e-5), (2, (3, 2, 4, 3), 1e-3)]:
        generator = rng(seed)
        c = shape[1]
        means = generator.uniform(-2, 2, size=c).reshape(channel_shape(len(shape)))
        x = generator.normal(loc=means, scale=1.0, size=shape)
        x[:, -1] = 0.5 + 0.01 * generator.normal(size=x[:, -1].shape)  # low-variance channel
        gamma = generator.uniform(0.5, 2.0, size=c) * generator.choice([-1, 1], size=c)
        beta = generator.uniform(-1.0, 1.0, size=c)
        cases.append(dict(x=x, gamma=gamma, beta=beta, eps=eps))
    f32 = cases[0]
    cases.append(
        dict(
            x=f32["x"].astype(np.float32),
            gamma=f32["gamma"].astype(np.float32),
            beta=f32["beta"].astype(np.float32),
            eps=1e-5,
        )
    )
    return cases


def wrong_axes(ndim: int) -> Iterator[tuple[tuple[int, ...], str]]:
    """Every non-empty set of axes but BatchNorm's own, with what reducing over it means."""
    right = reduce_axes(ndim)
    for k in range(1, ndim + 1):
        for axes in itertools.combinations(range(ndim), k):
            if axes == right:
                continue
            hint = ""
            if 1 in axes:
                hint = "; axis 1 holds the channels, and each channel gets its own statistics"
            elif ndim > 2:
                hint = (
                    "; images and sequences share one mean per channel over N and every "
                    "spatial axis"
                )
            yield (
                axes,
                (
                    f"wrong reduction axes: statistics over axes {tuple_text(axes)} "
                    f"instead of {tuple_text(right)}{hint}"
                ),
            )


def affine(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``gamma * xhat + beta`` per channel."""
    shape = channel_shape(xhat.ndim)
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


# --------------------------------------------------------------------------------------------
# batch_stats: per-channel mean and biased variance
# --------------------------------------------------------------------------------------------
MEAN, VARIANCE = Mistakes(), Mistakes()


@MEAN.add(
    "the statistics keep the reduced dimensions (keepdims=True); return one value per "
    "channel, shape (C,)"
)
def mean_with_kept_dims(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=reduce_axes(x.ndim), keepdims=True)


@MEAN.family
def mean_over_wrong_axes(x: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    for axes, cause in wrong_axes(x.ndim):
        yield cause, x.mean(axis=axes)


@VARIANCE.add(
    "unbiased variance (divide by m - 1); BatchNorm normalizes with the biased "
    "variance (divide by m)"
)
def unbiased_variance(x: np.ndarray) -> np.ndarray:
    return x.var(axis=reduce_axes(x.ndim), ddof=1)


@VARIANCE.add("standard deviation instead of variance")
def standard_deviation(x: np.ndarray) -> np.ndarray:
    return x.std(axis=reduce_axes(x.ndim))


@VARIANCE.add(
    "the statistics keep the reduced dimensions (keepdims=True); return one value "
    "per channel, shape (C,)"
)
def variance_with_kept_dims(x: np.ndarray) -> np.ndarray:
    return x.var(axis=reduce_axes(x.ndim), keepdims=True)


@VARIANCE.family
def variance_over_wrong_axes(x: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    for axes, cause in wrong_axes(x.ndim):
        yield cause, x.var(axis=axes)


@exercise(
    "numpy-batch-stats",
    chapter=CHAPTER,
    title="Per-channel batch statistics",
    signature="batch_stats(x) -> (mean, var), each of shape (C,), for x of shape (N, C, *spatial)",
)
def check_batch_stats(batch_stats: Callable[..., Any]) -> str:
    for case in forward_cases():
        x = case["x"]
        name = f"batch_stats(x) for x of shape {tuple_text(x.shape)} ({x.dtype})"
        mean, var = unpack(name, batch_stats(x.copy()), ("mean", "var"))
        right_mean, right_var = numpy_bn.batch_stats(x)
        tolerance = dict(rtol=1e-4, atol=1e-6) if x.dtype == np.float32 else {}
        compare(f"the mean from {name}", mean, right_mean, mistakes=MEAN.answers(x), **tolerance)
        compare(
            f"the variance from {name}", var, right_var, mistakes=VARIANCE.answers(x), **tolerance
        )
    return "per-channel mean and biased variance over all axes but 1, for 2-4 dimensions"


# --------------------------------------------------------------------------------------------
# batchnorm_forward: the training forward pass
# --------------------------------------------------------------------------------------------
FORWARD = Mistakes()


@FORWARD.family  # (a family of one, for the numbers in its sentence)
def forward_with_unbiased_variance(x, gamma, beta, eps):
    m = values_per_channel(x.shape)
    yield (
        f"unbiased variance (divide by m - 1 = {m - 1}); BatchNorm normalizes with the biased "
        f"variance (divide by m = {m})",
        affine(normalize_over(x, reduce_axes(x.ndim), eps, ddof=1), gamma, beta),
    )


@FORWARD.add(
    "eps outside the square root: use (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)"
)
def forward_with_eps_outside_the_root(x, gamma, beta, eps):
    axes = reduce_axes(x.ndim)
    centered = x - x.mean(axis=axes, keepdims=True)
    return affine(centered / (np.sqrt(x.var(axis=axes, keepdims=True)) + eps), gamma, beta)


@FORWARD.add("eps missing: divide by sqrt(var + eps), not sqrt(var)")
def forward_without_eps(x, gamma, beta, eps):
    return affine(normalize_over(x, reduce_axes(x.ndim), 0.0), gamma, beta)


@FORWARD.add("gamma and beta swapped: y = gamma * xhat + beta")
def forward_with_gamma_and_beta_swapped(x, gamma, beta, eps):
    return affine(normalize_over(x, reduce_axes(x.ndim), eps), beta, gamma)


@FORWARD.add("gamma and beta not applied: return gamma * xhat + beta, not xhat")
def forward_without_gamma_and_beta(x, gamma, beta, eps):
    return normalize_over(x, reduce_axes(x.ndim), eps)


@FORWARD.family
def forward_with_eps_fixed_at_1e_5(x, gamma, beta, eps):
    if eps != 1e-5:  # (with eps = 1e-5 it is the right answer)
        yield (
            f"the eps argument is ignored (1e-5 used instead of eps={eps:g})",
            affine(normalize_over(x, reduce_axes(x.ndim), 1e-5), gamma, beta),
        )


@FORWARD.family
def forward_over_wrong_axes(x, gamma, beta, eps):
    for axes, cause in wrong_axes(x.ndim):
        yield cause, affine(normalize_over(x, axes, eps), gamma, beta)


@exercise(
    "numpy-forward",
    chapter=CHAPTER,
    title="The training forward pass",
    signature="batchnorm_forward(x, gamma, beta, eps=1e-5) -> out or (out, cache)",
)
def check_forward(batchnorm_forward: Callable[..., Any]) -> str:
    for case in forward_cases():
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        shape = tuple_text(x.shape)
        name = f"batchnorm_forward output for x of shape {shape} ({x.dtype}), eps={eps:g}"
        got = first_output(batchnorm_forward(x.copy(), gamma.copy(), beta.copy(), eps=eps))
        expected, _ = numpy_bn.forward_train(x, gamma, beta, eps)
        tolerance = dict(rtol=1e-4, atol=1e-5) if x.dtype == np.float32 else {}
        compare(name, got, expected, mistakes=FORWARD.answers(x, gamma, beta, eps), **tolerance)
    return (
        "outputs match nn.BatchNorm's training forward for (N, C), (N, C, L), (N, C, H, W), "
        "float32/64"
    )
