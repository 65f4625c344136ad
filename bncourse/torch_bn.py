"""BatchNorm in PyTorch with a hand-written backward pass: chapter 5's code, a drop-in for
``torch.nn.BatchNorm1d/2d/3d``.

Read it top to bottom:

1. the formulas: the batch statistics, the update of the running statistics, the
   normalization, and the closed-form backward of chapter 3 (:func:`batch_norm_backward`);
   for a large input, the statistics and the backward's sums are reduced in blocks and
   merged (:func:`split_plan`);
2. the two passes (:func:`forward_train`, :func:`forward_eval`, :func:`backward`) and
   :class:`BatchNormFunction`, the ``torch.autograd.Function`` that uses them, so that
   autograd records one node instead of the forward's operations (:class:`ThenUpdate` updates
   the running statistics after it);
3. :func:`batch_norm`, with the signature, errors and semantics of
   ``torch.nn.functional.batch_norm`` (its checks live in :mod:`bncourse.validation`);
4. the modules :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d`.

Conventions (:mod:`bncourse.conventions`, the same as :mod:`bncourse.numpy_bn` and PyTorch):
an input is ``(N, C)`` or ``(N, C, *spatial)``; statistics are per channel, over all axes but
1, of shape ``(C,)``, shared by ``m = N * prod(spatial)`` values; normalization uses the biased
variance with ``eps`` inside the root, ``y = (x - mean) / sqrt(var + eps) * weight + bias``;
the running statistics are ``running = (1 - momentum) * running + momentum * batch``, fed the
unbiased variance ``var * m / (m - 1)``, and ``momentum=None`` (a cumulative average) is the
module's business: it passes ``1 / num_batches_tracked``.

Precision: the statistics and the arithmetic of both passes run in float32 for float16 and
bfloat16 inputs (:func:`~bncourse.validation.accumulation_dtype`), in the input's dtype
otherwise; outputs and gradients have the dtype of what they belong to.

The modules are subclasses of ``torch.nn.modules.batchnorm._BatchNorm``, so that the tools
that look for BatchNorm layers with ``isinstance`` find them
(``nn.SyncBatchNorm.convert_sync_batchnorm``, the freezing and folding of chapters 7 and 9);
their state is registered here, explicitly.
Tools that match exact types or trace into a module's code do not treat them as
``torch.nn``'s own: ``torch.fx.symbolic_trace`` keeps only ``torch.nn``'s modules whole
(``is_leaf_module``), and tracing into ours meets the input checks' control flow (a
``torch.fx.Tracer`` whose ``is_leaf_module`` also accepts ``_BatchNorm`` keeps them whole);
eager-mode quantization's ``fuse_modules`` looks up exact types (fold with
:mod:`bncourse.fold` instead).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .conventions import (
    channel_shape,
    reduce_axes,
    values_per_channel,
    wrong_input_dimensions,
)
from .validation import accumulation_dtype, apply_checked, output_memory_format

__all__ = [
    "batch_stats",
    "merge_blocks",
    "two_pass_sums",
    "corrected",
    "BLOCK_VALUES",
    "SPLIT_MIN_VALUES",
    "split_plan",
    "in_blocks",
    "channel_sums",
    "update_running_stats",
    "normalize",
    "batch_norm_backward",
    "grad_input_from_sums",
    "batch_norm_jvp",
    "in_output_layout",
    "forward_train",
    "forward_eval",
    "backward",
    "BatchNormFunction",
    "TracedBatchNormFunction",
    "ThenUpdate",
    "batch_norm",
    "BatchNormNd",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
]


# --------------------------------------------------------------------------------------------
# The formulas
# --------------------------------------------------------------------------------------------
def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x`` ``(N, C, *spatial)``, each ``(C,)``.

    Two passes, as :func:`bncourse.numpy_bn.batch_stats`, never ``E[x^2] - E[x]^2`` (chapter
    8 shows why): a first mean ``m1``, then the deviations ``d = x - m1``. Their mean ``e``
    is the rounding error of ``m1`` (zero in exact arithmetic), so ``mean = m1 + e`` and
    ``var = mean(d**2) - e**2``: the corrected two-pass algorithm (Chan, Golub and LeVeque,
    1983), which keeps the mean to half a unit in the last place where float32 sums of
    thousands of values near 1e4 are off by several. Computed in the accumulation dtype
    (float32 for half-precision inputs).

    For a large input (:func:`split_plan`) the same two passes run on blocks (of rows where
    the channels are the innermost dimension, of samples for NCHW) and the blocks' sums are
    merged with Chan's formula (:func:`merge_blocks`): chapter 8's tiles, as a split
    reduction. Compiled (:mod:`bncourse.compiled_bn`), a block's two passes run one after the
    other while it is in the processor's cache; eager, each pass is one operation over all
    blocks.
    """
    x = x.to(accumulation_dtype(x.dtype))
    plan = split_plan(x)
    if plan is None:
        dims = reduce_axes(x.ndim)
        # Traced for TorchInductor, whose loops add a channel's values one after another
        # (ATen's mean adds them pairwise), the first pass adds differences from the first
        # sample's values, inside the same loop; eager, that would cost one more pass.
        reference = None
        if torch.compiler.is_compiling():
            reference = x[(slice(0, 1), slice(None)) + (slice(0, 1),) * (x.ndim - 2)]
        mean, var = corrected(*two_pass_sums(x, dims, reference))
        return mean.flatten(), var.flatten()
    counts, parts = [], []
    for block in in_blocks(x, plan):  # (blocks, ..., C): the whole ones, then the rest
        count = block[0, ..., 0].numel()  # values per block and channel
        counts.append(x.new_full(block.shape[:1], count))
        first_row = block[(slice(None),) + (slice(0, 1),) * (block.ndim - 2)]  # (blocks, 1.., C)
        sums = two_pass_sums(block, _values_axes(block), first_row)
        parts.append([p.flatten(0, -2) for p in sums])
    first_means, corrections, mean_squares = (torch.cat(column) for column in zip(*parts))
    return merge_blocks(torch.cat(counts), first_means, corrections, mean_squares)


def two_pass_sums(
    x: Tensor, dims: tuple[int, ...], reference: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The two passes over ``x`` along ``dims`` (kept, size 1): the first mean ``m1``, then
    of the deviations ``d = x - m1`` their mean ``e`` and mean square ``q``.

    With a ``reference`` (the shape of ``m1``: a value near the data, such as a block's first
    row), the first pass adds ``x - reference`` instead of ``x``: numbers the size of the
    data's spread, whose float32 sum stays accurate even when added one after another (as
    TorchInductor's loops add a block's rows), where such a sum of 2048 values near 12345.678
    is off by about 390 (a mean off by 0.19) and the variance of a channel of std 0.01 would
    then be lost in ``q - e**2``."""
    first_mean = x.mean(dims, keepdim=True)
    if reference is not None:
        shifted = reference + (x - reference).mean(dims, keepdim=True)
        # (the plain mean where that is not finite: a reference or a value that is infinite or
        # NaN, whose channel's mean is then that of PyTorch, or a sum that overflows near 3e38)
        first_mean = torch.where(torch.isfinite(shifted), shifted, first_mean)
    deviations = x - first_mean
    return (
        first_mean,
        deviations.mean(dims, keepdim=True),
        deviations.square().mean(dims, keepdim=True),
    )


def corrected(first_mean: Tensor, correction: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean, var)`` from :func:`two_pass_sums`' ``(m1, e, q)``: ``m1 + e`` and ``q - e**2``."""
    # (an infinite value makes every deviation NaN: the mean is then that infinity, as PyTorch's)
    mean = torch.where(torch.isfinite(first_mean), first_mean + correction, first_mean)
    # (finite values whose squares overflow, |x| of 1e20 in float32: the variance is inf, as
    # PyTorch's, not inf - inf = NaN; correction**2 <= mean(d**2), so it overflows only then)
    # (and never below 0, where rounding leaves a constant channel a tiny negative variance)
    variance = (mean_square - correction.square()).clamp_min(0)
    var = torch.where(torch.isinf(mean_square), mean_square, variance)
    return mean, var


def merge_blocks(
    counts: Tensor, first_means: Tensor, corrections: Tensor, mean_squares: Tensor
) -> tuple[Tensor, Tensor]:
    """``(mean, var)`` of ``P`` blocks together, from each block's :func:`two_pass_sums`:
    ``counts`` ``(P,)``, ``first_means``, ``corrections`` and ``mean_squares`` ``(P, C)``.

    Chan's merge of the blocks' ``(count, mean, M2)``
    (:func:`bncourse.conventions.merge_stats`), ``M2 = sum_k [M2_k + n_k (mean_k - mean)**2]``,
    written about one reference ``r`` instead of about the merged mean, so that no block's
    mean is ever rounded to one float32 (``m1_k + e_k`` near 12345.678 is off by up to 4.9e-4,
    and the spread of the block means, which holds the variance between blocks, would inherit
    that error: the variance of a channel of std 0.01 there would be lost). With
    ``s_k = m1_k - r`` (exact in float32 where the first means are within a factor 2 of
    ``r``), the deviations from ``r`` have mean ``e_k + s_k`` and mean square
    ``q_k + s_k (2 e_k + s_k)`` in block ``k``: the count-weighted sums of those are the two
    passes' ``e`` and ``q`` about ``r``, corrected as one reduction's are
    (:func:`corrected`), whose ``q - e**2`` loses about ``(mean - r)**2 / var`` float32
    roundings of the variance. So ``r`` is the first mean nearest to their weighted mean,
    whose squared distance from the mean is about the variance between the blocks at most,
    itself at most the variance; the first block's, where that block is unlike the others
    (the first rows of unshuffled data), can lie many standard deviations away."""
    weights = (counts / counts.sum())[:, None]
    # one of the first means (the shifts from it are exact; a constant channel's are 0), but
    # their weighted mean where one is infinite or NaN: that is then the mean, as PyTorch's
    overall = (weights * first_means).sum(0)
    nearest = (first_means - overall).abs().argmin(0, keepdim=True)  # (1, C)
    reference = torch.where(torch.isfinite(overall), first_means.gather(0, nearest)[0], overall)
    shift = first_means - reference
    correction = (weights * (corrections + shift)).sum(0)
    mean_square = (weights * (mean_squares + shift * (2 * corrections + shift))).sum(0)
    # (a block whose squares overflow, finite values of both signs near 1e30 in float32, has
    # an infinite mean square: the variance is then inf, as PyTorch's, not inf - inf = NaN)
    overflow = torch.isposinf(mean_squares).any(0) & torch.isfinite(overall)
    mean_square = torch.where(overflow, torch.inf, mean_square)
    return corrected(reference, correction, mean_square)


# The split reduction: blocks of about BLOCK_VALUES values (256 KB of float32, rows of C values
# times a power of two: a quarter of a 1 MB level-2 cache, so that a block stays there between
# its two passes, and the backward's two input-sized arrays fit together), for inputs of at
# least SPLIT_MIN_VALUES (larger than the caches)
BLOCK_VALUES = 2**16
SPLIT_MIN_VALUES = 2**18
MIN_ROWS_PER_BLOCK = 8
MIN_RUN = 16  # NCHW: values per channel and sample, at least
# NCHW: values per block and channel, at least: short runs (7 x 7) are grouped, a few
# samples per block, so that each partial result sums more than one run
BLOCK_RUN = 128


def split_plan(x: Tensor) -> tuple[int, int, bool] | None:
    """``(blocks, values per block and channel, rows)`` for the split reduction of ``x``, or
    ``None`` (one plain reduction) for inputs of fewer than :data:`SPLIT_MIN_VALUES` values,
    for rows too wide for two blocks of :data:`MIN_ROWS_PER_BLOCK` rows (more than 8192
    channels) and for layouts other than these two (strided, transposed or expanded inputs):

    * channels innermost (``(N, C)`` contiguous, channels last), ``rows=True``: a row of
      ``C`` channels is contiguous and a channel is a column, which a plain reduction walks
      down. The blocks are a power of two rows each, about :data:`BLOCK_VALUES` values; the
      rows that do not fill a block make one more, shorter block;
    * NCHW (contiguous, with at least :data:`MIN_RUN` values per channel and sample),
      ``rows=False``: a block is ``k`` samples, for each channel ``k`` runs of ``H * W``
      contiguous values: one sample (``k = 1``) where a run has at least
      :data:`BLOCK_RUN` values, else the fewest (a power of two, at most half the batch)
      that make that many, so that a partial result (and the horizontal sum of a vector
      register that ends it) stands for more than one short run; the samples that do not
      fill a block make one more, smaller block.

    Each block is reduced on its own, from the cache, the blocks in parallel, into one
    partial result per block and channel, merged after: a split (two-stage) reduction, in
    which the loops read the input in the order it lies in memory (:func:`in_blocks`). On
    the CPU only: on a GPU, ATen's reductions (and TorchInductor's Triton kernels) split
    the work among thread blocks themselves, as chapter 8's kernels do."""
    if x.ndim < 2 or _is_batched(x) or x.numel() < SPLIT_MIN_VALUES or x.device.type != "cpu":
        return None
    channels = x.shape[1]
    if x.movedim(1, -1).is_contiguous():
        rows_per_block = 1
        while rows_per_block * 2 * channels <= BLOCK_VALUES:
            rows_per_block *= 2
        blocks = x.numel() // channels // rows_per_block
        if rows_per_block < MIN_ROWS_PER_BLOCK or blocks < 2:
            return None
        return blocks, rows_per_block, True
    if x.ndim > 2 and x.is_contiguous() and x.shape[0] >= 2:
        samples = x.shape[0]
        spatial = x.numel() // (samples * channels)
        if spatial >= MIN_RUN:
            per_block = 1
            while per_block * spatial < BLOCK_RUN and per_block * 4 <= samples:
                per_block *= 2
            return samples // per_block, per_block * spatial, False
    return None


def in_blocks(t: Tensor, plan: tuple[int, int, bool]) -> list[Tensor]:
    """``t``'s values in the blocks of ``plan`` (:func:`split_plan`), each part ``(blocks,
    ..., C)``, a block's values in the axes between (:func:`_values_axes`): for rows, ``t``
    as ``(R, C)`` rows of channels cut into ``[(blocks, rows_per_block, C)]``, and ``(1,
    rest, C)`` where the rows do not fill the blocks; for samples, ``t`` as ``(N, C, H *
    W)`` cut into ``[(blocks, k, H * W, C)]`` of ``k`` samples each, and ``(1, rest, H * W,
    C)`` for the samples left over. Views where ``t`` has the layout of the plan."""
    blocks, per_block, rows = plan
    channels = t.shape[1]
    if rows:
        lines = t.movedim(1, -1).reshape(-1, channels)  # (R, C)
    else:
        lines = t.reshape(t.shape[0], channels, -1)  # (N, C, H * W)
        per_block //= lines.shape[2]  # samples per block
    whole = blocks * per_block
    parts = [lines[:whole].unflatten(0, (blocks, per_block))]
    if lines.shape[0] > whole:
        parts.append(lines[whole:].unsqueeze(0))
    return parts if rows else [part.transpose(2, 3) for part in parts]


def _values_axes(block: Tensor) -> tuple[int, ...]:
    """The axes of a part of :func:`in_blocks` that hold one block's values: all but the
    first (the block) and the last (the channel)."""
    return tuple(range(1, block.ndim - 1))


def channel_sums(t: Tensor, plan: tuple[int, int, bool] | None) -> Tensor:
    """Per-channel sums of ``t`` ``(N, C, *spatial)``, ``(C,)``: one reduction, or with a
    ``plan`` (:func:`split_plan`) a sum per block, then the sum of those."""
    if plan is None:
        return t.sum(reduce_axes(t.ndim))
    partial = [block.sum(_values_axes(block)) for block in in_blocks(t, plan)]  # (blocks, C)
    return torch.cat(partial).sum(0)


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    m: int,
    momentum: float,
) -> None:
    """PyTorch's update of the running statistics, in place (either may be ``None``).

    ``running = (1 - momentum) * running + momentum * batch``; the running variance is fed the
    unbiased batch variance ``var * m / (m - 1)`` (``var`` is the biased one that normalized
    the batch). Two operations per buffer, in place: ``running.mul_(1 - momentum)``, then
    ``add_(batch, alpha=momentum)``, whose sum ATen forms in the wider of the two dtypes and
    rounds to the buffer's (which keeps its dtype).
    The statistics are detached (no gradient flows into a buffer), rather than the update run
    under ``torch.no_grad()``, which ``torch.export`` would record as a grad-mode switch that
    ``torch.export.load`` rejects.
    """
    mean, var = mean.detach(), var.detach()
    if running_mean is not None:
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    if running_var is not None:
        running_var.mul_(1 - momentum).add_(var, alpha=momentum * m / (m - 1))


def normalize(
    x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    """``y = (x - mean) * invstd * weight + bias`` per channel; ``mean``, ``invstd``,
    ``weight`` and ``bias`` are ``(C,)`` (``weight``/``bias`` may be ``None``)."""
    shape = channel_shape(x.ndim)
    scale = invstd if weight is None else invstd * weight
    y = (x - mean.view(shape)) * scale.view(shape)
    return y if bias is None else y + bias.view(shape)


def affine_map(
    x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    """Evaluation mode: the same map as :func:`normalize`, as the fixed affine map it is,
    ``y = x * a + (bias - mean * a)`` with ``a = invstd * weight`` (chapter 9 folds it into
    the layer before). Computed in this order, as ATen computes it, so that degenerate inputs
    give PyTorch's answer too (``eps=0`` with a zero running variance: NaN)."""
    shape = channel_shape(x.ndim)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return x * scale.view(shape) + shift.view(shape)


def batch_norm_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    training: bool,
    output_mask: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Closed-form gradients ``(grad_input, grad_weight, grad_bias)`` of BatchNorm.

    The forward pass was ``y = (x - mean) * invstd * weight + bias`` per channel, with
    ``mean`` and ``invstd = 1 / sqrt(var + eps)`` of shape ``(C,)``. With ``xc = x - mean``,
    ``s = invstd`` and ``a = weight * s``, sums per channel over the ``m`` values::

        grad_bias   = sum(dy)
        grad_weight = s * sum(dy * xc)                               (= sum(dy * xhat))
        training:  dx = a * (dy - sum(dy) / m - xc * s**2 * sum(dy * xc) / m)
        eval:      dx = a * dy         (mean and invstd are constants: running statistics)

    which is chapter 3's ``dx = s * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = weight * dy``: the direct path, minus the mean path, minus the variance path.
    ``output_mask`` says which of the three gradients are wanted (the others are ``None``).
    Ordinary differentiable operations, so a double backward differentiates through them.
    """
    need_input, need_weight, need_bias = output_mask
    shape = channel_shape(input.ndim)
    full_dx = need_input and training  # dx with its mean and variance paths
    plan = split_plan(input)  # (the sums in blocks of rows, as batch_stats)
    sum_dy = channel_sums(grad_output, plan) if (need_bias or full_dx) else None
    sum_dy_xc = None
    if need_weight or full_dx:
        sum_dy_xc = channel_sums((input - mean.view(shape)) * grad_output, plan)
    grad_input = None
    if full_dx:
        grad_input = grad_input_from_sums(
            grad_output,
            input,
            mean,
            invstd,
            weight,
            sum_dy,
            sum_dy_xc,
            values_per_channel(input.shape),
        )
    elif need_input:
        scale = invstd if weight is None else invstd * weight
        grad_input = grad_output * scale.view(shape)
    grad_weight = sum_dy_xc * invstd if need_weight else None
    grad_bias = sum_dy if need_bias else None
    return grad_input, grad_weight, grad_bias


def grad_input_from_sums(
    grad_output: Tensor,
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    sum_dy: Tensor,
    sum_dy_xc: Tensor,
    m: int,
) -> Tensor:
    """Training-mode ``dx`` from the two per-channel sums over the ``m`` values that share
    the statistics: ``sum_dy = sum(dy)`` and ``sum_dy_xc = sum(dy * (x - mean))``, ``(C,)``.

    ``dx = (dy + k * xc + c) * a`` per channel, with ``a = weight * invstd``: ``c =
    -sum_dy / m`` carries the mean path and ``k = -invstd * (invstd * sum_dy_xc / m)`` the
    variance path (``invstd * sum_dy_xc / m`` is ``mean(dy * xhat)``, of the size of ``dy``:
    computed first, ``k`` stays finite where ``invstd**2`` alone would overflow, as with
    ``eps=1e-45`` and values near 1e-20 in float32). Taking the sums as arguments is what lets
    SyncBatchNorm (:mod:`bncourse.distributed`) reuse this with sums over every process's
    values.
    """
    shape = channel_shape(input.ndim)
    a = invstd if weight is None else invstd * weight
    k = -invstd * (invstd * sum_dy_xc / m)
    c = -sum_dy / m
    centered = input - mean.view(shape)
    return (grad_output + centered * k.view(shape) + c.view(shape)) * a.view(shape)


def batch_norm_jvp(
    input_tangent: Tensor | None,
    weight_tangent: Tensor | None,
    bias_tangent: Tensor | None,
    input: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    training: bool,
) -> Tensor:
    """Forward-mode derivative of BatchNorm: how the output moves when ``input``, ``weight``
    and ``bias`` move along the tangents ``dx``, ``dweight``, ``dbias`` (``None``: not
    moving). The same shapes as the values; ``mean`` and ``invstd`` ``(C,)``.

    With ``xhat = (x - mean) * invstd`` and means per channel over the ``m`` values::

        training:  dxhat = invstd * (dx - mean(dx) - xhat * mean(xhat * dx))
        eval:      dxhat = invstd * dx           (running statistics: constants)
        dy = weight * dxhat + dweight * xhat + dbias

    The training line is the derivative of the mean (``mean(dx)``) and of ``invstd``
    (``-invstd**3 * mean(xc * dx)``): the backward's closed form (:func:`batch_norm_backward`,
    ``dx = s * (g - mean(g) - xhat * mean(g * xhat))``) with the roles of input and output
    exchanged, because the Jacobian of the normalization is symmetric.
    """
    dims, shape = reduce_axes(input.ndim), channel_shape(input.ndim)
    xhat = (input - mean.view(shape)) * invstd.view(shape)
    tangent = torch.zeros_like(xhat)
    if input_tangent is not None:
        dxhat = input_tangent * invstd.view(shape)
        if training:
            mean_dxhat = dxhat.mean(dims, keepdim=True)
            dxhat = dxhat - mean_dxhat - xhat * (xhat * dxhat).mean(dims, keepdim=True)
        tangent = dxhat if weight is None else dxhat * weight.view(shape)
    if weight_tangent is not None:
        tangent = tangent + xhat * weight_tangent.view(shape)
    if bias_tangent is not None:
        tangent = tangent + bias_tangent.view(shape)
    return tangent


# --------------------------------------------------------------------------------------------
# The two passes, and one autograd node
# --------------------------------------------------------------------------------------------
def in_output_layout(result: Tensor, input: Tensor) -> Tensor:
    """``result`` (the output, or the input's gradient) in the layout ``torch.nn`` gives it
    (:func:`~bncourse.validation.output_memory_format`): contiguous, or channels last for a
    channels-last input. Elementwise operations would keep the input's own strides (a
    transposed output for a transposed input); a copy only where they differ. (Inside
    ``torch.func.vmap`` a sample has no layout of its own: left as it is.)"""
    if _is_batched(input):
        return result
    return result.contiguous(memory_format=output_memory_format(input))


def forward_train(
    input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training mode's forward pass: ``(output, mean, var, invstd)``, the output in the
    input's dtype and :func:`in_output_layout`, the statistics ``(C,)`` in the accumulation
    dtype (``var`` biased)."""
    x = input.to(accumulation_dtype(input.dtype))
    mean, var = batch_stats(x)
    invstd = torch.rsqrt(var + eps)
    output = normalize(x, mean, invstd, weight, bias).to(input.dtype)
    return in_output_layout(output, input), mean, var, invstd


def forward_eval(
    input: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Evaluation mode's forward pass: ``(output, mean, var, invstd)`` from the running
    statistics (the output as :func:`forward_train`'s; ``mean`` and ``var`` copies of the
    running statistics in the accumulation dtype, so that a later training step, which
    updates the buffers in place, leaves what this call's backward needs as it was)."""
    x = input.to(accumulation_dtype(input.dtype))
    mean = running_mean.to(x.dtype, copy=True)
    var = running_var.to(x.dtype, copy=True)
    invstd = torch.rsqrt(var + eps)
    output = affine_map(x, mean, invstd, weight, bias)
    return in_output_layout(output.to(input.dtype), input), mean, var, invstd


def backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    training: bool,
    output_mask: tuple[bool, bool, bool],
    bias_dtype: torch.dtype | None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The backward pass: :func:`batch_norm_backward` in the accumulation dtype, each gradient
    returned in the dtype of what it belongs to (``bias_dtype``: the bias's), the input's in
    :func:`in_output_layout`, whatever the layout of ``grad_output``."""
    x = input.to(accumulation_dtype(input.dtype))
    grad_input, grad_weight, grad_bias = batch_norm_backward(
        grad_output.to(x.dtype), x, weight, mean, invstd, training, output_mask
    )
    return (
        None if grad_input is None else in_output_layout(grad_input.to(input.dtype), input),
        None if grad_weight is None else grad_weight.to(weight.dtype),
        None if grad_bias is None else grad_bias.to(bias_dtype),
    )


class BatchNormFunction(torch.autograd.Function):
    """BatchNorm as one autograd node: :func:`forward_train` (or :func:`forward_eval`) forward,
    :func:`backward` backward.

    ``BatchNormFunction.apply(input, weight, bias, running_mean, running_var, training, eps)``
    returns ``(output, mean, var, invstd)`` (in evaluation, ``mean`` and ``var`` are copies of
    the running statistics); the statistics are not differentiable. ``training=True``:
    normalize with the batch's mean and biased variance; ``training=False``: with
    ``running_mean`` and ``running_var``, constants for the backward pass. The node changes
    none of its inputs: updating the running statistics is :class:`ThenUpdate`'s business,
    after it.

    Saved for backward: the input, ``weight``, and the per-channel ``mean`` and ``invstd``
    (what ATen saves too), by :meth:`setup_context`. When the backward pass is itself
    differentiated (``create_graph=True``), the training statistics are recomputed from the
    input with differentiable operations, so that second derivatives see how they depend on
    it.

    Written in the form ``torch.func``'s transforms need: ``forward`` without ``ctx``, then
    ``setup_context(ctx, inputs, output)`` to save what ``backward`` needs (chapter 5's
    exercise uses the older form, ``forward(ctx, ...)``, which autograd accepts too). With
    ``generate_vmap_rule``, ``torch.func.vmap`` runs ``forward`` on each sample's batch, and
    ``jacrev``/``grad`` differentiate through ``backward``. Forward-mode differentiation
    (``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``) uses :meth:`jvp`
    (:func:`batch_norm_jvp`); forward-over-reverse (a Hessian-vector product, ``jvp`` of
    ``grad``) differentiates ``backward``'s ordinary operations forward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if training:
            return forward_train(input, weight, bias, eps)
        return forward_eval(input, running_mean, running_var, weight, bias, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        """What ``forward`` keeps in ``ctx`` for ``backward``, from its inputs and output."""
        input, weight, bias, _, _, training, eps = inputs
        _, mean, var, invstd = output
        ctx.mark_non_differentiable(mean, var, invstd)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.save_for_forward(input, weight, mean, invstd)
        ctx.training, ctx.eps = training, eps
        ctx.bias_dtype = None if bias is None else bias.dtype

    @staticmethod
    def jvp(
        ctx: Any,
        input_tangent: Tensor | None,
        weight_tangent: Tensor | None,
        bias_tangent: Tensor | None,
        *_: Any,
    ) -> tuple[Tensor | None, ...]:
        """The output's tangent from the tangents of input, weight and bias
        (:func:`batch_norm_jvp`, in the accumulation dtype); the statistics have none."""
        input, weight, mean, invstd = ctx.saved_tensors
        acc = accumulation_dtype(input.dtype)

        def widened(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(acc)

        tangent = batch_norm_jvp(
            widened(input_tangent),
            widened(weight_tangent),
            widened(bias_tangent),
            input.to(acc),
            weight,
            mean,
            invstd,
            ctx.training,
        )
        return in_output_layout(tangent.to(input.dtype), input), None, None, None

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        input, weight, mean, invstd = ctx.saved_tensors
        if ctx.training and torch.is_grad_enabled():  # create_graph=True: double backward
            mean, var = batch_stats(input.to(accumulation_dtype(input.dtype)))
            invstd = torch.rsqrt(var + ctx.eps)
        grads = backward(
            grad_output,
            input,
            weight,
            mean,
            invstd,
            ctx.training,
            ctx.needs_input_grad[:3],
            ctx.bias_dtype,
        )
        return *grads, None, None, None, None


class TracedBatchNormFunction(BatchNormFunction):
    """:class:`BatchNormFunction` without its ``jvp`` rule, for ``torch.compile`` of a model
    that holds the module: TorchDynamo refuses to trace an ``autograd.Function`` that has a
    custom ``jvp`` (a graph break, an error with ``fullgraph=True``), and a compiled graph is
    differentiated in reverse mode anyway. :class:`ThenUpdate` picks it while compiling."""

    jvp = staticmethod(torch.autograd.Function.jvp)


class ThenUpdate:
    """What :func:`batch_norm` hands to ``apply_checked``: ``function.apply``
    (:class:`BatchNormFunction`, or a sibling with its signature), then, in training, the
    update of the running statistics that are given, in place, as ATen's
    ``native_batch_norm`` does; ``apply`` returns the output.

    The update is not inside the autograd node, because a node must not change its inputs:
    ``torch.jit.trace`` would record it twice (once in the node, once in the operations it
    traces through it), and under ``torch.func.vmap`` per-sample statistics cannot go into
    one buffer: that is refused in ``nn.BatchNorm``'s words. While ``torch.compile`` traces
    it, the function is :class:`TracedBatchNormFunction` (the same passes, eager: the outer
    compilation fuses them itself); while ``torch.jit.trace`` records it, the forward pass's
    own operations, so that the trace can be saved (TorchScript holds no Python function)."""

    def __init__(self, function: type[torch.autograd.Function]) -> None:
        self.function = function

    def apply(
        self,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
    ) -> Tensor:
        if training and running_mean is not None:
            if _is_batched(input) and not _is_batched(running_mean):
                raise RuntimeError(VMAP_WITH_RUNNING_STATS)
        arguments = (input, weight, bias, running_mean, running_var, training, eps)
        if torch.jit.is_tracing():
            # A traced model is saved as TorchScript, which cannot hold a Python
            # autograd.Function: the trace records the forward pass's own operations, and
            # autograd differentiates those.
            output, mean, var, _ = BatchNormFunction.forward(*arguments)
        elif torch.compiler.is_compiling():
            output, mean, var, _ = TracedBatchNormFunction.apply(*arguments)
        else:
            output, mean, var, _ = self.function.apply(*arguments)
        if training and running_mean is not None:
            update_running_stats(
                running_mean, running_var, mean, var, values_per_channel(input.shape), momentum
            )
        return output


# nn.BatchNorm's error under vmap when running statistics would be updated (its batch rule's)
VMAP_WITH_RUNNING_STATS = (
    "Batch norm got a batched tensor as input while the running_mean or running_var, which "
    "will be updated in place, were not batched.\nIf you are using a module and do not need "
    "eval mode, please set `track_running_stats` to be False.If you are using a prebuilt "
    "module and do not need eval mode, please see the functorch website for resources on how "
    "to patch your module to work with vmap"
)


def _is_batched(tensor: Tensor) -> bool:
    """Is ``tensor`` a per-sample value inside ``torch.func.vmap``?"""
    return torch._C._functorch.is_batchedtensor(tensor)


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``torch.nn.functional.batch_norm``, computed by :class:`BatchNormFunction`.

    ``input``: ``(N, C)`` or ``(N, C, *spatial)``. ``running_mean``, ``running_var``:
    ``(C,)`` or ``None``; ``weight``, ``bias``: ``C`` elements (of any shape, as in PyTorch)
    or ``None``.
    ``training=True`` normalizes with the batch's statistics and updates the running
    statistics that are given, in place; ``training=False`` normalizes with the running
    statistics, which must then be given. Returns a tensor of the input's shape and dtype.

    Errors, as PyTorch words them (:mod:`bncourse.validation`): one value per channel in
    training ("Expected more than 1 value per channel when training, got input size
    torch.Size([1, 3])"), ``eps <= 0`` in training, per-channel tensors with the wrong number
    of elements ("running_mean should contain 3 elements not 4"), running statistics that
    are not vectors ("TensorAccessor expected 1 dims but tensor has 2"), missing running statistics
    in evaluation, only one of the two running statistics, a non-floating input. An empty
    input gives what PyTorch gives: ``input * weight[0] + bias[0]`` and no update.
    """
    return apply_checked(
        ThenUpdate(BatchNormFunction),
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    )


# --------------------------------------------------------------------------------------------
# The modules
# --------------------------------------------------------------------------------------------
_warned_script: list[bool] = []  # (torch.jit.script's warning, once per process)


class BatchNormNd(nn.modules.batchnorm._BatchNorm):
    """What ``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d`` share; they differ only in the
    number of input dimensions they accept (:meth:`_check_input_dim`).

    State, registered explicitly (chapter 4 is about telling the two kinds apart):

    * parameters, learned by the optimizer: ``weight`` (gamma, ones) and ``bias`` (beta,
      zeros), each ``(num_features,)``; ``None`` when ``affine=False`` (``bias`` also when
      ``bias=False``);
    * buffers, saved in the ``state_dict`` but not learned: ``running_mean`` (zeros),
      ``running_var`` (ones) and ``num_batches_tracked`` (a 0-d int64 count); all ``None``
      when ``track_running_stats=False``.

    ``forward`` follows ``torch.nn.modules.batchnorm._BatchNorm.forward``: count the batch
    and pick the momentum (:meth:`_count_batch`), pick batch or running statistics
    (:meth:`_use_batch_stats`), and call :attr:`functional`. From torch's base classes come
    what is not the lesson: ``repr``, and loading a ``state_dict`` saved before
    ``num_batches_tracked`` existed.
    """

    # The function forward calls, with F.batch_norm's signature: bncourse.triton_bn's modules
    # are these modules with their own function here.
    functional = staticmethod(batch_norm)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        nn.Module.__init__(self)  # (not _BatchNorm's, which would register the same state)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch seen (only if they are tracked)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, then weight to 1 and bias to 0: the identity."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def _count_batch(self) -> float:
        """Count a training batch in ``num_batches_tracked`` (when tracking) and return the
        momentum to hand to batch_norm: the module's, or 1 / (batches so far) for ``None``."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average of all batches so far
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def _use_batch_stats(self) -> bool:
        """Normalize with the batch's statistics: in training, and in evaluation when there
        are no running ones (``track_running_stats=False``)."""
        return self.training or (self.running_mean is None and self.running_var is None)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles instead of this module: TorchScript cannot compile
        a Python ``autograd.Function``, so it gets ``torch.nn``'s module of the same name
        holding this module's parameters and buffers (the same tensors, so training the
        scripted model trains this one): the same results, within rounding, from ATen's
        kernels, saved and loaded without bncourse. It warns once that it does."""
        if not _warned_script:
            _warned_script.append(True)
            warnings.warn(
                f"torch.jit.script: {type(self).__name__} of bncourse is compiled as "
                f"torch.nn.{type(self).__name__} with the same parameters and buffers "
                "(TorchScript cannot compile a Python autograd.Function)",
                stacklevel=2,
            )
        native = getattr(nn, type(self).__name__)(
            self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats
        )
        native._parameters.update(self._parameters)
        native._buffers.update(self._buffers)
        return native.train(self.training)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = self._count_batch()
        # Hand over the buffers to be updated (training and tracking) or used (evaluation).
        pass_buffers = not self.training or self.track_running_stats
        return self.functional(
            input,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            self.weight,
            self.bias,
            self._use_batch_stats(),
            factor,
            self.eps,
        )


class BatchNorm1d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm1d``: input ``(N, C)`` or ``(N, C, L)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(wrong_input_dimensions("2D or 3D", input.dim()))


class BatchNorm2d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm2d``: input ``(N, C, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(wrong_input_dimensions("4D", input.dim()))


class BatchNorm3d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm3d``: input ``(N, C, D, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(wrong_input_dimensions("5D", input.dim()))
