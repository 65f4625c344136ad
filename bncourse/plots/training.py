"""Training with and without BatchNorm: accuracies, losses, activations, batch sizes."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, color, legend_below

__all__ = [
    "accuracy_grids",
    "loss_curves",
    "activation_scale",
    "activation_histograms",
    "batch_size_sweep",
    "epoch_accuracies",
]


def accuracy_grids(
    grids: dict[tuple[str, str], np.ndarray], scales: Sequence[float], lrs: Sequence[float]
) -> Figure:
    """Heatmaps of final test accuracy, one per ``(model, variant)`` key, in rows by model.

    Each grid has shape ``(len(scales), len(lrs))``: rows are weight-initialisation scales,
    columns learning rates; every cell is annotated with its accuracy.
    """
    models = list(dict.fromkeys(key[0] for key in grids))
    variants = list(dict.fromkeys(key[1] for key in grids))
    fig, axes = plt.subplots(
        len(models), len(variants), figsize=(3.0 * len(variants), 2.7 * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, variant in enumerate(variants):
            ax = axes[i, j]
            grid = grids[(model, variant)]
            ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            for (r, c), value in np.ndenumerate(grid):
                ax.text(
                    c,
                    r,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    color="black" if value > 0.6 else "white",
                )
            ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
            ax.set_yticks(range(len(scales)), [f"{s:g}" for s in scales])
            ax.grid(False)
            ax.set_title(f"{model}, {variant}")
            if i == len(models) - 1:
                ax.set_xlabel("learning rate")
            if j == 0:
                ax.set_ylabel("init scale")
    fig.tight_layout()
    return fig


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """The moving average over ``window`` values (the values themselves if fewer)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves(
    curves: dict[tuple[str, str, float], Sequence[float]],
    scales: Sequence[float],
    title: str,
    diverged: Sequence[tuple[str, str, float]] = (),
    window: int = 10,
) -> Figure:
    """Training loss per step (moving average over ``window`` steps), log scale.

    ``curves`` maps ``(model, variant, init scale)`` to the per-step losses; one panel per
    scale (rows) and model (columns), one line per variant.  Runs whose key is in
    ``diverged`` stopped early; their panel says at which step.
    """
    models = list(dict.fromkeys(key[0] for key in curves))
    variants = list(dict.fromkeys(key[1] for key in curves))
    fig, axes = plt.subplots(
        len(scales),
        len(models),
        figsize=(3.0 * len(models), 1.7 * len(scales) + 0.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, model in enumerate(models):
        for j, scale in enumerate(scales):
            ax = axes[j, i]
            notes = []
            for k, variant in enumerate(variants):
                key = (model, variant, scale)
                losses = curves[key]
                smooth = _smooth(losses, window)
                steps = np.arange(len(smooth)) + (len(losses) - len(smooth))
                ax.plot(steps, smooth, color=COLORS[k], lw=1.3, label=variant)
                if key in diverged:
                    notes.append((f"{variant}: diverged at step {len(losses)}", COLORS[k]))
            for n, (note, note_color) in enumerate(notes):
                ax.text(
                    0.97,
                    0.95 - 0.14 * n,
                    note,
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    color=note_color,
                )
            ax.set_yscale("log")
            ax.set_ylim(0.02, 30)
            ax.set_title(f"{model}, init scale {scale:g}")
            if j == len(scales) - 1:
                ax.set_xlabel("step")
            if i == 0:
                ax.set_ylabel("training loss")
    axes[-1, 0].legend(loc="lower left")
    fig.suptitle(title, wrap=True)
    fig.tight_layout()
    return fig


def activation_scale(stds: dict[str, Sequence[float]]) -> Figure:
    """Standard deviation of each hidden layer's pre-activations (log scale), one line per key."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (label, values) in enumerate(stds.items()):
        layers = np.arange(1, len(values) + 1)
        style = "-o" if "with BN" in label else "--s"
        ax.semilogy(layers, values, style, color=color(k), label=label)
    ax.set_xticks(np.arange(1, len(next(iter(stds.values()))) + 1))
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("std of the ReLU inputs")
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig


def activation_histograms(values: dict[str, Sequence[np.ndarray]], bins: int = 60) -> Figure:
    """Histograms of each hidden layer's pre-activations: one column per key, one row per layer.

    Each panel's title gives the fraction of values below 0 (ReLU outputs 0 for them).
    """
    labels = list(values)
    layers = len(values[labels[0]])
    fig, axes = plt.subplots(
        layers, len(labels), figsize=(3.0 * len(labels), 1.9 * layers), squeeze=False
    )
    for i, label in enumerate(labels):
        for j, layer_values in enumerate(values[label]):
            ax = axes[j, i]
            flat = np.ravel(layer_values)
            ax.hist(flat, bins=bins, color=color(i), alpha=0.85)
            ax.axvline(0, color="gray", lw=0.8)
            ax.set_yticks([])
            ax.set_title(f"{label}, layer {j + 1}:\n{np.mean(flat < 0):.0%} below 0")
    fig.tight_layout()
    return fig


def batch_size_sweep(
    batch_sizes: Sequence[int],
    accuracies: dict[str, Sequence[float]],
    ylabel: str = "test accuracy (eval mode)",
) -> Figure:
    """Accuracy against batch size (log scale), one line per normalization."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (label, values) in enumerate(accuracies.items()):
        ax.plot(batch_sizes, values, "-o", color=color(k), label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("batch size during training")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    return fig


def epoch_accuracies(runs: dict[str, dict[str, Sequence[float]]]) -> Figure:
    """Test accuracy after every epoch, one panel per run (rows), one line per way of
    evaluating it (``runs[run][way]``: the accuracies of epochs 1, 2, ...)."""
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(5.5, 2.3 * len(runs) + 0.9), sharex=True, squeeze=False
    )
    for ax, (title, curves) in zip(axes[:, 0], runs.items()):
        for k, (label, values) in enumerate(curves.items()):
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, "-o", ms=4, color=color(k), label=label)
        ax.set_title(title)
        ax.set_ylabel("test accuracy")
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    legend_below(fig, axes[-1, 0], ncol=1)
    return fig
