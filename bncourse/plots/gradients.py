"""The backward pass: BatchNorm's graph, and analytic gradients against finite differences."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, SMALLEST_PT

__all__ = ["computational_graph", "gradient_agreement", "difference_error_vs_h"]


def computational_graph() -> Figure:
    """BatchNorm's forward pass as a graph of small nodes (per channel)."""
    nodes = {  # (x in inches of the figure, row)
        "x": (0.2, 1.0),
        "mu": (1.1, 2.0),
        "xc": (1.9, 1.0),
        "var": (2.9, 2.0),
        "inv_std": (4.6, 2.0),
        "xhat": (3.8, 1.0),
        "y": (5.3, 1.0),
        "gamma": (4.5, 0.0),
        "beta": (5.9, 0.0),
    }
    labels = {
        "x": r"$x$",
        "mu": r"$\mu = \sum x\,/\,m$",
        "xc": r"$x_c = x - \mu$",
        "var": r"$\sigma^2 = \sum x_c^2\,/\,m$",
        "inv_std": r"$s = (\sigma^2+\epsilon)^{-1/2}$",
        "xhat": r"$\hat{x} = x_c\, s$",
        "y": r"$y = \gamma \hat{x} + \beta$",
        "gamma": r"$\gamma$",
        "beta": r"$\beta$",
    }
    edges = [
        ("x", "mu"),
        ("x", "xc"),
        ("mu", "xc"),
        ("xc", "var"),
        ("var", "inv_std"),
        ("xc", "xhat"),
        ("inv_std", "xhat"),
        ("xhat", "y"),
        ("gamma", "y"),
        ("beta", "y"),
    ]
    fig, ax = plt.subplots(figsize=(6, 2.6))
    boxes = {}
    for name, (x, y) in nodes.items():
        param = name in ("gamma", "beta")
        boxes[name] = ax.text(
            x,
            y,
            labels[name],
            ha="center",
            va="center",
            fontsize=SMALLEST_PT,
            bbox=dict(
                boxstyle="round,pad=0.5",
                facecolor="#fdebd3" if param else "#dbe9f6",
                edgecolor=COLORS[1] if param else COLORS[0],
            ),
        )
    for a, b in edges:
        ax.annotate(
            "",
            xy=nodes[b],
            xytext=nodes[a],
            arrowprops=dict(
                arrowstyle="-|>",
                color="gray",
                lw=1.2,
                shrinkA=2,
                shrinkB=2,
                patchA=boxes[a].get_bbox_patch(),
                patchB=boxes[b].get_bbox_patch(),
            ),
        )
    ax.set_xlim(-0.1, 6.3)
    ax.set_ylim(-0.5, 2.5)
    ax.axis("off")
    fig.tight_layout()
    return fig


def gradient_agreement(analytic: np.ndarray, numeric: np.ndarray) -> Figure:
    """Each entry of the analytic gradient against its central-difference estimate."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    a, b = np.ravel(analytic), np.ravel(numeric)
    lim = 1.1 * max(np.abs(a).max(), np.abs(b).max())
    ax.plot([-lim, lim], [-lim, lim], color="gray", lw=1, ls="--")
    ax.scatter(a, b, s=12, color=COLORS[0])
    ax.set_xlabel("analytic dx")
    ax.set_ylabel("central difference")
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def difference_error_vs_h(hs: np.ndarray, central: np.ndarray, forward: np.ndarray) -> Figure:
    """Error of central and one-sided differences against the step h (log-log)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.loglog(hs, central, "o-", label="central (f(x+h) - f(x-h)) / 2h", color=COLORS[0])
    ax.loglog(hs, forward, "s-", label="one-sided (f(x+h) - f(x)) / h", color=COLORS[1])
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    return fig
