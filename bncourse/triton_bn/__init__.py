"""BatchNorm as Triton kernels: ``batch_norm`` with ``F.batch_norm``'s signature, and modules.

Where it runs: on the input's device, decided per call.  CUDA tensors go to the kernels
compiled for the GPU; CPU tensors to the same kernels run by Triton's *interpreter*, which
executes them with NumPy, one program after another.  That is slow (keep inputs near 10^4
values) but runs every line of every kernel, which is how the course tests them on a laptop
and in CI.  Importing the package sets nothing: Triton's own switch, ``TRITON_INTERPRET=1``,
would interpret every kernel of the process; instead :mod:`.backends` launches each
``@triton.jit`` kernel compiled, or its function in an ``InterpretedFunction``, by device
(see there for how the interpreter is kept from leaving Triton changed).  Triton publishes
Linux wheels only: on macOS and Windows importing this package raises an ``ImportError``
that says so.

The modules, read in this order:

* :mod:`.kernels`: the kernels, in Triton's language;
* :mod:`.tiles`: how the kernels cover a tensor (:func:`tiling`) and their launch options;
* :mod:`.backends`: the compiled kernels, the interpreted ones, and the choice by device;
* :mod:`.functional`: the host side, :func:`batch_norm` and the PyTorch operators;
* :mod:`.modules`: :class:`BatchNorm1d`, ``2d`` and ``3d``;
* :mod:`.parity`: the comparison with ``torch.nn`` that chapter 8 prints.

The algorithm (chapter 8 walks through it tile by tile).  The input ``(N, C, *spatial)`` is
viewed as a 3-d array ``(N', C, S')`` and covered by tiles of ``BLOCK_C`` channels by
``BLOCK_S`` positions whose long side is the memory-contiguous one (:func:`tiling`).  Each
program of a kernel handles ``TILES_PER_PROGRAM`` tiles of one block of channels, in a fixed
order.  Training forward, three kernels (2 reads and 1 write of the tensor):

1. ``stats_kernel``: per tile and channel ``(count, mean, M2)`` (``M2`` = sum of squared
   deviations from the tile's mean, by the corrected two-pass formula on values held in
   registers), merged into the program's running triple with Chan's formula
   (:func:`bncourse.conventions.chan_merge`); one partial triple per program and channel goes
   to a small ``(P, C)`` buffer.
2. ``finalize_stats_kernel``: merges the ``P`` partials of each channel in a fixed order
   (chunks of rows, each merged like :func:`bncourse.conventions.merge_stats`, then folded in
   with Chan's formula), writes ``mean``, ``var`` and ``invstd = 1/sqrt(var + eps)``, and
   updates the running statistics in the same launch:
   ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance, as in
   :func:`bncourse.torch_bn.update_running_stats` (fused here to save nine small launches).
3. ``normalize_kernel``: ``y = (x - mean) * invstd * weight + bias``, one elementwise pass
   (in evaluation the fixed affine map ``x * a + (bias - mean * a)``, its two per-channel
   vectors formed on the host: ATen's order, which gives PyTorch's answer on degenerate
   input too).

Nowhere ``E[x^2] - E[x]^2``: every merge adds non-negative terms.  Backward (training: 4
reads and 1 write): ``backward_sums_kernel`` writes per-program partial sums of ``dy`` and
``dy * (x - mean)``; ``backward_finalize_kernel`` adds them up in a fixed order and forms
``grad_weight``, ``grad_bias`` and the three per-channel coefficients of
``dx = (dy + k * (x - mean) + c) * a`` (:func:`bncourse.torch_bn.grad_input_from_sums`'s closed
form); ``grad_input_kernel`` computes ``dx``.  No atomics: every sum has a fixed order, so
results are bitwise reproducible run to run.

Precision: values are loaded in their dtype (float32, float16, bfloat16 or float64) and all
arithmetic happens in :func:`bncourse.validation.accumulation_dtype` (float32 for the half
types); results are rounded once, to the output's dtype.  Scalars (``eps``, ``momentum``,
``1/m``) reach the kernels as float32, Triton's type for Python floats: for float64 inputs
that limits the running statistics to float32's relative precision (~1e-7).

What is shared with :mod:`bncourse.torch_bn` (one implementation of each thing): the argument
and tensor checks and the empty-batch answer (:func:`bncourse.validation.apply_checked`), the
accumulation dtype, and the modules: :class:`BatchNorm1d`/``2d``/``3d`` here are the torch_bn
modules with :func:`batch_norm` as their ``functional``.  The backward is not itself
differentiable (no double backward; torch_bn's is).
"""

from __future__ import annotations

try:
    import triton  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != "triton":
        raise
    raise ImportError(
        "bncourse.triton_bn: chapter 8's kernels need Linux (Triton publishes Linux wheels "
        "only), and Triton is not installed here. On macOS or Windows, read chapter 8 with "
        "its committed outputs, or run it on Colab or Binder; on Linux, pip install triton "
        "(requirements.txt pins the tested version)."
    ) from error

from .functional import batch_norm, batch_stats, partial_stats
from .kernels import (
    backward_finalize_kernel,
    backward_sums_kernel,
    chan_merge,
    finalize_stats_kernel,
    grad_input_kernel,
    normalize_kernel,
    stats_kernel,
    tile_offsets,
    tile_stats,
)
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .parity import compare_with_torch_nn
from .tiles import TARGET_PROGRAMS, TILE_ELEMENTS, Tiling, tiling

__all__ = [
    "batch_norm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "partial_stats",
    "batch_stats",
    "Tiling",
    "tiling",
    "TILE_ELEMENTS",
    "TARGET_PROGRAMS",
    "compare_with_torch_nn",
    # the kernels' source, in Triton's language (chapter 8 prints them)
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
