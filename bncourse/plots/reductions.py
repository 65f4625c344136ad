"""Which values share one mean and variance: BatchNorm's reduction, and its family's."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .style import COLORS

__all__ = ["reduction_pattern", "normalization_family"]


def reduction_pattern(
    ax: Axes, shape: tuple[int, int, int], highlight: np.ndarray, title: str
) -> None:
    """Draw an (N, C, H*W) block as cubes on ``ax`` (a 3-d axes); the ``highlight`` mask
    (same shape) is coloured.

    The cubes of one colour share one mean and one variance: for BatchNorm, one channel
    across every sample and every spatial position.
    """
    n, c, hw = shape
    filled = np.ones(shape, dtype=bool)
    colors = np.empty(shape, dtype=object)
    colors[...] = "#dddddd"
    colors[highlight] = COLORS[0]
    # voxel axes: x = channel, y = sample, z = spatial position
    ax.voxels(
        np.transpose(filled, (1, 0, 2)),
        facecolors=np.transpose(colors, (1, 0, 2)),
        edgecolor="white",
        linewidth=0.4,
    )
    ax.set_xlabel("C")
    ax.set_ylabel("N")
    ax.set_zlabel("H, W")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_box_aspect((c, n, hw))
    ax.set_title(title)
    ax.grid(False)


def normalization_family(shape: tuple[int, int, int] = (4, 6, 4), groups: int = 2) -> Figure:
    """The four members of the family on one (N, C, H*W) block: the blue cubes share one
    mean and variance (after the figure of Wu and He's Group Normalization paper)."""
    n, c, hw = shape
    patterns = {}
    batch = np.zeros(shape, dtype=bool)
    batch[:, 0, :] = True
    patterns["BatchNorm\nover (N, H, W), per channel"] = batch
    layer = np.zeros(shape, dtype=bool)
    layer[0] = True
    patterns["LayerNorm\nover (C, H, W), per sample"] = layer
    instance = np.zeros(shape, dtype=bool)
    instance[0, 0, :] = True
    patterns["InstanceNorm\nover (H, W), per sample, channel"] = instance
    group = np.zeros(shape, dtype=bool)
    group[0, : c // groups, :] = True
    patterns[f"GroupNorm ({groups} groups)\nover (C/G, H, W), per group"] = group
    fig = plt.figure(figsize=(5.2, 6.0))
    for k, (title, mask) in enumerate(patterns.items()):
        ax = fig.add_subplot(2, 2, k + 1, projection="3d")
        reduction_pattern(ax, shape, mask, "")
        ax.set_title(title, fontsize="medium", pad=6)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.02, wspace=0.1, hspace=0.15)
    return fig
