"""Whether BatchNorm can undo itself: the identity's error, and gamma and beta learning it."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, color, legend_below

__all__ = ["identity_error_vs_batch_size", "parameter_trajectories"]


def identity_error_vs_batch_size(
    ms: Sequence[int], train_error: Sequence[float], predicted: Sequence[float], eval_error: float
) -> Figure:
    """How far BN with gamma = sqrt(var + eps), beta = mean is from the identity (log-log).

    ``train_error``: the measured RMS of ``y - x`` (relative to the population std) in
    training mode for each batch size in ``ms``; ``predicted``: the first-order prediction;
    ``eval_error``: the same measure in eval mode (float32 rounding), drawn as a level line.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.loglog(
        ms, train_error, "o", color=COLORS[0], label="training mode (batch statistics), measured"
    )
    ax.loglog(
        ms,
        predicted,
        "-",
        color=COLORS[0],
        lw=1,
        alpha=0.7,
        label=r"prediction $\sqrt{3/(2m)}$: slope $-1/2$",
    )
    ax.axhline(
        eval_error, color=COLORS[2], lw=2, ls="--", label="eval mode (running statistics), float32"
    )
    ax.set_xlabel("batch size m")
    ax.set_ylabel(r"RMS of $y - x$, relative to $\sigma$")
    fig.tight_layout()
    legend_below(fig, ax)
    return fig


def parameter_trajectories(
    gamma: np.ndarray,
    beta: np.ndarray,
    gamma_target: np.ndarray,
    beta_target: np.ndarray,
    title: str,
    gamma_reference: np.ndarray | None = None,
) -> Figure:
    """gamma and beta during training (shape ``(steps, C)``), one colour per channel.

    The targets (shape ``(C,)``) are dashed lines; ``gamma_reference``, if given, is drawn
    dotted (for example the population std when the target is the mean batch std).
    """
    fig, axes = plt.subplots(2, 1, figsize=(5.8, 5.6), sharex=True)
    for ax, values, target, name in [
        (axes[0], gamma, gamma_target, r"$\gamma$"),
        (axes[1], beta, beta_target, r"$\beta$"),
    ]:
        for c in range(values.shape[1]):
            ax.plot(
                np.arange(len(values)), values[:, c], color=color(c), lw=1.5, label=f"channel {c}"
            )
            ax.axhline(target[c], color=color(c), ls="--", lw=1)
            if gamma_reference is not None and name == r"$\gamma$":
                ax.axhline(gamma_reference[c], color=color(c), ls=":", lw=1)
        ax.set_ylabel(name)
    axes[-1].set_xlabel("step")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels))
    fig.suptitle(title, fontsize="medium", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
