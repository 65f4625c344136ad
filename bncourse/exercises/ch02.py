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
from .base import (
    CheckFailed,
    Mistakes,
    array_text,
    as_array,
    compare,
    compare_prediction,
    exercise,
    feedback,
    first_output,
    prediction,
    rng,
    tuple_text,
    unpack,
)

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


ALL_VALUES = (
    "statistics over all values instead of per channel (x.mean() with no axis): each "
    "channel, axis 1, gets its own mean and variance, over axis 0 and the spatial axes"
)


@MEAN.add(ALL_VALUES)
def mean_of_all_values(x: np.ndarray) -> np.ndarray:
    return np.asarray(x.mean())


@VARIANCE.add(ALL_VALUES)
def variance_of_all_values(x: np.ndarray) -> np.ndarray:
    return np.asarray(x.var())


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


@FORWARD.add(ALL_VALUES)
def forward_over_all_values(x, gamma, beta, eps):
    return affine((x - x.mean()) / np.sqrt(x.var() + eps), gamma, beta)


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


NOT_RESHAPED = (
    "gamma and beta are not reshaped for (N, C, L) or image inputs: gamma * xhat lines gamma "
    "(C,) up with the *last* axis; reshape them to (1, C, 1, ...) (gamma.reshape(1, -1, 1)) "
    "so that they scale and shift the channels, axis 1"
)


@FORWARD.family
def forward_with_gamma_and_beta_on_the_last_axis(x, gamma, beta, eps):
    if x.ndim > 2 and x.shape[-1] == x.shape[1]:  # (where the shapes broadcast silently)
        yield NOT_RESHAPED, normalize_over(x, reduce_axes(x.ndim), eps) * gamma + beta


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
        try:
            got = first_output(batchnorm_forward(x.copy(), gamma.copy(), beta.copy(), eps=eps))
        except ValueError as error:
            if x.ndim > 2 and "broadcast" in str(error):
                raise CheckFailed(
                    f"{name}: your function raised ValueError ({error}). Likely cause: "
                    f"{NOT_RESHAPED}.",
                    cause=NOT_RESHAPED,
                ) from None
            raise
        expected, _ = numpy_bn.forward_train(x, gamma, beta, eps)
        tolerance = dict(rtol=1e-4, atol=1e-5) if x.dtype == np.float32 else {}
        compare(name, got, expected, mistakes=FORWARD.answers(x, gamma, beta, eps), **tolerance)
    return (
        "outputs match nn.BatchNorm's training forward for (N, C), (N, C, L), (N, C, H, W), "
        "float32/64"
    )


# --------------------------------------------------------------------------------------------
# Feedback: the smallest batch a wrong answer fails on
# --------------------------------------------------------------------------------------------
def small_batches() -> Iterator[np.ndarray]:
    """Batches from the smallest up, (2, 1) to (3, 2, 2): small integers, readable by hand
    (a fixed seed per shape), each channel with two different values at least."""
    for shape in [(2, 1), (2, 2), (3, 1), (3, 2), (2, 3), (2, 2, 2), (3, 2, 2), (4, 3)]:
        generator = rng(sum(shape) * 10 + len(shape))
        for _attempt in range(20):
            x = generator.integers(-3, 4, size=shape).astype(np.float64)
            if all(np.ptp(x[:, c]) > 0 for c in range(shape[1])):
                yield x
                break


def _disagrees(got: Any, expected: np.ndarray) -> bool:
    try:
        got = as_array("output", got)
    except CheckFailed:
        return True
    return got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-6)


def _smallest(explain: Callable[[np.ndarray], str | None]) -> str | None:
    for x in small_batches():
        text = explain(x)
        if text:
            return "Smallest failing batch: " + text
    return None


@feedback("numpy-batch-stats")
def smallest_failing_batch_stats(batch_stats: Callable[..., Any]) -> str | None:
    def explain(x: np.ndarray) -> str | None:
        right = numpy_bn.batch_stats(x)
        try:
            got = unpack("batch_stats(x)", batch_stats(x.copy()), ("mean", "var"))
        except Exception as error:
            return f"x of shape {tuple_text(x.shape)} =\n{array_text(x)}\nraises {error!r}"
        if not any(_disagrees(g, r) for g, r in zip(got, right)):
            return None
        lines = [f"x of shape {tuple_text(x.shape)} =\n{array_text(x)}"]
        for label, g, r in zip(("mean", "var"), got, right):
            shown = array_text(g) if np.asarray(g).dtype.kind in "biuf" else repr(g)
            if np.shape(g) != r.shape:
                shown += f" (shape {tuple_text(np.shape(g))})"
                expected = f"{array_text(r)} (shape {tuple_text(r.shape)})"
                lines.append(f"your {label}: {shown}   expected: {expected}")
            else:
                lines.append(f"your {label}: {shown}   expected: {array_text(r)}")
        return "\n".join(lines)

    return _smallest(explain)


@feedback("numpy-forward")
def smallest_failing_forward(batchnorm_forward: Callable[..., Any]) -> str | None:
    def explain(x: np.ndarray) -> str | None:
        c = x.shape[1]
        gamma, beta = np.array([2.0, -1.0, 0.5])[:c], np.array([1.0, 0.0, -0.5])[:c]
        right, _ = numpy_bn.forward_train(x, gamma, beta, 1e-5)
        try:
            got = first_output(batchnorm_forward(x.copy(), gamma.copy(), beta.copy(), eps=1e-5))
        except Exception as error:
            return (
                f"x of shape {tuple_text(x.shape)} =\n{array_text(x)}\nwith gamma = "
                f"{array_text(gamma)}, beta = {array_text(beta)}: raises {error!r}"
            )
        if not _disagrees(got, right):
            return None
        return (
            f"x of shape {tuple_text(x.shape)} =\n{array_text(x)}\nwith gamma = "
            f"{array_text(gamma)}, beta = {array_text(beta)}, eps=1e-5:\nyour output =\n"
            f"{array_text(as_array('output', got))}\nexpected =\n{array_text(right)}"
        )

    return _smallest(explain)


# --------------------------------------------------------------------------------------------
# predict-values-per-channel: before the images' m is printed
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-values-per-channel",
    chapter=CHAPTER,
    title="Predict how many values each channel's mean averages",
    signature="predicted_m: an integer, m for an (8, 3, 4, 4) batch of images",
)
def check_predict_values_per_channel(predicted_m: Any) -> str:
    # A count: exact (tolerance 0).
    got = compare_prediction(
        "predicted_m",
        predicted_m,
        8 * 4 * 4,
        tolerance=0.0,
        mistakes={
            "only the batch axis: for images the statistics run over N, H and W, the "
            "batch and every position": 8,
            "only the positions of one image (H * W): that is InstanceNorm; BatchNorm "
            "also pools the batch": 16,
            "every value of the tensor: BatchNorm keeps one mean per channel, each over "
            "N * H * W of the values": 8 * 3 * 4 * 4,
        },
        otherwise="Count the values one channel holds: every sample, every position",
    )
    return f"you predicted {got}: m = N * H * W = 8 * 4 * 4 values per channel"
