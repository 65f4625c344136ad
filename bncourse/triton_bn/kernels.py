"""The kernels, in Triton's language: what one program does with its tiles.

Each function is decorated with ``@triton.jit``: compiled for the GPU at its first launch
(for CUDA tensors), or run by Triton's interpreter (for CPU tensors, see :mod:`.backends`).
A kernel is launched as ``kernel[grid](name=value, ...)``, one program per cell of ``grid``;
the three helpers are called from inside kernels.

Conventions shared by every kernel:

* ``x`` is indexed as a 3-d array ``(N', C, S')`` with strides ``(stride_n, stride_c,
  stride_s)`` (:class:`bncourse.triton_bn.Tiling` says which view of the input that is);
* a program has two ids: ``program_id(0)`` numbers the programs along the tiles,
  ``program_id(1)`` the blocks of ``BLOCK_C`` channels;
* tile ``t`` covers, for the block's channels, ``BLOCK_S`` positions of one ``n``:
  ``n = t // s_blocks``, positions from ``(t % s_blocks) * BLOCK_S`` (see :func:`tile_offsets`);
  program ``p`` handles tiles ``p * TILES_PER_PROGRAM`` to ``(p + 1) * TILES_PER_PROGRAM - 1``;
* partial results are ``(P, C)`` row-major buffers, one row per program along the tiles;
* ``ACC`` is the accumulation dtype (float32, or float64 for float64 inputs), ``INDEX`` the
  dtype of offsets (int64 for tensors of 2^31 values or more).
"""

# The kernels' signatures stay compact, not one parameter per line: chapter 8 prints them.
# fmt: off
from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "tile_offsets",
    "chan_merge",
    "tile_stats",
    "stats_kernel",
    "finalize_stats_kernel",
    "normalize_kernel",
    "backward_sums_kernel",
    "backward_finalize_kernel",
    "grad_input_kernel",
]


# Helpers, called from inside the kernels
@triton.jit
def tile_offsets(t, c, C, S, stride_n, stride_c, stride_s, s_blocks,
                 num_tiles, BLOCK_S: tl.constexpr, INDEX: tl.constexpr):
    """Offsets ``(BLOCK_C, BLOCK_S)`` of tile ``t`` for channels ``c``, and
    which are valid."""
    n = t // s_blocks
    s = (t % s_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    # Off the edge: channels past C, positions past S, tiles past the last
    # (padding tiles)
    mask = (c < C)[:, None] & (s < S)[None, :] & (t < num_tiles)
    offsets = (n.to(INDEX) * stride_n + c.to(INDEX)[:, None] * stride_c
               + s.to(INDEX)[None, :] * stride_s)
    return offsets, mask


@triton.jit
def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """``(count, mean, M2)`` of the union of two parts, per channel (Chan et
    al., 1983).

    :func:`bncourse.conventions.chan_merge`'s formula, spelled in Triton's
    language; where a mean is infinite, the merged mean is the weighted sum,
    infinite too, as PyTorch's sum."""
    n = n_a + n_b
    w_b = n_b / tl.maximum(n, 1.0)  # a part with no values has weight 0
    delta = mean_b - mean_a
    mean = tl.where(tl.abs(delta) < float("inf"), mean_a + delta * w_b,
                    mean_a * (1 - w_b) + mean_b * w_b)
    return n, mean, m2_a + m2_b + delta * (n_a * w_b) * delta


@triton.jit
def tile_stats(x, mask):
    """Per row (channel) of a tile: ``(count, mean, M2)`` of its valid values.

    The corrected two-pass formula on values already in registers: a first
    mean, the deviations ``d`` from it, then ``mean += mean(d)`` and
    ``M2 = sum(d^2) - count * mean(d)^2`` (as
    :func:`bncourse.torch_bn.batch_stats`), clamped at 0 against rounding; a
    ``sum(d^2)`` that overflows stays ``inf`` (not ``inf - inf``), an infinite
    mean stays itself."""
    count = tl.sum(mask.to(x.dtype), axis=1)
    safe = tl.maximum(count, 1.0)
    mean = tl.sum(x, axis=1) / safe  # masked entries were loaded as 0
    d = tl.where(mask, x - mean[:, None], 0.0)
    correction = tl.sum(d, axis=1) / safe
    squares = tl.sum(d * d, axis=1)
    m2 = tl.maximum(squares - count * correction * correction, 0.0)
    mean = tl.where(tl.abs(mean) < float("inf"), mean + correction, mean)
    return count, mean, tl.where(squares == float("inf"), squares, m2)


# Forward
@triton.jit
def stats_kernel(
        x_ptr, count_ptr, mean_ptr, m2_ptr,  # the input; three (P, C) outputs
        C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,  # tiling
        TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Pass 1 of the forward: one partial ``(count, mean, M2)`` per program
    and channel."""
    # The program's channels, and its running (count, mean, M2), empty
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n_acc = tl.zeros([BLOCK_C], ACC)
    mean_acc = tl.zeros([BLOCK_C], ACC)
    m2_acc = tl.zeros([BLOCK_C], ACC)
    for i in range(TILES_PER_PROGRAM):  # a fixed order: deterministic
        # Load one tile, summarize it per channel, merge the summary in
        offsets, mask = tile_offsets(
            pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
            stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        n_tile, mean_tile, m2_tile = tile_stats(x, mask)
        n_acc, mean_acc, m2_acc = chan_merge(n_acc, mean_acc, m2_acc,
                                             n_tile, mean_tile, m2_tile)
    # Row pid_t of the partials: this program's summary of every value it read
    out = pid_t * C + c
    tl.store(count_ptr + out, n_acc, mask=c < C)
    tl.store(mean_ptr + out, mean_acc, mask=c < C)
    tl.store(m2_ptr + out, m2_acc, mask=c < C)


@triton.jit
def finalize_stats_kernel(count_ptr, mean_ptr, m2_ptr, P, C,  # (P, C) partials
                          running_mean_ptr, running_var_ptr,  # (C,), updated in place
                          out_mean_ptr, out_var_ptr, out_invstd_ptr,  # (C,) outputs
                          inv_m, unbias, momentum, eps,  # 1/m, m/(m-1), and the module's
                          TRAINING: tl.constexpr, UPDATE: tl.constexpr,
                          NUM_CHUNKS: tl.constexpr, BLOCK_P: tl.constexpr,
                          BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """Pass 2: per channel, the batch (training) or running (evaluation) mean and variance,
    ``invstd``, and the running statistics' update (training, ``UPDATE``).  One program per
    block of ``BLOCK_C`` channels."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    if TRAINING:
        n_acc = tl.zeros([BLOCK_C], ACC)
        mean_acc = tl.zeros([BLOCK_C], ACC)
        m2_acc = tl.zeros([BLOCK_C], ACC)
        for k in range(NUM_CHUNKS):  # BLOCK_P partials at a time, in a fixed order
            # Load a chunk of partial rows
            p = k * BLOCK_P + tl.arange(0, BLOCK_P)
            mask = (p < P)[:, None] & c_ok[None, :]
            offsets = p[:, None] * C + c[None, :]
            counts = tl.load(count_ptr + offsets, mask=mask, other=0.0)
            means = tl.load(mean_ptr + offsets, mask=mask, other=0.0)
            m2s = tl.load(m2_ptr + offsets, mask=mask, other=0.0)
            # The chunk's (count, mean, M2): conventions.merge_stats's formula, with its mean
            # corrected like a two-pass mean (the weighted sum of means near 1e4 rounds).
            n_chunk = tl.sum(counts, axis=0)
            safe = tl.maximum(n_chunk, 1.0)
            mean_chunk = tl.sum(counts * means, axis=0) / safe
            correction = tl.sum(counts * (means - mean_chunk[None, :]), axis=0) / safe
            mean_chunk = tl.where(tl.abs(mean_chunk) < float("inf"), mean_chunk + correction,
                                  mean_chunk)
            delta = tl.where(mask, means - mean_chunk[None, :], 0.0)  # (0 * inf is NaN)
            m2_chunk = tl.sum(m2s, axis=0) + tl.sum(counts * delta * delta, axis=0)
            # Merged into the channels' running triple
            n_acc, mean_acc, m2_acc = chan_merge(n_acc, mean_acc, m2_acc,
                                                 n_chunk, mean_chunk, m2_chunk)
        mean = mean_acc
        var = m2_acc * inv_m  # biased: this is what normalizes the batch
        if UPDATE:
            # running = (1 - momentum) * running + momentum * batch, the variance unbiased
            running_mean = tl.load(running_mean_ptr + c, mask=c_ok).to(ACC)
            running_var = tl.load(running_var_ptr + c, mask=c_ok).to(ACC)
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * (var * unbias)
            tl.store(running_mean_ptr + c, running_mean.to(running_mean_ptr.dtype.element_ty),
                     mask=c_ok)
            tl.store(running_var_ptr + c, running_var.to(running_var_ptr.dtype.element_ty),
                     mask=c_ok)
    else:
        mean = tl.load(running_mean_ptr + c, mask=c_ok, other=0.0).to(ACC)
        var = tl.load(running_var_ptr + c, mask=c_ok, other=1.0).to(ACC)
    tl.store(out_mean_ptr + c, mean, mask=c_ok)
    tl.store(out_var_ptr + c, var, mask=c_ok)
    tl.store(out_invstd_ptr + c, 1.0 / tl.sqrt(var + eps), mask=c_ok)


@triton.jit
def normalize_kernel(
        x_ptr, y_ptr,  # the input and the output, of the same strides
        mean_ptr, invstd_ptr, weight_ptr, bias_ptr,  # (C,) each
        C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,  # tiling
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
        TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Pass 3: ``y = (x - mean) * (invstd * weight) + bias``, elementwise."""
    # The per-channel constants, loaded once per program
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    scale = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    if HAS_WEIGHT:
        scale = scale * tl.load(weight_ptr + c, mask=c_ok, other=0.0).to(ACC)
    shift = tl.zeros([BLOCK_C], ACC)
    if HAS_BIAS:
        shift = tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(ACC)
    # Then one multiply-add per value, rounded once to y's dtype
    for i in range(TILES_PER_PROGRAM):
        offsets, mask = tile_offsets(
            pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
            stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


# Backward
@triton.jit
def backward_sums_kernel(
        x_ptr, dy_ptr, mean_ptr,  # the input, its gradient, (C,) mean
        sum_dy_ptr, sum_dy_xc_ptr,  # two (P, C) outputs
        C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,  # tiling
        TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Backward pass 1: per program and channel, ``sum(dy)`` and
    ``sum(dy * (x - mean))``."""
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mean = tl.load(mean_ptr + c, mask=c < C, other=0.0)
    sum_dy = tl.zeros([BLOCK_C], ACC)
    sum_dy_xc = tl.zeros([BLOCK_C], ACC)
    for i in range(TILES_PER_PROGRAM):
        # Load a tile of x and of dy; add up per channel
        offsets, mask = tile_offsets(
            pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
            stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(ACC)
        centered = tl.where(mask, x - mean[:, None], 0.0)
        sum_dy += tl.sum(dy, axis=1)
        sum_dy_xc += tl.sum(dy * centered, axis=1)
    out = pid_t * C + c
    tl.store(sum_dy_ptr + out, sum_dy, mask=c < C)
    tl.store(sum_dy_xc_ptr + out, sum_dy_xc, mask=c < C)


@triton.jit
def backward_finalize_kernel(sum_dy_ptr, sum_dy_xc_ptr, P, C,  # (P, C) partial sums
                             invstd_ptr, weight_ptr,  # (C,) each
                             grad_weight_ptr, grad_bias_ptr, coef_ptr,  # (C,), (C,), (3, C)
                             inv_m,  # 1 / m
                             HAS_SUMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                             WANT_WEIGHT: tl.constexpr, WANT_BIAS: tl.constexpr,
                             TRAINING: tl.constexpr, NUM_CHUNKS: tl.constexpr,
                             BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """Backward pass 2: the sums over all programs (fixed order), ``grad_weight``,
    ``grad_bias``, and the rows ``a``, ``k``, ``c`` of ``coef`` for
    ``dx = (dy + k * (x - mean) + c) * a``: ``a = weight * invstd``; in training
    ``k = -invstd * (invstd * sum(dy * xc) / m)`` (the variance path; ``invstd**2`` alone
    could overflow) and ``c = -sum(dy) / m`` (the mean path); in evaluation ``k = c = 0``
    (:func:`bncourse.torch_bn.grad_input_from_sums`'s closed form)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    a = invstd
    if HAS_WEIGHT:
        a = invstd * tl.load(weight_ptr + c, mask=c_ok, other=0.0).to(ACC)
    k_coef = tl.zeros([BLOCK_C], ACC)
    c_coef = tl.zeros([BLOCK_C], ACC)
    if HAS_SUMS:
        # Add up the partial rows, BLOCK_P at a time, in a fixed order
        sum_dy = tl.zeros([BLOCK_C], ACC)
        sum_dy_xc = tl.zeros([BLOCK_C], ACC)
        for k in range(NUM_CHUNKS):
            p = k * BLOCK_P + tl.arange(0, BLOCK_P)
            mask = (p < P)[:, None] & c_ok[None, :]
            offsets = p[:, None] * C + c[None, :]
            sum_dy += tl.sum(tl.load(sum_dy_ptr + offsets, mask=mask, other=0.0), axis=0)
            sum_dy_xc += tl.sum(tl.load(sum_dy_xc_ptr + offsets, mask=mask, other=0.0), axis=0)
        # The parameters' gradients, then the coefficients of dx
        if WANT_WEIGHT:
            grad_weight = sum_dy_xc * invstd
            tl.store(grad_weight_ptr + c, grad_weight.to(grad_weight_ptr.dtype.element_ty),
                     mask=c_ok)
        if WANT_BIAS:
            tl.store(grad_bias_ptr + c, sum_dy.to(grad_bias_ptr.dtype.element_ty), mask=c_ok)
        if TRAINING:
            k_coef = -invstd * (invstd * sum_dy_xc * inv_m)
            c_coef = -sum_dy * inv_m
    tl.store(coef_ptr + c, a, mask=c_ok)
    tl.store(coef_ptr + C + c, k_coef, mask=c_ok)
    tl.store(coef_ptr + 2 * C + c, c_coef, mask=c_ok)


@triton.jit
def grad_input_kernel(
        x_ptr, dy_ptr, dx_ptr,  # the input, dy and dx, of the same strides
        mean_ptr, coef_ptr,  # (C,) and (3, C)
        C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,  # tiling
        TRAINING: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
        INDEX: tl.constexpr):
    """Backward pass 3: ``dx = (dy + k * (x - mean) + c) * a`` (evaluation:
    ``dy * a``, and ``x`` is not read)."""
    # The per-channel coefficients, loaded once per program
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    a = tl.load(coef_ptr + c, mask=c_ok, other=0.0)
    if TRAINING:
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        k_coef = tl.load(coef_ptr + C + c, mask=c_ok, other=0.0)
        c_coef = tl.load(coef_ptr + 2 * C + c, mask=c_ok, other=0.0)
    # Then a multiply-add or two per value
    for i in range(TILES_PER_PROGRAM):
        offsets, mask = tile_offsets(
            pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
            stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(ACC)
        if TRAINING:
            x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
            dy += k_coef[:, None] * (x - mean[:, None]) + c_coef[:, None]
        dx = dy * a[:, None]
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
# fmt: on
