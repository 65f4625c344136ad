"""Draw the book's logo and favicon (book/static/logo.svg, book/static/favicon.png).

    .venv/bin/python book/make_logo.py

The picture is the course in one glance: a skewed batch (grey bars) and the same batch after
BatchNorm (blue bars), centred on 0 with unit spread, under the standard normal curve. The
files are committed; run this again only to change the design.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

STATIC = Path(__file__).resolve().parent / "static"
BLUE, ORANGE, GREY, BACKGROUND = "#1f77b4", "#ff7f0e", "#b9c3cc", "#0f2a44"


def draw(size_inches: float, detailed: bool) -> plt.Figure:
    fig = plt.figure(figsize=(size_inches, size_inches))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(
        FancyBboxPatch(
            (0.03, 0.03),
            0.94,
            0.94,
            boxstyle="round,pad=0,rounding_size=0.18",
            facecolor=BACKGROUND,
            edgecolor="none",
        )
    )
    centres = np.linspace(0.2, 0.8, 7)
    width = 0.075
    z = (centres - 0.5) / 0.17
    normal = np.exp(-0.5 * z**2)
    if detailed:  # the raw, skewed batch behind the normalized one
        skewed = np.array([0.25, 0.95, 0.7, 0.45, 0.28, 0.16, 0.08])
        ax.bar(centres + 0.03, 0.55 * skewed, width=width, bottom=0.2, color=GREY, alpha=0.55)
    ax.bar(
        centres,
        0.55 * normal,
        width=width,
        bottom=0.2,
        color=BLUE,
        edgecolor=BACKGROUND,
        linewidth=0.5 if detailed else 0,
    )
    grid = np.linspace(0.12, 0.88, 200)
    ax.plot(
        grid,
        0.2 + 0.55 * np.exp(-0.5 * ((grid - 0.5) / 0.17) ** 2),
        color=ORANGE,
        lw=3 if detailed else 2.2,
        solid_capstyle="round",
    )
    ax.plot([0.12, 0.88], [0.2, 0.2], color="white", lw=2 if detailed else 1.5)
    if detailed:
        ax.text(
            0.5,
            0.085,
            "μ = 0,  σ = 1",
            ha="center",
            va="center",
            color="white",
            fontsize=size_inches * 4.2,
            family="DejaVu Sans",
        )
    return fig


def main() -> None:
    STATIC.mkdir(exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "bncourse"  # stable ids: re-running gives the same file
    plt.rcParams["svg.fonttype"] = "path"
    fig = draw(4, detailed=True)
    fig.savefig(STATIC / "logo.svg", transparent=True, metadata={"Date": None})
    plt.close(fig)
    fig = draw(1, detailed=False)
    fig.savefig(STATIC / "favicon.png", dpi=64, transparent=True, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    main()
