"""Diagnostics of training runs: gradients per layer, ReLU zero fractions, update-to-weight
ratios over training, and curves summarised over several seeds (chapter 7).

Conventions: a dict maps a label (one network, e.g. ``"no norm"``) to its values; arrays
over training have shape ``(steps, layers)``; over seeds ``(seeds, points)``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import color, legend_below

__all__ = ["gradient_histograms", "zero_fractions", "update_ratios", "seed_bands", "seed_spread"]


def gradient_histograms(values: dict[str, Sequence[np.ndarray]], bins: int = 50) -> Figure:
    """Histograms of ``log10 |g|`` for each hidden layer's gradient ``g`` (of the loss with
    respect to the layer's pre-activation): one column per key, one row per layer, shared x.

    Exact zeros (units a ReLU switched off) have no logarithm; each panel's title gives their
    fraction and the median of ``|g|`` over the others.
    """
    labels = list(values)
    layers = len(values[labels[0]])
    logs = {
        label: [np.log10(np.abs(g[g != 0])) for g in map(np.ravel, values[label])]
        for label in labels
    }
    everything = np.concatenate([v for label in labels for v in logs[label]])
    edges = np.linspace(everything.min(), everything.max(), bins + 1)
    fig, axes = plt.subplots(
        layers,
        len(labels),
        figsize=(3.0 * len(labels), 1.9 * layers),
        sharex=True,
        squeeze=False,
    )
    for i, label in enumerate(labels):
        for j, (g, log) in enumerate(zip(values[label], logs[label])):
            ax = axes[j, i]
            ax.hist(log, bins=edges, color=color(i), alpha=0.85)
            ax.set_yticks([])
            zero = np.mean(np.ravel(g) == 0)
            ax.set_title(
                f"{label}, layer {j + 1}:\nmedian {10 ** np.median(log):.0e}, {zero:.0%} zero"
            )
            if j == layers - 1:
                ax.set_xlabel("log10 |gradient|")
    fig.tight_layout()
    return fig


def _per_layer_curves(
    curves: dict[str, np.ndarray], ylabel: str, log: bool, window: int
) -> tuple[Figure, np.ndarray]:
    labels = list(curves)
    layers = np.asarray(curves[labels[0]]).shape[1]
    fig, axes = plt.subplots(1, len(labels), figsize=(3.0 * len(labels), 3.0), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, label in zip(axes, labels):
        values = np.asarray(curves[label], dtype=np.float64)
        kernel = np.ones(window) / window
        for layer in range(layers):
            smooth = np.convolve(values[:, layer], kernel, mode="valid")
            steps = np.arange(len(smooth)) + window - 1
            ax.plot(steps, smooth, color=color(layer), lw=1.2, label=f"layer {layer + 1}")
        if log:
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("step")
    axes[0].set_ylabel(ylabel)
    return fig, axes


def _finish_per_layer_curves(fig: Figure, axes: np.ndarray) -> None:
    """Lay the panels out, then put the layers' legend under them (in one row)."""
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels))


def zero_fractions(fractions: dict[str, np.ndarray], window: int = 5) -> Figure:
    """The fraction of each ReLU's outputs that are exactly 0 in each training step (moving
    average over ``window`` steps): one panel per key, one line per hidden layer.

    ``fractions[label]`` has shape ``(steps, layers)`` (``Diagnostics.zero_fraction``).
    """
    fig, axes = _per_layer_curves(fractions, "fraction of ReLU outputs = 0", False, window)
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    _finish_per_layer_curves(fig, axes)
    return fig


def update_ratios(
    ratios: dict[str, np.ndarray], window: int = 5, reference: float = 1e-3
) -> Figure:
    """``||W_after - W_before|| / ||W_before||`` of each weighted layer per step, log scale
    (moving average over ``window`` steps): one panel per key, one line per layer (the last
    is the output layer); a dotted line at ``reference``.

    ``ratios[label]`` has shape ``(steps, layers)`` (``Diagnostics.update_ratio``).
    """
    fig, axes = _per_layer_curves(ratios, "update / weight (norms)", True, window)
    for ax in axes:
        ax.axhline(reference, color="gray", lw=0.8, ls=":")
    _finish_per_layer_curves(fig, axes)
    return fig


def seed_bands(curves: dict[str, Sequence[Sequence[float]]], window: int = 10) -> Figure:
    """Training loss per step over several seeds, log scale: for each key the median over the
    seeds (line) and the range from the lowest to the highest (band), each run first smoothed
    by a moving average over ``window`` steps.

    ``curves[label]`` holds one per-step loss sequence per seed (truncated to the shortest).
    """
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (label, runs) in enumerate(curves.items()):
        length = min(len(run) for run in runs)
        kernel = np.ones(window) / window
        smooth = np.array([np.convolve(run[:length], kernel, mode="valid") for run in runs])
        steps = np.arange(smooth.shape[1]) + window - 1
        ax.fill_between(steps, smooth.min(0), smooth.max(0), color=color(k), alpha=0.25, lw=0)
        ax.plot(steps, np.median(smooth, 0), color=color(k), lw=1.4, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig


def seed_spread(
    x: Sequence[float],
    values: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    log_x: bool = True,
) -> Figure:
    """Mean over seeds (markers and line) with the lowest and highest seed (error bars),
    one line per key, against ``x``.

    ``values[label]`` has shape ``(seeds, len(x))``; the lines are shifted sideways a little
    so their error bars do not overlap.
    """
    fig, ax = plt.subplots(figsize=(6, 3.4))
    keys = list(values)
    for k, label in enumerate(keys):
        v = np.asarray(values[label], dtype=np.float64)
        mean = v.mean(0)
        offset = (k - (len(keys) - 1) / 2) * 0.04
        xs = np.asarray(x, dtype=np.float64)
        xs = xs * 2**offset if log_x else xs + offset
        ax.errorbar(
            xs,
            mean,
            yerr=[mean - v.min(0), v.max(0) - mean],
            fmt="-o",
            color=color(k),
            capsize=3,
            label=label,
        )
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(x), [f"{value:g}" for value in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig
