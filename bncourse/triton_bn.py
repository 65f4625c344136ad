"""BatchNorm as Triton kernels: ``batch_norm`` with ``F.batch_norm``'s signature, and modules.

Where it runs.  On a machine with a CUDA GPU the kernels are compiled for it and take CUDA
tensors.  Without one, importing this module sets ``TRITON_INTERPRET=1`` (unless you set it
yourself): Triton then *interprets* the same kernels with NumPy, one program after another,
on CPU tensors.  That is slow (keep inputs near 10^4 values) but runs every line of every
kernel, which is how the course tests them on a laptop and in CI.  :data:`INTERPRETED` says
which of the two this process got; the variable must be set before this module is imported.

The algorithm (chapter 8 walks through it tile by tile).  The input ``(N, C, *spatial)`` is
viewed as a 3-d array ``(N', C, S')`` with strides, and covered by **tiles** of
``BLOCK_C`` channels by ``BLOCK_S`` positions, chosen so that the tile's long side is the
memory-contiguous one (see :func:`tiling`):

* contiguous (NCHW-like, "planes"): ``(N, C, S)`` with ``S = prod(spatial)``; a channel's
  values are ``N`` runs of ``S`` contiguous numbers, and a tile is ``BLOCK_C`` such runs side
  by side, read along the runs;
* channels last (``torch.channels_last``, and every contiguous ``(N, C)``): ``(1, C, N*S)``,
  rows of ``C`` contiguous channels; a tile is ``BLOCK_S`` rows of ``BLOCK_C`` channels, read
  along the rows.

Each program of a kernel handles ``TILES_PER_PROGRAM`` tiles of one block of channels, in a
fixed order.  Training forward, three kernels (2 reads and 1 write of the tensor):

1. :func:`_stats_kernel`: per tile and channel ``(count, mean, M2)`` (``M2`` = sum of squared
   deviations from the tile's mean, by the corrected two-pass formula on values held in
   registers), merged into the program's running triple with Chan's formula; one partial
   triple per program and channel goes to a small ``(P, C)`` buffer.
2. :func:`_finalize_stats_kernel`: merges the ``P`` partials of each channel in a fixed order
   (chunks of rows, each merged like :func:`bncourse.distributed.merge_stats`, the same
   formula in torch, then folded in with Chan's formula), writes ``mean``, ``var`` and
   ``invstd = 1/sqrt(var + eps)``, and updates the running statistics in the same launch:
   ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance, as in
   :func:`bncourse.torch_bn.update_running_stats` (fused here to save nine small launches).
3. :func:`_normalize_kernel`: ``y = (x - mean) * invstd * weight + bias``, one elementwise pass.

Nowhere ``E[x^2] - E[x]^2``: every merge adds non-negative terms.  Backward (training: 4
reads and 1 write): :func:`_backward_sums_kernel` writes per-program partial sums of ``dy``
and ``dy * (x - mean)``; :func:`_backward_finalize_kernel` adds them up in a fixed order and
forms ``grad_weight``, ``grad_bias`` and the three per-channel coefficients of
``dx = a * dy + k * (x - mean) + c`` (:func:`bncourse.torch_bn.grad_input_from_sums`'s closed
form); :func:`_grad_input_kernel` computes ``dx``.  No atomics: every sum has a fixed order,
so results are bitwise reproducible run to run.

Precision: values are loaded in their dtype (float32, float16, bfloat16 or float64) and all
arithmetic happens in :func:`bncourse.torch_bn.accumulation_dtype` (float32 for the half
types); results are rounded once, to the output's dtype.  Scalars (``eps``, ``momentum``,
``1/m``) reach the kernels as float32, Triton's type for Python floats: for float64 inputs
that limits the running statistics to float32's relative precision (~1e-7).

What is shared with :mod:`bncourse.torch_bn` (one implementation of each thing): the argument
and tensor checks and the empty-batch answer (:func:`bncourse.torch_bn.apply_checked`), the
accumulation dtype, and the modules: :class:`BatchNorm1d`/``2d``/``3d`` here are the torch_bn
modules with :func:`batch_norm` as their ``functional``.  The backward is not itself
differentiable (no double backward; torch_bn's is).
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import numpy as np

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    # No GPU: run the kernels in Triton's interpreter, on CPU tensors. Triton reads this when
    # a kernel is decorated with @triton.jit, below, so it must be set before that.
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.autograd.function import once_differentiable  # noqa: E402

from . import torch_bn  # noqa: E402

__all__ = [
    "INTERPRETED",
    "TILE_ELEMENTS",
    "TARGET_PROGRAMS",
    "Tiling",
    "tiling",
    "partial_stats",
    "batch_stats",
    "TritonBatchNormFunction",
    "batch_norm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
]

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
"""True when the kernels run in Triton's interpreter (CPU tensors), False when compiled (CUDA)."""

TILE_ELEMENTS = 4096
"""Values per tile (at most): 16 KiB of float32, a few dozen registers per thread."""

TARGET_PROGRAMS = 1024
"""About how many programs a kernel launches: several per multiprocessor of a large GPU."""


# --------------------------------------------------------------------------------------------
# Kernels. Shared conventions: x is indexed as a (N', C, S') array with strides (stride_n,
# stride_c, stride_s); tile t of a program covers the channels c (a BLOCK_C vector) at
# n = t // s_blocks and positions s = (t % s_blocks) * BLOCK_S + [0, BLOCK_S). Partials are
# (P, C) row-major float buffers, one row per program along the tiles.
# --------------------------------------------------------------------------------------------
@triton.jit
def _tile(t, c, C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,
          BLOCK_S: tl.constexpr, INDEX: tl.constexpr):
    """Offsets ``(BLOCK_C, BLOCK_S)`` of tile ``t`` for channels ``c``, and which are valid."""
    n = t // s_blocks
    s = (t % s_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (c < C)[:, None] & (s < S)[None, :] & (t < num_tiles)
    offsets = (n.to(INDEX) * stride_n + c.to(INDEX)[:, None] * stride_c
               + s.to(INDEX)[None, :] * stride_s)
    return offsets, mask


@triton.jit
def _chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """``(count, mean, M2)`` of the union of two parts, per channel (Chan et al., 1983)."""
    n = n_a + n_b
    w_b = n_b / tl.maximum(n, 1.0)  # a part with no values has weight 0
    delta = mean_b - mean_a
    return n, mean_a + delta * w_b, m2_a + m2_b + delta * delta * n_a * w_b


@triton.jit
def _tile_stats(x, mask):
    """Per row (channel) of a tile: ``(count, mean, M2)`` of its valid values.

    The corrected two-pass formula on values already in registers: a first mean, the
    deviations ``d`` from it, then ``mean += mean(d)`` and ``M2 = sum(d^2) - count * mean(d)^2``
    (as :func:`bncourse.torch_bn.batch_stats`), clamped at 0 against rounding."""
    count = tl.sum(mask.to(x.dtype), axis=1)
    safe = tl.maximum(count, 1.0)
    mean = tl.sum(x, axis=1) / safe  # masked entries were loaded as 0
    d = tl.where(mask, x - mean[:, None], 0.0)
    correction = tl.sum(d, axis=1) / safe
    m2 = tl.maximum(tl.sum(d * d, axis=1) - count * correction * correction, 0.0)
    return count, mean + correction, m2


@triton.jit
def _stats_kernel(x_ptr, count_ptr, mean_ptr, m2_ptr,
                  C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,
                  TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Pass 1 of the forward: one partial ``(count, mean, M2)`` per program and channel."""
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n_acc = tl.zeros([BLOCK_C], ACC)
    mean_acc = tl.zeros([BLOCK_C], ACC)
    m2_acc = tl.zeros([BLOCK_C], ACC)
    for i in range(TILES_PER_PROGRAM):  # a fixed order: deterministic
        offsets, mask = _tile(pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
                              stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        n_tile, mean_tile, m2_tile = _tile_stats(x, mask)
        n_acc, mean_acc, m2_acc = _chan_merge(n_acc, mean_acc, m2_acc, n_tile, mean_tile, m2_tile)
    out = pid_t * C + c
    tl.store(count_ptr + out, n_acc, mask=c < C)
    tl.store(mean_ptr + out, mean_acc, mask=c < C)
    tl.store(m2_ptr + out, m2_acc, mask=c < C)


@triton.jit
def _finalize_stats_kernel(count_ptr, mean_ptr, m2_ptr, P, C,
                           running_mean_ptr, running_var_ptr,
                           out_mean_ptr, out_var_ptr, out_invstd_ptr,
                           inv_m, unbias, momentum, eps,
                           TRAINING: tl.constexpr, UPDATE: tl.constexpr,
                           NUM_CHUNKS: tl.constexpr, BLOCK_P: tl.constexpr,
                           BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """Pass 2: per channel, the batch (training) or running (evaluation) mean and variance,
    ``invstd``, and the running statistics' update (training, ``UPDATE``)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    if TRAINING:
        n_acc = tl.zeros([BLOCK_C], ACC)
        mean_acc = tl.zeros([BLOCK_C], ACC)
        m2_acc = tl.zeros([BLOCK_C], ACC)
        for k in range(NUM_CHUNKS):  # BLOCK_P partials at a time, in a fixed order
            p = k * BLOCK_P + tl.arange(0, BLOCK_P)
            mask = (p < P)[:, None] & c_ok[None, :]
            offsets = p[:, None] * C + c[None, :]
            counts = tl.load(count_ptr + offsets, mask=mask, other=0.0)
            means = tl.load(mean_ptr + offsets, mask=mask, other=0.0)
            m2s = tl.load(m2_ptr + offsets, mask=mask, other=0.0)
            # The chunk's (count, mean, M2): distributed.merge_stats's formula, with its mean
            # corrected like a two-pass mean (the weighted sum of means near 1e4 rounds).
            n_chunk = tl.sum(counts, axis=0)
            safe = tl.maximum(n_chunk, 1.0)
            mean_chunk = tl.sum(counts * means, axis=0) / safe
            mean_chunk += tl.sum(counts * (means - mean_chunk[None, :]), axis=0) / safe
            delta = means - mean_chunk[None, :]
            m2_chunk = tl.sum(m2s, axis=0) + tl.sum(counts * delta * delta, axis=0)
            n_acc, mean_acc, m2_acc = _chan_merge(n_acc, mean_acc, m2_acc,
                                                  n_chunk, mean_chunk, m2_chunk)
        mean = mean_acc
        var = m2_acc * inv_m  # biased: this is what normalizes the batch
        if UPDATE:
            running_mean = tl.load(running_mean_ptr + c, mask=c_ok).to(ACC)
            running_var = tl.load(running_var_ptr + c, mask=c_ok).to(ACC)
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * (var * unbias)
            tl.store(running_mean_ptr + c, running_mean.to(running_mean_ptr.dtype.element_ty), mask=c_ok)
            tl.store(running_var_ptr + c, running_var.to(running_var_ptr.dtype.element_ty), mask=c_ok)
    else:
        mean = tl.load(running_mean_ptr + c, mask=c_ok, other=0.0).to(ACC)
        var = tl.load(running_var_ptr + c, mask=c_ok, other=1.0).to(ACC)
    tl.store(out_mean_ptr + c, mean, mask=c_ok)
    tl.store(out_var_ptr + c, var, mask=c_ok)
    tl.store(out_invstd_ptr + c, 1.0 / tl.sqrt(var + eps), mask=c_ok)


@triton.jit
def _normalize_kernel(x_ptr, y_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr,
                      C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,
                      HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                      TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Pass 3: ``y = (x - mean) * (invstd * weight) + bias``, elementwise; ``y`` has ``x``'s strides."""
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
    for i in range(TILES_PER_PROGRAM):
        offsets, mask = _tile(pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
                              stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_sums_kernel(x_ptr, dy_ptr, mean_ptr, sum_dy_ptr, sum_dy_xc_ptr,
                          C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,
                          TILES_PER_PROGRAM: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_S: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr):
    """Backward pass 1: per program and channel, ``sum(dy)`` and ``sum(dy * (x - mean))``."""
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mean = tl.load(mean_ptr + c, mask=c < C, other=0.0)
    sum_dy = tl.zeros([BLOCK_C], ACC)
    sum_dy_xc = tl.zeros([BLOCK_C], ACC)
    for i in range(TILES_PER_PROGRAM):
        offsets, mask = _tile(pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
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
def _backward_finalize_kernel(sum_dy_ptr, sum_dy_xc_ptr, P, C, invstd_ptr, weight_ptr,
                              grad_weight_ptr, grad_bias_ptr, coef_ptr, inv_m,
                              HAS_SUMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                              WANT_WEIGHT: tl.constexpr, WANT_BIAS: tl.constexpr,
                              TRAINING: tl.constexpr, NUM_CHUNKS: tl.constexpr,
                              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """Backward pass 2: the sums over all programs (fixed order), ``grad_weight``,
    ``grad_bias``, and the rows ``a``, ``k``, ``c`` of ``coef`` (``(3, C)``) for
    ``dx = a * dy + k * (x - mean) + c``: ``a = weight * invstd``; in training
    ``k = -a * invstd^2 * sum(dy * xc) / m`` (the variance path) and ``c = -a * sum(dy) / m``
    (the mean path); in evaluation ``k = c = 0``."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    a = invstd
    if HAS_WEIGHT:
        a = invstd * tl.load(weight_ptr + c, mask=c_ok, other=0.0).to(ACC)
    k_coef = tl.zeros([BLOCK_C], ACC)
    c_coef = tl.zeros([BLOCK_C], ACC)
    if HAS_SUMS:
        sum_dy = tl.zeros([BLOCK_C], ACC)
        sum_dy_xc = tl.zeros([BLOCK_C], ACC)
        for k in range(NUM_CHUNKS):
            p = k * BLOCK_P + tl.arange(0, BLOCK_P)
            mask = (p < P)[:, None] & c_ok[None, :]
            offsets = p[:, None] * C + c[None, :]
            sum_dy += tl.sum(tl.load(sum_dy_ptr + offsets, mask=mask, other=0.0), axis=0)
            sum_dy_xc += tl.sum(tl.load(sum_dy_xc_ptr + offsets, mask=mask, other=0.0), axis=0)
        if WANT_WEIGHT:
            grad_weight = sum_dy_xc * invstd
            tl.store(grad_weight_ptr + c, grad_weight.to(grad_weight_ptr.dtype.element_ty), mask=c_ok)
        if WANT_BIAS:
            tl.store(grad_bias_ptr + c, sum_dy.to(grad_bias_ptr.dtype.element_ty), mask=c_ok)
        if TRAINING:
            k_coef = -a * invstd * invstd * sum_dy_xc * inv_m
            c_coef = -a * sum_dy * inv_m
    tl.store(coef_ptr + c, a, mask=c_ok)
    tl.store(coef_ptr + C + c, k_coef, mask=c_ok)
    tl.store(coef_ptr + 2 * C + c, c_coef, mask=c_ok)


@triton.jit
def _grad_input_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, coef_ptr,
                       C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles,
                       TRAINING: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
                       INDEX: tl.constexpr):
    """Backward pass 3: ``dx = a * dy + k * (x - mean) + c`` (evaluation: ``a * dy``, no read of x)."""
    pid_t = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    a = tl.load(coef_ptr + c, mask=c_ok, other=0.0)
    if TRAINING:
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        k_coef = tl.load(coef_ptr + C + c, mask=c_ok, other=0.0)
        c_coef = tl.load(coef_ptr + 2 * C + c, mask=c_ok, other=0.0)
    for i in range(TILES_PER_PROGRAM):
        offsets, mask = _tile(pid_t * TILES_PER_PROGRAM + i, c, C, S, stride_n, stride_c,
                              stride_s, s_blocks, num_tiles, BLOCK_S, INDEX)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(ACC)
        dx = a[:, None] * dy
        if TRAINING:
            x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
            dx += k_coef[:, None] * (x - mean[:, None]) + c_coef[:, None]
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Tiling: which view, which tile shape, how many tiles per program
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiling:
    """How the kernels cover a dense ``(N, C, *spatial)`` tensor.

    ``layout``: ``"planes"`` (each channel's positions contiguous, as in NCHW) or
    ``"channels last"`` (the channels contiguous, as in ``torch.channels_last`` and
    ``(N, C)``).  ``view`` ``(N', C, S')`` and ``strides``: the 3-d array the kernels index
    (``(N, C, S)`` for planes, ``(1, C, N*S)`` for channels last).  A tile is ``block_c``
    channels by ``block_s`` positions; a program handles ``tiles_per_program`` tiles of one
    block of channels; ``grid = (programs, channel_blocks)``; ``programs`` is also the number
    ``P`` of partial rows.
    """

    layout: str
    view: tuple[int, int, int]
    strides: tuple[int, int, int]
    block_c: int
    block_s: int
    tiles_per_program: int

    @property
    def s_blocks(self) -> int:
        return triton.cdiv(self.view[2], self.block_s)

    @property
    def num_tiles(self) -> int:
        """Tiles per block of channels: ``N' * s_blocks``."""
        return self.view[0] * self.s_blocks

    @property
    def programs(self) -> int:
        return triton.cdiv(self.num_tiles, self.tiles_per_program)

    @property
    def channel_blocks(self) -> int:
        return triton.cdiv(self.view[1], self.block_c)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.programs, self.channel_blocks)

    def program_ids(self) -> "np.ndarray":
        """For every element of the ``view`` (an ``(N', C, S')`` array), the program that
        reads it, numbered ``pid_t * channel_blocks + pid_c`` (for pictures of the tiling)."""
        import numpy as np

        n, c, s = (np.arange(k).reshape(shape) for k, shape in
                   zip(self.view, [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]))
        tile = n * self.s_blocks + s // self.block_s
        return (tile // self.tiles_per_program) * self.channel_blocks + c // self.block_c

    def kernel_args(self) -> tuple[int, ...]:
        """``C, S, stride_n, stride_c, stride_s, s_blocks, num_tiles`` as the kernels take them."""
        return (self.view[1], self.view[2], *self.strides, self.s_blocks, self.num_tiles)


def _dense(x: Tensor) -> Tensor:
    """``x`` if it is contiguous or channels-last contiguous, else a contiguous copy."""
    if x.is_contiguous():
        return x
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    if x.ndim in formats and x.is_contiguous(memory_format=formats[x.ndim]):
        return x
    return x.contiguous()


def tiling(x: Tensor, tile_elements: int | None = None,
           target_programs: int | None = None) -> Tiling:
    """The :class:`Tiling` of a dense (see :func:`_dense`) ``(N, C, *spatial)`` tensor.

    The tile's long side runs along memory: for planes, ``block_s`` covers a channel's run of
    ``S`` positions (up to ``tile_elements``) and ``block_c`` fills the rest of the tile with
    neighbouring channels; for channels last, ``block_c`` covers up to 64 channels of a row and
    ``block_s`` as many rows as fill the tile.  Block sizes are powers of two (Triton's rule).
    ``tiles_per_program`` (a power of two, so that few variants of the kernels are compiled)
    makes at least ``target_programs`` programs when there are that many tiles.
    """
    tile_elements = tile_elements or TILE_ELEMENTS  # (read at call time: tests shrink them)
    target_programs = target_programs or TARGET_PROGRAMS
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // (n * c)
    view = x.view(n, c, s)  # merges the spatial axes: fine for contiguous and channels-last
    stride_n, stride_c, stride_s = view.stride()
    if stride_c == 1 and (s == 1 or n == 1 or stride_n == s * stride_s):
        layout, shape = "channels last", (1, c, n * s)
        strides = (0, 1, stride_s if s > 1 else stride_n)
        block_c = min(triton.next_power_of_2(c), 64)
        block_s = min(triton.next_power_of_2(n * s), max(1, tile_elements // block_c))
    else:
        layout, shape, strides = "planes", (n, c, s), (stride_n, stride_c, stride_s)
        block_s = min(triton.next_power_of_2(s), tile_elements)
        block_c = min(triton.next_power_of_2(c), max(1, tile_elements // block_s))
    tiles = shape[0] * triton.cdiv(shape[2], block_s) * triton.cdiv(c, block_c)
    tiles_per_program = 1 << (max(1, tiles // target_programs).bit_length() - 1)  # 2^k <= ratio
    return Tiling(layout, shape, strides, block_c, block_s, tiles_per_program)


def _launch_options(plan: Tiling, x: Tensor) -> dict[str, Any]:
    """The compile-time options shared by the three big kernels."""
    acc = torch_bn.accumulation_dtype(x.dtype)
    return dict(TILES_PER_PROGRAM=plan.tiles_per_program, BLOCK_C=plan.block_c,
                BLOCK_S=plan.block_s, ACC=tl.float64 if acc == torch.float64 else tl.float32,
                INDEX=tl.int64 if x.numel() >= 2**31 else tl.int32,
                num_warps=8 if plan.block_c * plan.block_s >= 4096 else 4)


def _reduce_options(partials: int, channels: int) -> dict[str, int]:
    """Chunking of the small ``(P, C)`` reductions: up to 16 channels per program, chunks of
    up to :data:`TILE_ELEMENTS` partials."""
    block_c = min(triton.next_power_of_2(channels), 16)
    block_p = min(triton.next_power_of_2(partials), max(1, TILE_ELEMENTS // block_c))
    return dict(BLOCK_C=block_c, BLOCK_P=block_p, NUM_CHUNKS=triton.cdiv(partials, block_p))


def _check_device(input: Tensor, *others: Tensor | None) -> None:
    """The kernels' device rule: CUDA tensors when compiled, CPU tensors when interpreted."""
    wanted = "cpu" if INTERPRETED else "cuda"
    if input.device.type != wanted:
        how = ("this process runs the kernels in Triton's interpreter (TRITON_INTERPRET=1), "
               "which takes CPU tensors" if INTERPRETED else
               "the kernels are compiled for the GPU; without one, import bncourse.triton_bn "
               "with TRITON_INTERPRET=1 to interpret them on CPU tensors")
        raise RuntimeError(f"triton_bn: got an input on {input.device}, but {how}")
    for other in others:
        if other is not None and other.device != input.device:
            raise RuntimeError(f"triton_bn: expected every tensor on {input.device}, got one "
                               f"on {other.device}")


def _flat(t: Tensor | None) -> Tensor | None:
    """A per-channel tensor (any shape, ``C`` elements) as a contiguous ``(C,)`` view of the
    same memory when possible (the kernels write running statistics in place)."""
    if t is None:
        return None
    return t.view(-1) if t.is_contiguous() else t.reshape(-1).contiguous()


# --------------------------------------------------------------------------------------------
# Host side: launching the kernels
# --------------------------------------------------------------------------------------------
def partial_stats(x: Tensor, plan: Tiling | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pass 1 alone: the partial ``(counts, means, m2s)``, each ``(P, C)`` in the accumulation
    dtype; row ``p`` summarizes the values program ``p`` read (its tiles, every channel).
    ``distributed.merge_stats(counts[:, 0], means, m2s)`` merges them."""
    x = _dense(x)
    plan = plan or tiling(x)
    acc = torch_bn.accumulation_dtype(x.dtype)
    counts, means, m2s = torch.empty((3, plan.programs, plan.view[1]), dtype=acc, device=x.device)
    with _device(x):
        _stats_kernel[plan.grid](x, counts, means, m2s, *plan.kernel_args(),
                                 **_launch_options(plan, x))
    return counts, means, m2s


def _device(x: Tensor) -> AbstractContextManager[Any]:
    """Launch on ``x``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else nullcontext()


def _statistics(x: Tensor, plan: Tiling, running_mean: Tensor | None,
                running_var: Tensor | None, training: bool, momentum: float,
                eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Passes 1 and 2: per-channel ``(mean, var, invstd)`` in the accumulation dtype, and
    the running statistics updated in place (training, when given)."""
    c = plan.view[1]
    acc = torch_bn.accumulation_dtype(x.dtype)
    mean, var, invstd = torch.empty((3, c), dtype=acc, device=x.device)
    m = x.numel() // c
    if training:
        counts, means, m2s = partial_stats(x, plan)
        partials = plan.programs
    else:
        counts = means = m2s = mean  # not read in evaluation
        partials = 1
    update = training and running_mean is not None
    rm, rv = _flat(running_mean), _flat(running_var)
    options = _reduce_options(partials, c)
    with _device(x):
        _finalize_stats_kernel[(triton.cdiv(c, options["BLOCK_C"]),)](
            counts, means, m2s, partials, c,
            rm if rm is not None else mean, rv if rv is not None else var,
            mean, var, invstd,
            1.0 / m, m / (m - 1) if m > 1 else 1.0, momentum, eps,
            TRAINING=training, UPDATE=update,
            ACC=tl.float64 if acc == torch.float64 else tl.float32, num_warps=4, **options)
    for given, flat in ((running_mean, rm), (running_var, rv)):
        if update and given is not None and flat.data_ptr() != given.data_ptr():
            given.copy_(flat.view_as(given))  # a non-contiguous buffer: write back
    return mean, var, invstd


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x`` (``(N, C, *spatial)``) by the kernels
    (passes 1 and 2), each ``(C,)`` in the accumulation dtype."""
    x = _dense(x)
    _check_device(x)
    mean, var, _ = _statistics(x, tiling(x), None, None, True, 0.0, 1.0)
    return mean, var


class TritonBatchNormFunction(torch.autograd.Function):
    """BatchNorm as one autograd node computed by the Triton kernels.

    ``apply(input, weight, bias, running_mean, running_var, training, momentum, eps)``: the
    arguments of :class:`bncourse.torch_bn.BatchNormFunction`, already checked by
    :func:`bncourse.torch_bn.apply_checked`.  Saves the (dense) input, ``weight``, and the
    per-channel ``mean`` and ``invstd``; the output, ``dx`` and a ``dy`` of another layout
    all take the input's strides (a ``channels_last`` input gives a ``channels_last`` output).
    """

    @staticmethod
    def forward(ctx: Any, input: Tensor, weight: Tensor | None, bias: Tensor | None,
                running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                momentum: float, eps: float) -> Tensor:
        _check_device(input, weight, bias, running_mean, running_var)
        x = _dense(input)
        plan = tiling(x)
        mean, _, invstd = _statistics(x, plan, running_mean, running_var, training, momentum, eps)
        w, b = _flat(weight), _flat(bias)
        y = torch.empty_like(x)
        with _device(x):
            _normalize_kernel[plan.grid](
                x, y, mean, invstd, w if w is not None else mean, b if b is not None else mean,
                *plan.kernel_args(), HAS_WEIGHT=w is not None, HAS_BIAS=b is not None,
                **_launch_options(plan, x))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.training, ctx.plan = training, plan
        ctx.bias_like = None if bias is None else (bias.dtype, bias.shape)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        plan: Tiling = ctx.plan
        c = plan.view[1]
        dy = grad_output
        if dy.stride() != x.stride():  # e.g. an expanded gradient, or another memory format
            dy = torch.empty_like(x).copy_(grad_output)
        acc = torch_bn.accumulation_dtype(x.dtype)
        has_sums = need_weight or need_bias or (need_input and ctx.training)
        options = _launch_options(plan, x)
        partials = plan.programs if has_sums else 1
        sum_dy, sum_dy_xc = torch.empty((2, partials, c), dtype=acc, device=x.device)
        grad_weight = torch.empty(c, dtype=weight.dtype, device=x.device) if need_weight else None
        grad_bias = torch.empty(c, dtype=ctx.bias_like[0], device=x.device) if need_bias else None
        coef = torch.empty((3, c), dtype=acc, device=x.device)
        w = _flat(weight)
        reduce = _reduce_options(partials, c)
        with _device(x):
            if has_sums:
                _backward_sums_kernel[plan.grid](x, dy, mean, sum_dy, sum_dy_xc,
                                                 *plan.kernel_args(), **options)
            _backward_finalize_kernel[(triton.cdiv(c, reduce["BLOCK_C"]),)](
                sum_dy, sum_dy_xc, partials, c, invstd, w if w is not None else invstd,
                grad_weight if grad_weight is not None else coef,
                grad_bias if grad_bias is not None else coef, coef, 1.0 / (x.numel() // c),
                HAS_SUMS=has_sums, HAS_WEIGHT=w is not None, WANT_WEIGHT=need_weight,
                WANT_BIAS=need_bias, TRAINING=ctx.training,
                ACC=options["ACC"], num_warps=4, **reduce)
            grad_input = None
            if need_input:
                grad_input = torch.empty_like(x)
                _grad_input_kernel[plan.grid](x, dy, grad_input, mean, coef, *plan.kernel_args(),
                                              TRAINING=ctx.training, **options)
        if grad_weight is not None:
            grad_weight = grad_weight.view(weight.shape)
        if grad_bias is not None:
            grad_bias = grad_bias.view(ctx.bias_like[1])
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


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
    """``torch.nn.functional.batch_norm`` computed by the Triton kernels.

    The signature, semantics, checks and error messages of :func:`bncourse.torch_bn.batch_norm`
    (they share :func:`bncourse.torch_bn.apply_checked`).  ``input``: ``(N, C)`` or
    ``(N, C, *spatial)``, float32, float16, bfloat16 or float64, on a CUDA device (compiled
    kernels) or the CPU (the interpreter, see :data:`INTERPRETED`).
    """
    return torch_bn.apply_checked(TritonBatchNormFunction, input, running_mean, running_var,
                                  weight, bias, training, momentum, eps)


class BatchNorm1d(torch_bn.BatchNorm1d):
    """Drop-in for ``torch.nn.BatchNorm1d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)


class BatchNorm2d(torch_bn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)


class BatchNorm3d(torch_bn.BatchNorm3d):
    """Drop-in for ``torch.nn.BatchNorm3d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)
