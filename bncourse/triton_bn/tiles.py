"""How the kernels cover a tensor with tiles, and the options each launch takes.

:func:`tiling` views a dense ``(N, C, *spatial)`` input as a 3-d array ``(N', C, S')`` and
cuts it into tiles of ``block_c`` channels by ``block_s`` positions, the tile's long side
along memory (a GPU reads fastest when neighbouring threads read neighbouring addresses):

* planes (NCHW-like, each channel's positions contiguous): the view is ``(N, C, S)`` with
  ``S = prod(spatial)``; a channel's values are ``N`` runs of ``S`` contiguous numbers, and a
  tile is ``block_c`` such runs side by side, read along the runs;
* channels last (``torch.channels_last``, and every contiguous ``(N, C)``): the view is
  ``(1, C, N*S)``, rows of ``C`` contiguous channels; a tile is ``block_s`` rows of
  ``block_c`` channels, read along the rows.

Each program handles ``tiles_per_program`` tiles of one block of channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..validation import accumulation_dtype, output_memory_format

__all__ = [
    "TILE_ELEMENTS",
    "TARGET_PROGRAMS",
    "Tiling",
    "dense",
    "tiling",
    "launch_options",
    "reduce_options",
    "accumulation_type",
]

TILE_ELEMENTS = 4096
"""Values per tile (at most): 16 KiB of float32, a few dozen registers per thread."""

TARGET_PROGRAMS = 1024
"""About how many programs a kernel launches: several per multiprocessor of a large GPU."""


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
        """Tiles along ``S'`` for one ``n``."""
        return triton.cdiv(self.view[2], self.block_s)

    @property
    def num_tiles(self) -> int:
        """Tiles per block of channels: ``N' * s_blocks``."""
        return self.view[0] * self.s_blocks

    @property
    def programs(self) -> int:
        """Programs along the tiles (the grid's first axis)."""
        return triton.cdiv(self.num_tiles, self.tiles_per_program)

    @property
    def channel_blocks(self) -> int:
        """Blocks of ``block_c`` channels (the grid's second axis)."""
        return triton.cdiv(self.view[1], self.block_c)

    @property
    def grid(self) -> tuple[int, int]:
        """The launch grid of the tiled kernels: ``(programs, channel_blocks)``."""
        return (self.programs, self.channel_blocks)

    def kernel_args(self) -> dict[str, int]:
        """The view's arguments, by the names the kernels give them."""
        c, s = self.view[1], self.view[2]
        stride_n, stride_c, stride_s = self.strides
        return dict(
            C=c,
            S=s,
            stride_n=stride_n,
            stride_c=stride_c,
            stride_s=stride_s,
            s_blocks=self.s_blocks,
            num_tiles=self.num_tiles,
        )


def dense(x: Tensor) -> Tensor:
    """``x`` if it is contiguous or channels-last contiguous, else a copy in the layout
    ``torch.nn`` gives BatchNorm's output (:func:`~bncourse.validation.output_memory_format`:
    channels last for a slice of a channels-last tensor, contiguous for other views)."""
    if x.is_contiguous():
        return x
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    if x.ndim in formats and x.is_contiguous(memory_format=formats[x.ndim]):
        return x
    return x.contiguous(memory_format=output_memory_format(x))


def tiling(
    x: Tensor, tile_elements: int | None = None, target_programs: int | None = None
) -> Tiling:
    """The :class:`Tiling` of a dense (see :func:`dense`) ``(N, C, *spatial)`` tensor.

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


def accumulation_type(dtype: torch.dtype) -> tl.dtype:
    """Triton's dtype for :func:`bncourse.validation.accumulation_dtype` of ``dtype``."""
    return tl.float64 if accumulation_dtype(dtype) == torch.float64 else tl.float32


def launch_options(plan: Tiling, x: Tensor) -> dict[str, Any]:
    """The compile-time options of the kernels that read the whole tensor (the tiled ones)."""
    return dict(
        TILES_PER_PROGRAM=plan.tiles_per_program,
        BLOCK_C=plan.block_c,
        BLOCK_S=plan.block_s,
        ACC=accumulation_type(x.dtype),
        INDEX=tl.int64 if x.numel() >= 2**31 else tl.int32,
        num_warps=8 if plan.block_c * plan.block_s >= 4096 else 4,
    )


def reduce_options(partials: int, channels: int) -> dict[str, int]:
    """Chunking of the small ``(P, C)`` reductions: up to 16 channels per program, chunks of
    up to :data:`TILE_ELEMENTS` partials."""
    block_c = min(triton.next_power_of_2(channels), 16)
    block_p = min(triton.next_power_of_2(partials), max(1, TILE_ELEMENTS // block_c))
    return dict(BLOCK_C=block_c, BLOCK_P=block_p, NUM_CHUNKS=triton.cdiv(partials, block_p))
