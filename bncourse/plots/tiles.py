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


def tiles_in_memory(layouts: dict[str, tuple[Any, Any]]) -> Figure:
    """One strip per layout: the tensor's elements in memory order, coloured by channel
    (top row) and by the program that reads them (bottom row, numbered by tile).

    ``layouts`` maps a title to ``(x, plan)``: a small dense tensor and its tiling
    (:func:`memory_order`); the tensors have one shape.
    """
    fig, axes = plt.subplots(len(layouts), 1, figsize=(10, 1.5 * len(layouts) + 0.3))
    axes = np.atleast_1d(axes)
    tile_colors = plt.get_cmap("tab20")
    for ax, (title, (x, plan)) in zip(axes, layouts.items()):
        channel, program = memory_order(x, plan)
        size = len(channel)
        for i in range(size):
            ax.add_patch(
                plt.Rectangle(
                    (i, 1), 1, 1, facecolor=color(int(channel[i])), edgecolor="white", lw=0.5
                )
            )
            ax.add_patch(
                plt.Rectangle(
                    (i, 0),
                    1,
                    1,
                    facecolor=tile_colors(int(program[i]) % 20),
                    edgecolor="white",
                    lw=0.5,
                )
            )
            ax.text(
                i + 0.5,
                1.5,
                f"c{int(channel[i])}",
                ha="center",
                va="center",
                fontsize=6,
                color="white",
            )
            ax.text(i + 0.5, 0.5, str(int(program[i])), ha="center", va="center", fontsize=6)
        ax.set_xlim(0, size)
        ax.set_ylim(0, 2)
        ax.set_yticks([0.5, 1.5], ["program", "channel"])
        ax.set_xticks([])
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set_title(title, fontsize=9, loc="left")
    shape = tuple(next(iter(layouts.values()))[0].shape)
    axes[-1].set_xlabel(f"memory address (elements) of a tensor of shape {shape}")
    fig.tight_layout()
    return fig
