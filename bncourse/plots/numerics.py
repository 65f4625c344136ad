"""Rounding: how far two implementations are apart, and how far a float32 variance can be off."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, color, legend_below

__all__ = ["agreement_over_steps", "variance_error_by_method"]


def agreement_over_steps(errors: dict[str, np.ndarray], title: str) -> Figure:
    """Largest difference between two implementations at every step, one line per quantity
    (log scale; exact zeros are drawn on the bottom line, labelled 0)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    floor = 1e-18
    for (label, values), line_color in zip(errors.items(), COLORS):
        values = np.maximum(np.asarray(values, dtype=np.float64), floor)
        ax.semilogy(
            np.arange(1, len(values) + 1), values, "o-", ms=3, color=line_color, label=label
        )
    ax.set_ylim(floor / 2, 1)
    ticks = [floor, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 1.0]
    ax.set_yticks(ticks, ["0 (equal)"] + [f"{t:.0e}" for t in ticks[1:]])
    ax.set_xlabel("step")
    ax.set_ylabel("largest |ours - torch.nn|")
    ax.set_title(title, wrap=True)
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig


def variance_error_by_method(means: Sequence[float], errors: dict[str, Sequence[float]]) -> Figure:
    """Relative error of a float32 variance (vs float64) against the data's mean, one line per
    method; errors of 0 are drawn at the bottom of the axis."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    floor = 1e-9
    for k, (name, values) in enumerate(errors.items()):
        shown = np.maximum(np.asarray(values, dtype=float), floor)
        ax.plot(means, shown, marker="o", color=color(k), label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.text(means[0], 1.3, "100% error", color="gray")
    ax.set_xlabel("mean of the data (standard deviation 1)")
    ax.set_ylabel("relative error of the variance")
    ax.set_ylim(floor / 2, None)
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig
