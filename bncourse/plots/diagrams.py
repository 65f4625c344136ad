"""Diagrams: boxes and arrows where a learner would rather look than read (chapters 4 and 9).

Each function draws one deterministic figure (no data, no randomness) and returns it:

* :func:`train_eval_dataflow`: which statistics feed BatchNorm's output in training and in
  eval mode, and which buffers each mode updates (chapter 4);
* :func:`sync_batchnorm_messages`: what the course's SyncBatchNorm
  (:mod:`bncourse.distributed`) sends between processes, forward and backward (chapter 9);
* :func:`fold_diagram`: a Conv/Linear and its BatchNorm before folding, and the one layer
  after, with the folded weight and bias (:mod:`bncourse.fold`, chapter 9).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from .style import COLORS

__all__ = ["train_eval_dataflow", "sync_batchnorm_messages", "fold_diagram"]

GREY = "#bbbbbb"
"""The colour of what a mode leaves alone (buffers not updated, statistics not used)."""


def _box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str, *, faded=False
) -> None:
    """A rounded box of width ``w`` and height ``h`` centred at ``(x, y)`` (axes coordinates)
    with ``text`` in it; ``faded`` draws it grey and dashed (a thing the mode does not use)."""
    edge = GREY if faded else color
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.01,rounding_size=0.02",
            facecolor="white" if faded else color + "22",
            edgecolor=edge,
            linewidth=1.2,
            linestyle="--" if faded else "-",
        )
    )
    ax.text(x, y, text, ha="center", va="center", color="#888888" if faded else "k")


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    color: str = "k",
    *,
    faded: bool = False,
    label_offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    """An arrow from ``start`` to ``end`` with an optional ``label`` at its middle."""
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "->",
            "color": GREY if faded else color,
            "linewidth": 1.2,
            "linestyle": "--" if faded else "-",
            "shrinkA": 0,
            "shrinkB": 0,
        },
    )
    if label:
        mx = (start[0] + end[0]) / 2 + label_offset[0]
        my = (start[1] + end[1]) / 2 + label_offset[1]
        ax.text(
            mx,
            my,
            label,
            ha="center",
            va="center",
            color="#888888" if faded else color,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )


def _blank(ax: Axes, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title)


def train_eval_dataflow() -> Figure:
    """BatchNorm's data flow in training mode (top) and eval mode (bottom).

    Training: the batch's mean and biased variance normalize the output; the same batch
    statistics (the variance made unbiased) update ``running_mean`` and ``running_var`` by
    the momentum rule, and ``num_batches_tracked`` counts the batch. Eval: ``running_mean``
    and ``running_var`` normalize the output; no statistic of the batch is computed and no
    buffer changes. Solid: used or written; dashed grey: left alone.
    """
    fig, axes = plt.subplots(2, 1, figsize=(6, 8.6))
    for ax, training in zip(axes, (True, False)):
        _blank(ax, "training mode: model.train()" if training else "eval mode: model.eval()")
        blue, orange, green = COLORS[0], COLORS[1], COLORS[2]
        _box(ax, 0.14, 0.8, 0.22, 0.12, "input x\n(a batch)", blue)
        _box(ax, 0.14, 0.17, 0.2, 0.12, "output y", blue)
        _box(
            ax,
            0.5,
            0.8,
            0.34,
            0.14,
            "batch statistics\n" + r"$\mu_B$, $\sigma_B^2$ (biased)",
            orange,
            faded=not training,
        )
        _box(
            ax,
            0.52,
            0.2,
            0.4,
            0.16,
            r"$y = \gamma\,(x - \mu)\,/\sqrt{\sigma^2 + \epsilon} + \beta$"
            + (
                "\n" + r"$\mu, \sigma^2 = \mu_B, \sigma_B^2$"
                if training
                else "\n" + r"$\mu, \sigma^2$ = the running values"
            ),
            blue,
        )
        _box(ax, 0.87, 0.56, 0.24, 0.14, "running_mean\nrunning_var", green, faded=False)
        _box(ax, 0.87, 0.9, 0.24, 0.1, "num_batches\n_tracked", green, faded=not training)
        if training:
            _arrow(ax, (0.25, 0.8), (0.33, 0.8), color=orange)
            _arrow(ax, (0.14, 0.74), (0.32, 0.24), color=blue)
            _arrow(ax, (0.5, 0.73), (0.5, 0.28), r"$\mu_B$, $\sigma_B^2$", orange)
            _arrow(ax, (0.67, 0.76), (0.78, 0.63), color=green)
            ax.text(
                0.87,
                0.35,
                "updated:\n(1 - momentum) · old\n+ momentum · new\n"
                r"(var: $\sigma_B^2 \cdot m/(m-1)$)",
                ha="center",
                va="center",
                color=green,
            )
            _arrow(ax, (0.67, 0.85), (0.75, 0.89), "+= 1", green, label_offset=(0.0, 0.04))
            ax.text(0.86, 0.08, "written: every buffer", ha="center", color=green)
        else:
            _arrow(ax, (0.14, 0.74), (0.32, 0.24), color=blue)
            _arrow(ax, (0.25, 0.8), (0.33, 0.8), faded=True)
            _arrow(ax, (0.8, 0.49), (0.72, 0.28), "read only", green, label_offset=(0.0, 0.04))
            ax.text(0.86, 0.08, "written: nothing", ha="center", color="#888888")
        _arrow(ax, (0.32, 0.17), (0.25, 0.17), color=blue)
    fig.tight_layout()
    return fig


def sync_batchnorm_messages(processes: int = 2, channels_symbol: str = "C") -> Figure:
    """What :mod:`bncourse.distributed`'s SyncBatchNorm sends, for ``processes`` ranks.

    Forward (top): each rank packs its per-channel ``(count, mean, M2)`` (``local_stats``)
    into one message of ``1 + 2C`` numbers; ``all_gather`` gives every rank all the messages,
    and every rank merges them with Chan's formula (``merge_stats``) into the global count,
    mean and variance. Backward (bottom): each rank sums ``dy`` and ``dy (x - mean)`` over its
    rows, ``2C`` numbers; one ``all_reduce`` adds them up on every rank, and the closed form
    gives each rank the gradient of its own rows. ``dgamma``, ``dbeta`` stay per rank
    (``DistributedDataParallel`` averages them with the other parameter gradients).
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    c = channels_symbol
    fig, axes = plt.subplots(2, 1, figsize=(6, 2 * (1.2 + 0.9 * processes)))
    ys = [1 - (k + 0.5) / processes for k in range(processes)]
    h = min(0.2, 0.7 / processes)
    titles = ("forward: all_gather of (count, mean, M2)", "backward: all_reduce of two sums")
    for ax, title in zip(axes, titles):
        _blank(ax, title)
    forward, backward = axes
    orange, blue, green = COLORS[1], COLORS[0], COLORS[2]
    for ax, name, color in ((forward, "all_gather", orange), (backward, "all_reduce (sum)", green)):
        # the collective: a tall band between the ranks' boxes and what each gets back
        ax.add_patch(
            FancyBboxPatch(
                (0.42, 0.02),
                0.12,
                0.96,
                boxstyle="round,pad=0.005",
                facecolor=color + "33",
                edgecolor=color,
            )
        )
        ax.text(0.48, 0.5, name, rotation=90, ha="center", va="center", color=color)
    for k, y in enumerate(ys):
        _box(
            forward,
            0.18,
            y,
            0.32,
            h,
            f"rank {k}: its $n_{k}$ rows\n" + rf"$(n_{k}, \bar{{x}}_{k}, M_{{2,{k}}})$",
            blue,
        )
        _arrow(forward, (0.34, y), (0.42, y), f"1 + 2{c}", orange, label_offset=(0.0, h * 0.4))
        _box(
            forward,
            0.78,
            y,
            0.38,
            h,
            f"{processes} triples, Chan's merge:\n"
            + r"$N, \bar{x}, M_2/N$,"
            + "\nthe same on every rank",
            blue,
        )
        _arrow(
            forward,
            (0.54, y),
            (0.59, y),
            f"{processes} × (1 + 2{c})",
            orange,
            label_offset=(0.0, h * 0.4),
        )
        _box(
            backward,
            0.18,
            y,
            0.32,
            h,
            f"rank {k}: over its rows\n" + r"$\sum dy$, $\sum dy\,(x - \bar{x})$",
            blue,
        )
        _arrow(backward, (0.34, y), (0.42, y), f"2{c}", green, label_offset=(0.0, h * 0.4))
        _box(
            backward,
            0.78,
            y,
            0.38,
            h,
            "global sums → dx of its rows\n" + r"$d\gamma$, $d\beta$ stay local (DDP)",
            blue,
        )
        _arrow(backward, (0.54, y), (0.59, y), f"2{c}", green, label_offset=(0.0, h * 0.4))
    fig.tight_layout()
    return fig


def fold_diagram(layer: str = "Conv2d") -> Figure:
    """Folding BatchNorm into the ``layer`` before it: the two layers before (top), the one
    layer after (bottom), with the folded weight and bias of :mod:`bncourse.fold`:
    ``a = gamma / sqrt(running_var + eps)`` per output channel, ``W' = a W`` (row ``k`` of
    ``W`` scaled by ``a[k]``), ``c' = a (c - running_mean) + beta``."""
    fig, ax = plt.subplots(figsize=(6, 4.4))
    _blank(ax, "")
    blue, orange, green = COLORS[0], COLORS[1], COLORS[2]
    ax.text(0.0, 0.98, "before", weight="bold", va="center")
    ax.text(0.0, 0.45, "after", weight="bold", va="center")
    _box(ax, 0.05, 0.78, 0.07, 0.1, "x", blue)
    _box(ax, 0.26, 0.78, 0.27, 0.24, f"{layer}\nweight $W$, bias $c$\n$z = W x + c$", blue)
    _box(
        ax,
        0.63,
        0.78,
        0.36,
        0.24,
        "BatchNorm (eval)\n"
        + r"$\gamma, \beta, \mu$ = running_mean,"
        + "\n"
        + r"$\sigma^2$ = running_var, $\epsilon$",
        orange,
    )
    _box(ax, 0.95, 0.78, 0.07, 0.1, "y", blue)
    _arrow(ax, (0.085, 0.78), (0.125, 0.78))
    _arrow(ax, (0.395, 0.78), (0.45, 0.78), "z")
    _arrow(ax, (0.81, 0.78), (0.915, 0.78))
    _box(ax, 0.05, 0.22, 0.07, 0.1, "x", blue)
    _box(
        ax,
        0.38,
        0.22,
        0.5,
        0.34,
        f"one {layer}\n"
        + r"$W' = a\,W$  (output channel $k$: $a_k W_k$)"
        + "\n"
        + r"$c' = a\,(c - \mu) + \beta$"
        + "\n"
        + r"$a = \gamma / \sqrt{\sigma^2 + \epsilon}$",
        green,
    )
    _box(ax, 0.95, 0.22, 0.07, 0.1, "y", blue)
    _arrow(ax, (0.085, 0.22), (0.13, 0.22))
    _arrow(ax, (0.63, 0.22), (0.915, 0.22), "same y,\none layer\nfewer", green)
    _arrow(ax, (0.6, 0.66), (0.5, 0.39), "fold (float64)", green, label_offset=(0.12, 0.0))
    fig.tight_layout()
    return fig
