"""What normalizing does to a batch's values: their spread before and after, and its limits."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .style import COLORS, color

__all__ = [
    "scaling_comparison",
    "histograms_before_after",
    "samuelson_bound",
    "eps_gain",
    "channel_stats",
]


def _strip(ax: Axes, columns: np.ndarray, names: Sequence[str], title: str) -> None:
    """One column of dots per feature of ``columns`` (``(N, C)``), jittered sideways."""
    rng = np.random.default_rng(0)  # fixed jitter: the figure is the same on every run
    for j in range(len(names)):
        values = columns[:, j]
        ax.scatter(
            j + rng.uniform(-0.15, 0.15, size=values.shape), values, s=14, color=color(j), alpha=0.8
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_title(title)


def scaling_comparison(
    raw: np.ndarray, minmax: np.ndarray, zscore: np.ndarray, names: Sequence[str]
) -> Figure:
    """Three strip plots of a (N, C) batch, one above the other: raw, min-max scaled,
    standardized."""
    fig, axes = plt.subplots(3, 1, figsize=(6, 7.2), sharex=True)
    _strip(axes[0], raw, names, "raw features")
    _strip(axes[1], minmax, names, "min-max: each feature in [0, 1]")
    for level in (0, 1):
        axes[1].axhline(level, color="gray", lw=0.8, ls="--")
    _strip(axes[2], zscore, names, "z-score (BatchNorm): mean 0, std 1")
    axes[2].axhline(0, color="gray", lw=0.8, ls="--")
    fig.tight_layout()
    return fig


def histograms_before_after(
    before: np.ndarray, after: np.ndarray, names: Sequence[str], bins: int = 40
) -> Figure:
    """For each column of (N, C) ``before``/``after``: its histogram before and after BN."""
    c = before.shape[1]
    fig, axes = plt.subplots(c, 2, figsize=(6, 2.2 * c), squeeze=False)
    for j in range(c):
        axes[j, 0].hist(before[:, j], bins=bins, color=color(j), alpha=0.8)
        axes[j, 1].hist(after[:, j], bins=bins, color=color(j), alpha=0.8)
        axes[j, 0].set_ylabel(names[j])
    axes[0, 0].set_title("before BatchNorm\n")
    axes[0, 1].set_title("after BatchNorm\n(same shape, new axis)")
    fig.tight_layout()
    return fig


def samuelson_bound(ms: Sequence[int], max_abs: Sequence[np.ndarray]) -> Figure:
    """Largest |xhat| in random batches of size m (dots) against the bound sqrt(m - 1)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, values in zip(ms, max_abs):
        rng = np.random.default_rng(m)
        ax.scatter(
            m * np.exp(rng.uniform(-0.06, 0.06, size=len(values))),
            values,
            s=4,
            color=COLORS[0],
            alpha=0.25,
        )
    grid = np.geomspace(min(ms), max(ms), 200)
    ax.plot(grid, np.sqrt(grid - 1), color=COLORS[3], lw=2, label=r"bound $\sqrt{m-1}$")
    ax.axhline(1, color="gray", ls="--", lw=1, label="1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size m")
    ax.set_ylabel(r"largest $|\hat{x}|$ in the batch")
    ax.legend()
    fig.tight_layout()
    return fig


def eps_gain(variances: np.ndarray, eps: float) -> Figure:
    """The factor BN multiplies a centred channel by, 1/sqrt(var + eps), against 1/sqrt(var)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.loglog(
        variances,
        1 / np.sqrt(variances),
        ls="--",
        color="gray",
        label=r"$1/\sqrt{\sigma^2}$ (no eps)",
    )
    ax.loglog(
        variances,
        1 / np.sqrt(variances + eps),
        color=COLORS[0],
        lw=2,
        label=rf"$1/\sqrt{{\sigma^2 + \epsilon}}$, $\epsilon$ = {eps:g}",
    )
    ax.axhline(1 / np.sqrt(eps), color=COLORS[3], lw=1, ls=":", label=r"cap $1/\sqrt{\epsilon}$")
    ax.axvline(eps, color=COLORS[3], lw=1, ls=":")
    ax.set_xlabel(r"channel variance $\sigma^2$")
    ax.set_ylabel("gain applied to x - mean")
    ax.legend()
    fig.tight_layout()
    return fig


def channel_stats(
    mean_before: np.ndarray, std_before: np.ndarray, mean_after: np.ndarray, std_after: np.ndarray
) -> Figure:
    """Per-channel mean and standard deviation before and after normalization, as bars."""
    c = len(mean_before)
    idx = np.arange(c)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    for ax, before, after, title in [
        (axes[0], mean_before, mean_after, "per-channel mean"),
        (axes[1], std_before, std_after, "per-channel std"),
    ]:
        ax.bar(idx - 0.2, before, width=0.4, label="before", color=COLORS[1])
        ax.bar(idx + 0.2, after, width=0.4, label="after", color=COLORS[0])
        ax.set_xticks(idx, [f"c={j}" for j in idx])
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    return fig
