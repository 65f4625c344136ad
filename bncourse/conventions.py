"""The conventions every BatchNorm of the course shares, each written once.

Shapes (the same as ``torch.nn.BatchNorm1d/2d/3d``):

* an input has shape ``(N, C)`` or ``(N, C, *spatial)``: ``N`` samples, ``C`` channels, then
  any spatial axes, e.g. ``(N, C, L)``, ``(N, C, H, W)``, ``(N, C, D, H, W)``;
* statistics are per channel, over every axis but 1 (:func:`reduce_axes`), and have shape
  ``(C,)``; ``m = N * prod(spatial)`` values share them (:func:`values_per_channel`);
* a ``(C,)`` vector meets the input through the view :func:`channel_shape`.

Error messages, worded as PyTorch words them (so that a learner who searches for one finds
PyTorch's own discussions of it): the functions under "Errors" return the text; each
implementation raises it with PyTorch's exception type.

Statistics that both NumPy arrays and torch tensors use: Chan's merge of ``(count, mean, M2)``
summaries (:func:`chan_merge`, :func:`merge_stats`) and normalization over any axes
(:func:`normalize_over`). They use only arithmetic and ``.mean``/``.sum`` over a tuple of
axes, which NumPy and PyTorch spell alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "reduce_axes",
    "reduced_axes",
    "channel_shape",
    "values_per_channel",
    "MODULE_FOR_NDIM",
    "too_few_dimensions",
    "ONE_VALUE_PER_CHANNEL",
    "one_value_per_channel",
    "wrong_length",
    "not_one_dimensional",
    "missing_in_evaluation",
    "wrong_input_dimensions",
    "eps_not_positive",
    "eps_negative",
    "chan_merge",
    "merge_stats",
    "normalize_over",
]


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------
def reduce_axes(ndim: int) -> tuple[int, ...]:
    """The axes BatchNorm reduces over for an ``ndim``-dimensional input: all but axis 1.

    >>> reduce_axes(2), reduce_axes(4)
    ((0,), (0, 2, 3))
    """
    return (0, *range(2, ndim))


def reduced_axes(kind: str, ndim: int) -> tuple[int, ...]:
    """The axes each kind reduces for an ``ndim`` input ``(N, C, *spatial)`` (GroupNorm: of
    the ``(N, G, C/G, *spatial)`` view)."""
    spatial = tuple(range(2, ndim))
    if kind == "batch":
        return reduce_axes(ndim)
    if kind == "layer":
        return (1, *spatial)
    if kind == "instance":
        return spatial
    if kind == "group":
        return tuple(range(2, ndim + 1))
    raise ValueError(f"unknown normalization {kind!r}: expected batch, layer, instance or group")


def channel_shape(ndim: int) -> tuple[int, ...]:
    """The view that broadcasts a ``(C,)`` vector against an ``ndim`` input: ``(1, -1, 1, ...)``."""
    return (1, -1) + (1,) * (ndim - 2)


def values_per_channel(shape: Sequence[int]) -> int:
    """``m``: how many values share one channel's statistics, ``N * prod(spatial)``."""
    return shape[0] * math.prod(shape[2:])


# The module for each input dimension (BatchNorm1d takes (N, C) and (N, C, L)).
MODULE_FOR_NDIM = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


# --------------------------------------------------------------------------------------------
# Errors (PyTorch's wording; the deliberate exception is too_few_dimensions, see there)
# --------------------------------------------------------------------------------------------
def too_few_dimensions(shape: Sequence[int]) -> str:
    """An input of fewer than 2 dimensions. PyTorch raises an IndexError about a dimension
    out of range here; the course says what is expected instead (a ValueError)."""
    return (
        f"batch_norm: expected an input of shape (N, C) or (N, C, *spatial), "
        f"got {len(shape)}D input of shape {tuple(shape)}"
    )


ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"


def one_value_per_channel(size: Any) -> str:
    """Training on one value per channel (its variance is undefined): a ValueError."""
    return f"{ONE_VALUE_PER_CHANNEL}, got input size {size}"


def wrong_length(name: str, channels: int, numel: int) -> str:
    """A per-channel tensor with another number of elements than ``C``: a RuntimeError."""
    return f"{name} should contain {channels} elements not {numel}"


def not_one_dimensional(ndim: int) -> str:
    """A running statistic that is not a vector (``(1, C)``, a transposed ``(2, 2)``):
    ATen indexes it as one, and refuses it in these words (a RuntimeError)."""
    return f"TensorAccessor expected 1 dims but tensor has {ndim}"


def missing_in_evaluation(name: str) -> str:
    """Evaluation mode without running statistics: a RuntimeError."""
    return f"{name} must be defined in evaluation mode"


def wrong_input_dimensions(expected: str, ndim: int) -> str:
    """A module given an input of the wrong rank (``expected``: "2D or 3D", "4D", "5D"):
    a ValueError."""
    return f"expected {expected} input (got {ndim}D input)"


def eps_not_positive(eps: float) -> str:
    """``eps <= 0`` in training: a ValueError."""
    return f"batch_norm eps must be positive during training, but got {eps}"


def eps_negative(eps: float) -> str:
    """``eps < 0`` in evaluation: a ValueError."""
    return f"batch_norm eps must be non-negative, but got {eps}"


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def chan_merge(
    n_a: Any, mean_a: Any, m2_a: Any, n_b: Any, mean_b: Any, m2_b: Any
) -> tuple[Any, Any, Any]:
    """The ``(count, mean, M2)`` of the union of two parts (Chan, Golub and LeVeque, 1979).

    ``M2`` is the sum of squared deviations from the part's own mean (``count * variance``)::

        n = n_a + n_b,  delta = mean_b - mean_a,
        mean = mean_a + delta * n_b / n,  M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

    Every term of ``M2`` is non-negative: nothing cancels, unlike ``E[x^2] - E[x]^2``. Works
    on numbers, NumPy arrays and torch tensors alike (the counts may be 0-d or per channel);
    a part with no values (count 0) leaves the other unchanged, even where ``delta**2``
    overflows (``n_a * weight_b`` is 0 first: never ``0 * inf``). The Triton kernels
    (:mod:`bncourse.triton_bn`) spell the same formula in Triton's language.
    """
    n = n_a + n_b
    weight_b = n_b / (n + (n == 0))  # 0 / 1 = 0 for two empty parts, never 0 / 0
    delta = mean_b - mean_a
    return n, mean_a + delta * weight_b, m2_a + m2_b + delta * (n_a * weight_b) * delta


def merge_stats(counts: Any, means: Any, m2s: Any) -> tuple[Any, Any, Any]:
    """Chan's merge of ``P`` parts at once: ``counts`` ``(P,)``, ``means`` and ``m2s`` ``(P, C)``.

    Returns the ``(count, mean, M2)`` of the union, a 0-d count and two ``(C,)`` results, as if
    computed from all the values at once: ``mean = sum(n_k mean_k) / N`` and ``M2 = sum M2_k +
    sum n_k (mean_k - mean)^2`` (the pairwise :func:`chan_merge`, applied to all parts). NumPy
    arrays or torch tensors; parts with no values have weight 0.
    """
    total = counts.sum()
    weights = counts[:, None] / (total + (total == 0))
    mean = (weights * means).sum(0)
    m2 = m2s.sum(0) + (counts[:, None] * (means - mean) ** 2).sum(0)
    return total, mean, m2


def normalize_over(x: Any, axes: tuple[int, ...], eps: float, ddof: int = 0) -> Any:
    """``(x - mean) / sqrt(var + eps)`` with the mean and variance over ``axes`` (dims kept).

    ``ddof=0`` is the biased variance every normalization layer uses (divide by the number
    of values ``n``); ``ddof=1`` the unbiased one (divide by ``n - 1``), which the exercises
    use to build a learner's mistake. NumPy arrays or torch tensors.
    """
    n = math.prod(x.shape[axis] for axis in axes)
    mean = x.mean(axes, keepdims=True)
    centered = x - mean
    var = (centered * centered).sum(axes, keepdims=True) / (n - ddof)
    return centered / (var + eps) ** 0.5
