"""A first Triton kernel, before BatchNorm's: the sum of each row of a 2-d tensor.

Chapter 8 reads it line by line before the BatchNorm kernels (:mod:`.kernels`), which use the
same pieces on tiles: a program id, a block of offsets, a mask for the ragged edge, a load, a
reduction (``tl.sum``) and a store.  One program handles one row; the row must fit in one
block (``BLOCK >= n_cols``, a power of two, which :func:`row_sum` chooses).  Its offsets are
int32 (the program id and the stride are), which address fewer than 2**31 values, so
:func:`row_sum` refuses larger tensors; the BatchNorm kernels compute theirs in int64 for
such tensors (``INDEX``).

:func:`launcher` gives the kernel to launch for a tensor's device, as the BatchNorm kernels
are chosen (:mod:`.backends`): compiled for CUDA tensors, Triton's interpreter for CPU ones.
"""

# The kernel's signature stays compact: chapter 8 prints it.
# fmt: off
from __future__ import annotations

import types
from typing import Any

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from . import backends

__all__ = ["row_sum_kernel", "row_sum", "launcher"]


@triton.jit
def row_sum_kernel(x_ptr, out_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
    """``out[row] = sum(x[row, :n_cols])``, one program per row."""
    # offsets are int32, enough: row_sum refuses 2**31 values or more
    row = tl.program_id(0)          # which program this is: its row
    cols = tl.arange(0, BLOCK)      # 0, 1, ..., BLOCK - 1
    mask = cols < n_cols            # the lanes inside the row
    x = tl.load(x_ptr + row * stride_row + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row, tl.sum(x, axis=0))  # one number per program
# fmt: on


def launcher(kernel: Any, device: torch.device) -> Any:
    """``kernel`` as launched on ``device`` (``launcher(kernel, x.device)[grid](...)``):
    compiled for CUDA tensors, in Triton's interpreter for CPU tensors (:mod:`.backends`).

    ``kernel`` is a ``@triton.jit`` kernel or the plain function in Triton's language, which
    is jitted here; a plain function can be copied by value (pickled), a jitted one cannot."""
    function = kernel.fn if isinstance(kernel, JITFunction) else kernel
    if backends.for_device(device) is backends.COMPILED:
        if isinstance(kernel, JITFunction):
            return kernel
        if function not in _jitted:
            _jitted[function] = triton.jit(function)
        return _jitted[function]
    return backends._InterpretedKernel(types.SimpleNamespace(fn=function))


_jitted: dict[Any, JITFunction] = {}


def row_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of each row of a 2-d tensor ``x``, by :func:`row_sum_kernel`:
    shape ``(x.shape[0],)``, ``x``'s dtype."""
    if x.ndim != 2:
        raise ValueError(f"row_sum: expected a 2-d tensor, got {x.ndim}-d")
    n = x.numel()
    if n >= 2**31:  # the kernel's int32 offsets would wrap around
        raise ValueError(f"row_sum: int32 offsets need < 2**31 values, got {n}")
    x = x.contiguous()  # value (row, j) at row * stride_row + j
    rows, cols = x.shape
    out = torch.empty(rows, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    block = triton.next_power_of_2(max(cols, 1))
    launcher(row_sum_kernel, x.device)[(rows,)](
        x_ptr=x, out_ptr=out, n_cols=cols, stride_row=x.stride(0), BLOCK=block
    )
    return out
