"""The course's look: the colour cycle, the figure settings every chapter starts with, and
the size of a figure's smallest text, recorded in the PNG the chapter shows.

**Readable figures.** The book shows a figure at most as wide as its text column: 672 CSS
px on a 1280 px desktop page, 342 px on a 390 px phone. A figure's text is as large on the
page as ``its size in px x displayed width / natural width``; the book asks for at least
12 px (9 pt) on the desktop and 8 px on the phone (tests/test_site.py measures every figure
of every page). Text of at least :data:`SMALLEST_PT` points (13.9 px at 100 dpi) meets both
in a PNG at most 593 px wide (13.9 x 342 / 593 = 8.01 px; at 594 px it is 7.997). A figure
:data:`MAX_WIDTH_IN` inches wide is 600 px before :func:`figure_png` crops its white margin,
usually to about 590 px, but not always below 594: one whose content reaches its edges (a
long title, a legend under it) is drawn narrower, 5.5 in. A figure with more panels than fit
that width puts them in more rows instead.
"""

from __future__ import annotations

import base64
import io

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

__all__ = [
    "COLORS",
    "MAX_WIDTH_IN",
    "SMALLEST_FONT_KEY",
    "SMALLEST_PT",
    "color",
    "figure_png",
    "legend_below",
    "smallest_font_px",
    "use_course_style",
]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
"""The colour cycle: matplotlib's first six, in its order (a line's colour, or a channel's)."""

SMALLEST_PT = 10
"""No text of a figure is smaller (points; at 100 dpi, 13.9 px of the PNG)."""

MAX_WIDTH_IN = 6.0
"""No figure is wider (inches; 600 px of the PNG at 100 dpi, before cropping)."""

SMALLEST_FONT_KEY = "bncourse:smallest-font-px"
"""The PNG text chunk that holds :func:`smallest_font_px` of the figure it shows."""


def use_course_style() -> None:
    """One look for every figure: size, resolution, grid, no top/right spines; and, in a
    notebook, each figure's PNG records the size of its smallest text (:func:`figure_png`)."""
    plt.rcParams.update(
        {
            "figure.figsize": (MAX_WIDTH_IN, 3.4),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": plt.cycler(color=COLORS),
            "font.size": SMALLEST_PT,
            "legend.frameon": False,
        }
    )
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - matplotlib outside Jupyter
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        # Load the notebook's backend now: loading it (lazily, with the first figure) sets
        # its own PNG formatter, which would replace this one.
        plt.switch_backend(plt.get_backend())
        shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def color(k: int) -> str:
    """The ``k``-th colour of :data:`COLORS`, cycling (for channel ``k``, or series ``k``)."""
    return COLORS[k % len(COLORS)]


def legend_below(fig: Figure, ax: Axes, ncol: int = 1) -> None:
    """``ax``'s legend under the whole figure, centred, in ``ncol`` columns: out of the data's
    way and within :data:`MAX_WIDTH_IN` (call it after ``fig.tight_layout()``)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def _drawn_texts(artist: Artist):
    """The texts ``artist`` draws: visible, not empty, inside visible parents (the tick
    labels of an axes drawn with ``axis("off")`` are not drawn)."""
    if not artist.get_visible():
        return
    if isinstance(artist, Text):
        if artist.get_text().strip():
            yield artist
        return
    children = artist.get_children()
    # (a 3-d axes turns the 2-d axis off and draws its own, if ``_axis3don``)
    if isinstance(artist, Axes) and not getattr(artist, "_axis3don", artist.axison):
        children = [c for c in children if c not in artist._axis_map.values()]
    for child in children:
        yield from _drawn_texts(child)


def smallest_font_px(fig: Figure) -> float:
    """The size of ``fig``'s smallest text in pixels of its PNG: points x dpi / 72."""
    sizes = [text.get_fontsize() for text in _drawn_texts(fig)]
    return min(sizes) * fig.dpi / 72 if sizes else float("inf")


def figure_png(fig: Figure) -> str:
    """``fig`` as Jupyter shows it (a PNG cropped to its content, base64), with
    :func:`smallest_font_px` in its text chunk :data:`SMALLEST_FONT_KEY`."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        bbox_inches="tight",
        facecolor=fig.get_facecolor(),
        edgecolor=fig.get_edgecolor(),
        metadata={SMALLEST_FONT_KEY: f"{smallest_font_px(fig):.2f}"},
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")
