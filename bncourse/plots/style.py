"""The course's look: the colour cycle and the figure settings every chapter starts with."""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["COLORS", "use_course_style", "color"]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
"""The colour cycle: matplotlib's first six, in its order (a line's colour, or a channel's)."""


def use_course_style() -> None:
    """One look for every figure: size, resolution, grid, no top/right spines."""
    plt.rcParams.update(
        {
            "figure.figsize": (8, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": plt.cycler(color=COLORS),
            "font.size": 10,
            "legend.frameon": False,
        }
    )


def color(k: int) -> str:
    """The ``k``-th colour of :data:`COLORS`, cycling (for channel ``k``, or series ``k``)."""
    return COLORS[k % len(COLORS)]
