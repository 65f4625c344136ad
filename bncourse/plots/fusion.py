"""Fusing the passes (chapter 5): the measured times of the eager module, the compiled one,
ATen's kernels and a copy, in copies' worth."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, legend_below

__all__ = ["fusion_bars"]


def fusion_bars(
    labels: Sequence[str],
    eager: Sequence[float],
    compiled: Sequence[float],
    native: Sequence[float],
    copy: Sequence[float],
) -> Figure:
    """Forward+backward time per case (``labels``) of the eager module (``torch_bn``), the
    compiled one (``compiled_bn``) and ``torch.nn`` (ATen), each divided by the time of one
    copy of the input (``copy``, the same units): bars in copies' worth, the copy at 1."""
    copy_ = np.asarray(copy, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 1.4 + 1.0 * len(labels)))
    y = np.arange(len(labels))
    bars = [
        (eager, "ours, eager (torch_bn)", COLORS[0]),
        (compiled, "ours, compiled (compiled_bn)", COLORS[3]),
        (native, "torch.nn (ATen)", COLORS[1]),
    ]
    for i, (values, name, color) in enumerate(bars):
        ratio = np.asarray(values, dtype=float) / copy_
        ax.barh(y + (i - 1) * 0.27, ratio, height=0.25, color=color, label=name)
    ax.axvline(1.0, color="0.3", linestyle="--", linewidth=1, label="one copy, x.clone()")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("forward+backward time, in copies of the input\n(lower is faster)")
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig
