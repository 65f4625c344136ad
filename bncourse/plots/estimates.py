"""Batch statistics as estimates: running averages, the variance's bias, the batch's noise."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, legend_below

__all__ = ["running_stats_trace", "variance_bias", "statistic_noise_vs_batch"]


def running_stats_trace(
    batch_values: np.ndarray, traces: dict[str, np.ndarray], target: float, ylabel: str
) -> Figure:
    """A running statistic step by step: one line per update rule in ``traces`` (each as long
    as ``batch_values``), the batches' own values as dots and the population value dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = np.arange(1, len(batch_values) + 1)
    ax.scatter(steps, batch_values, s=10, color="gray", alpha=0.6, label="this batch's value")
    for (label, values), color in zip(traces.items(), COLORS):
        ax.plot(steps, values, lw=2, color=color, label=label)
    ax.axhline(target, color="black", ls="--", lw=1, label="population value")
    ax.set_xlabel("training step (batches seen)")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    legend_below(fig, ax)
    return fig


def variance_bias(
    ms: np.ndarray, biased: np.ndarray, unbiased: np.ndarray, true_var: float
) -> Figure:
    """Average over many batches of the biased and the unbiased batch variance, against the
    batch size m, with the population variance and the predicted (m - 1) / m * variance."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(ms, biased, "o-", color=COLORS[1], label="average biased variance (divide by m)")
    ax.plot(
        ms, unbiased, "s-", color=COLORS[0], label="average unbiased variance (divide by m - 1)"
    )
    grid = np.linspace(ms.min(), ms.max(), 200)
    ax.plot(
        grid,
        true_var * (grid - 1) / grid,
        color=COLORS[1],
        lw=1,
        ls=":",
        label=r"prediction $\sigma^2 (m-1)/m$",
    )
    ax.axhline(true_var, color="black", ls="--", lw=1, label=r"population $\sigma^2$")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("values per channel in a batch, m")
    ax.set_ylabel("variance")
    ax.legend()
    fig.tight_layout()
    return fig


def statistic_noise_vs_batch(
    ms: Sequence[int], noise: Sequence[float], marks: dict[str, int]
) -> Figure:
    """Spread (std over many batches) of a channel's batch mean against the batch size ``m``,
    log-log, with the prediction ``1/sqrt(m)`` and vertical marks at named batch sizes."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ms = np.asarray(ms)
    ax.loglog(ms, noise, "o", color=COLORS[0], label="measured")
    ax.loglog(ms, 1 / np.sqrt(ms), "-", color=COLORS[0], lw=1, alpha=0.7, label=r"$1/\sqrt{m}$")
    for k, (label, m) in enumerate(marks.items()):
        ax.axvline(m, color=COLORS[1 + k], ls="--", lw=1.2, label=label)
    ax.set_xlabel("values per channel in the batch, m")
    ax.set_ylabel("std of the batch mean\n(population std = 1)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
