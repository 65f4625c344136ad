"""Which program of a Triton kernel reads which part of memory (chapter 8's tiling).

A :class:`bncourse.triton_bn.Tiling` (``plan``) is only read here, never imported: drawing it
needs neither Triton nor a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import color

__all__ = ["program_of", "memory_order", "tiles_in_memory"]


def program_of(plan: Any, n: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The program that reads the element ``(n, c, s)`` of ``plan.view`` (``(N', C, S')``),
    numbered ``pid_t * channel_blocks + pid_c`` as the grid is (see ``bncourse.triton_bn.kernels``):
    its tile is ``n * s_blocks + s // block_s``, its block of channels ``c // block_c``."""
    tile = n * plan.s_blocks + s // plan.block_s
    return (tile // plan.tiles_per_program) * plan.channel_blocks + c // plan.block_c


def memory_order(x: Any, plan: Any) -> tuple[np.ndarray, np.ndarray]:
    """For every element of the dense ``(N, C, *spatial)`` tensor ``x`` (only its shape and
    strides are read), in the order of their memory addresses: its channel and the program
    of ``plan`` (``triton_bn.tiling(x)``) that reads it; two ``(x.numel(),)`` int arrays."""
    shape, strides = tuple(x.shape), tuple(x.stride())
    address = sum(i * stride for i, stride in zip(np.indices(shape), strides)).ravel()
    n, c, s = np.unravel_index(np.argsort(address), (shape[0], shape[1], math.prod(shape[2:])))
    if plan.layout == "planes":  # the view is (N, C, S)
        program = program_of(plan, n, c, s)
    else:  # channels last: (1, C, N*S), sample n's positions one after another
        program = program_of(plan, np.zeros_like(n), c, n * math.prod(shape[2:]) + s)
    return c, program


def tiles_in_memory(layouts: dict[str, tuple[Any, Any]], per_row: int = 18) -> Figure:
    """One strip per layout: the tensor's elements in memory order, coloured by channel
    (top row) and by the program that reads them (bottom row, numbered by tile); a strip
    longer than ``per_row`` elements goes on in the next line, as text does.

    ``layouts`` maps a title to ``(x, plan)``: a small dense tensor and its tiling
    (:func:`memory_order`); the tensors have one shape.
    """
    size = math.prod(next(iter(layouts.values()))[0].shape)
    lines = math.ceil(size / per_row)
    band = 2.6  # the height of one line: the two rows of cells and a gap
    fig, axes = plt.subplots(
        len(layouts), 1, figsize=(6, (0.75 * lines + 0.55) * len(layouts) + 0.4)
    )
    axes = np.atleast_1d(axes)
    tile_colors = plt.get_cmap("tab20")
    for ax, (title, (x, plan)) in zip(axes, layouts.items()):
        channel, program = memory_order(x, plan)
        for i in range(size):
            left, bottom = i % per_row, (lines - 1 - i // per_row) * band
            ax.add_patch(
                plt.Rectangle(
                    (left, bottom + 1),
                    1,
                    1,
                    facecolor=color(int(channel[i])),
                    edgecolor="white",
                    lw=0.5,
                )
            )
            ax.add_patch(
                plt.Rectangle(
                    (left, bottom),
                    1,
                    1,
                    facecolor=tile_colors(int(program[i]) % 20),
                    edgecolor="white",
                    lw=0.5,
                )
            )
            ax.text(
                left + 0.5,
                bottom + 1.5,
                f"c{int(channel[i])}",
                ha="center",
                va="center",
                color="white",
            )
            ax.text(left + 0.5, bottom + 0.5, str(int(program[i])), ha="center", va="center")
        ax.set_xlim(0, per_row)
        ax.set_ylim(0, (lines - 1) * band + 2)
        ticks = [(line * band + 0.5, line * band + 1.5) for line in range(lines)]
        ax.set_yticks([y for pair in ticks for y in pair], ["program", "channel"] * lines)
        ax.set_xticks([])
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set_title(title, loc="left", wrap=True)
    shape = tuple(next(iter(layouts.values()))[0].shape)
    axes[-1].set_xlabel(
        f"memory address of each element of a tensor of shape {shape},\n{per_row} to a line"
    )
    fig.tight_layout()
    return fig
