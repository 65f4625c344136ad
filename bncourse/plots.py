"""The figures of the book, one function each.

Every function draws on a new figure and returns it (:func:`reduction_pattern` draws on an
``ax`` it is given); the notebook then calls ``plt.show()``.  Call :func:`use_course_style`
once at the top of a notebook so all figures share one look.  Colours come from :data:`COLORS`.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "use_course_style",
    "scaling_comparison",
    "histograms_before_after",
    "samuelson_bound",
    "reduction_pattern",
    "eps_gain",
    "channel_stats",
    "computational_graph",
    "gradient_agreement",
    "difference_error_vs_h",
    "timing_bars",
    "identity_error_vs_batch_size",
    "parameter_trajectories",
    "accuracy_grids",
    "loss_curves",
    "activation_scale",
    "activation_histograms",
    "batch_size_sweep",
    "running_stats_trace",
    "variance_bias",
    "agreement_over_steps",
    "bench_bars",
    "statistic_noise_vs_batch",
    "normalization_family",
    "variance_error_by_method",
    "tiles_in_memory",
    "gpu_bench_times",
    "gpu_bench_bandwidth",
]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


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


def _strip(ax: Axes, columns: np.ndarray, names: Sequence[str], title: str) -> None:
    rng = np.random.default_rng(0)  # fixed jitter: the figure is the same on every run
    for j, name in enumerate(names):
        values = columns[:, j]
        ax.scatter(j + rng.uniform(-0.15, 0.15, size=values.shape), values, s=14,
                   color=COLORS[j % len(COLORS)], alpha=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_title(title)


def scaling_comparison(raw: np.ndarray, minmax: np.ndarray, zscore: np.ndarray,
                       names: Sequence[str]) -> Figure:
    """Three strip plots of a (N, C) batch: raw, min-max scaled, standardized."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    _strip(axes[0], raw, names, "raw features")
    _strip(axes[1], minmax, names, "min-max: each feature in [0, 1]")
    for level in (0, 1):
        axes[1].axhline(level, color="gray", lw=0.8, ls="--")
    _strip(axes[2], zscore, names, "z-score (BatchNorm): mean 0, std 1")
    axes[2].axhline(0, color="gray", lw=0.8, ls="--")
    fig.tight_layout()
    return fig


def histograms_before_after(before: np.ndarray, after: np.ndarray, names: Sequence[str],
                            bins: int = 40) -> Figure:
    """For each column of (N, C) ``before``/``after``: its histogram before and after BN."""
    c = before.shape[1]
    fig, axes = plt.subplots(c, 2, figsize=(9, 2.2 * c), squeeze=False)
    for j in range(c):
        color = COLORS[j % len(COLORS)]
        axes[j, 0].hist(before[:, j], bins=bins, color=color, alpha=0.8)
        axes[j, 1].hist(after[:, j], bins=bins, color=color, alpha=0.8)
        axes[j, 0].set_ylabel(names[j])
    axes[0, 0].set_title("before BatchNorm")
    axes[0, 1].set_title("after BatchNorm (same shape, new axis)")
    fig.tight_layout()
    return fig


def samuelson_bound(ms: Sequence[int], max_abs: Sequence[np.ndarray]) -> Figure:
    """Largest |xhat| in random batches of size m (dots) against the bound sqrt(m - 1)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for m, values in zip(ms, max_abs):
        rng = np.random.default_rng(m)
        ax.scatter(m * np.exp(rng.uniform(-0.06, 0.06, size=len(values))), values, s=4,
                   color=COLORS[0], alpha=0.25)
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


def reduction_pattern(ax: Axes, shape: tuple[int, int, int], highlight: np.ndarray,
                      title: str) -> None:
    """Draw an (N, C, H*W) block as cubes; the ``highlight`` mask (same shape) is coloured.

    The cubes of one colour share one mean and one variance: for BatchNorm, one channel
    across every sample and every spatial position.
    """
    n, c, hw = shape
    filled = np.ones(shape, dtype=bool)
    colors = np.empty(shape, dtype=object)
    colors[...] = "#dddddd"
    colors[highlight] = COLORS[0]
    # voxel axes: x = channel, y = sample, z = spatial position
    ax.voxels(np.transpose(filled, (1, 0, 2)), facecolors=np.transpose(colors, (1, 0, 2)),
              edgecolor="white", linewidth=0.4)
    ax.set_xlabel("C")
    ax.set_ylabel("N")
    ax.set_zlabel("H, W")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_box_aspect((c, n, hw))
    ax.set_title(title)
    ax.grid(False)


def eps_gain(variances: np.ndarray, eps: float) -> Figure:
    """The factor BN multiplies a centred channel by, 1/sqrt(var + eps), against 1/sqrt(var)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.loglog(variances, 1 / np.sqrt(variances), ls="--", color="gray", label=r"$1/\sqrt{\sigma^2}$ (no eps)")
    ax.loglog(variances, 1 / np.sqrt(variances + eps), color=COLORS[0], lw=2,
              label=rf"$1/\sqrt{{\sigma^2 + \epsilon}}$, $\epsilon$ = {eps:g}")
    ax.axhline(1 / np.sqrt(eps), color=COLORS[3], lw=1, ls=":", label=r"cap $1/\sqrt{\epsilon}$")
    ax.axvline(eps, color=COLORS[3], lw=1, ls=":")
    ax.set_xlabel(r"channel variance $\sigma^2$")
    ax.set_ylabel("gain applied to x - mean")
    ax.legend()
    fig.tight_layout()
    return fig


def channel_stats(mean_before: np.ndarray, std_before: np.ndarray, mean_after: np.ndarray,
                  std_after: np.ndarray) -> Figure:
    """Per-channel mean and standard deviation before and after normalization, as bars."""
    c = len(mean_before)
    idx = np.arange(c)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, before, after, title in [(axes[0], mean_before, mean_after, "per-channel mean"),
                                     (axes[1], std_before, std_after, "per-channel std")]:
        ax.bar(idx - 0.2, before, width=0.4, label="before", color=COLORS[1])
        ax.bar(idx + 0.2, after, width=0.4, label="after", color=COLORS[0])
        ax.set_xticks(idx, [f"c={j}" for j in idx])
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    return fig


def computational_graph() -> Figure:
    """BatchNorm's forward pass as a graph of small nodes (per channel)."""
    nodes = {
        "x": (0.0, 1.0), "mu": (1.5, 2.0), "xc": (3.0, 1.0), "var": (4.5, 2.0),
        "inv_std": (6.3, 2.0), "xhat": (7.8, 1.0), "y": (9.6, 1.0),
        "gamma": (7.8, 0.0), "beta": (9.6, 0.0),
    }
    labels = {
        "x": r"$x$", "mu": r"$\mu = \frac{1}{m}\sum x$", "xc": r"$x_c = x - \mu$",
        "var": r"$\sigma^2 = \frac{1}{m}\sum x_c^2$",
        "inv_std": r"$s = (\sigma^2+\epsilon)^{-1/2}$",
        "xhat": r"$\hat{x} = x_c\, s$", "y": r"$y = \gamma \hat{x} + \beta$",
        "gamma": r"$\gamma$", "beta": r"$\beta$",
    }
    edges = [("x", "mu"), ("x", "xc"), ("mu", "xc"), ("xc", "var"), ("var", "inv_std"),
             ("xc", "xhat"), ("inv_std", "xhat"), ("xhat", "y"), ("gamma", "y"), ("beta", "y")]
    fig, ax = plt.subplots(figsize=(10, 3.0))
    boxes = {}
    for name, (x, y) in nodes.items():
        param = name in ("gamma", "beta")
        boxes[name] = ax.text(
            x, y, labels[name], ha="center", va="center", fontsize=11,
            bbox=dict(boxstyle="round,pad=0.5", facecolor="#fdebd3" if param else "#dbe9f6",
                      edgecolor=COLORS[1] if param else COLORS[0]))
    for a, b in edges:
        ax.annotate("", xy=nodes[b], xytext=nodes[a],
                    arrowprops=dict(arrowstyle="-|>", color="gray", lw=1.2, shrinkA=2, shrinkB=2,
                                    patchA=boxes[a].get_bbox_patch(),
                                    patchB=boxes[b].get_bbox_patch()))
    ax.set_xlim(-0.7, 10.5)
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
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.loglog(hs, central, "o-", label="central (f(x+h) - f(x-h)) / 2h", color=COLORS[0])
    ax.loglog(hs, forward, "s-", label="one-sided (f(x+h) - f(x)) / h", color=COLORS[1])
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    return fig


def timing_bars(labels: Sequence[str], seconds: Sequence[float], title: str) -> Figure:
    """Horizontal bars of run times in milliseconds."""
    fig, ax = plt.subplots(figsize=(7, 1.4 + 0.5 * len(labels)))
    ms = np.asarray(seconds) * 1e3
    ax.barh(range(len(labels)), ms, color=COLORS[: len(labels)])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("time per call (ms)")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Chapters 4 and 5: running statistics; the PyTorch module
# --------------------------------------------------------------------------------------------

def running_stats_trace(batch_values: np.ndarray, traces: dict[str, np.ndarray],
                        target: float, ylabel: str) -> Figure:
    """A running statistic step by step: one line per update rule in ``traces`` (each as long
    as ``batch_values``), the batches' own values as dots and the population value dashed."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    steps = np.arange(1, len(batch_values) + 1)
    ax.scatter(steps, batch_values, s=10, color="gray", alpha=0.6, label="this batch's value")
    for (label, values), color in zip(traces.items(), COLORS):
        ax.plot(steps, values, lw=2, color=color, label=label)
    ax.axhline(target, color="black", ls="--", lw=1, label="population value")
    ax.set_xlabel("training step (batches seen)")
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    return fig


def variance_bias(ms: np.ndarray, biased: np.ndarray, unbiased: np.ndarray,
                  true_var: float) -> Figure:
    """Average over many batches of the biased and the unbiased batch variance, against the
    batch size m, with the population variance and the predicted (m - 1) / m * variance."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(ms, biased, "o-", color=COLORS[1], label="average biased variance (divide by m)")
    ax.plot(ms, unbiased, "s-", color=COLORS[0], label="average unbiased variance (divide by m - 1)")
    grid = np.linspace(ms.min(), ms.max(), 200)
    ax.plot(grid, true_var * (grid - 1) / grid, color=COLORS[1], lw=1, ls=":",
            label=r"prediction $\frac{m-1}{m}\sigma^2$")
    ax.axhline(true_var, color="black", ls="--", lw=1, label=r"population $\sigma^2$")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("values per channel in a batch, m")
    ax.set_ylabel("variance")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def agreement_over_steps(errors: dict[str, np.ndarray], title: str) -> Figure:
    """Largest difference between two implementations at every step, one line per quantity
    (log scale; exact zeros are drawn on the bottom line, labelled 0)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    floor = 1e-18
    for (label, values), color in zip(errors.items(), COLORS):
        values = np.maximum(np.asarray(values, dtype=np.float64), floor)
        ax.semilogy(np.arange(1, len(values) + 1), values, "o-", ms=3, color=color, label=label)
    ax.set_ylim(floor / 2, 1)
    ticks = [floor, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 1.0]
    ax.set_yticks(ticks, ["0 (equal)"] + [f"{t:.0e}" for t in ticks[1:]])
    ax.set_xlabel("step")
    ax.set_ylabel("largest |ours - torch.nn|")
    ax.set_title(title)
    ax.legend(fontsize=9, ncol=2)
    fig.tight_layout()
    return fig


def bench_bars(labels: Sequence[str], ours: Sequence[float], native: Sequence[float],
               copy: Sequence[float]) -> Figure:
    """Forward+backward times (ms) per input shape: ours, torch.nn's and one plain copy."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.9 * len(labels)))
    y = np.arange(len(labels))
    for offset, values, name, color in [(-0.27, ours, "ours (torch_bn)", COLORS[0]),
                                        (0.0, native, "torch.nn (ATen)", COLORS[1]),
                                        (0.27, copy, "x.clone()", COLORS[2])]:
        ax.barh(y + offset, values, height=0.25, color=color, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("time per forward+backward (ms)")
    ax.legend(fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 6: the identity-recovery argument
# --------------------------------------------------------------------------------------------
def identity_error_vs_batch_size(ms: Sequence[int], train_error: Sequence[float],
                                 predicted: Sequence[float], eval_error: float) -> Figure:
    """How far BN with gamma = sqrt(var + eps), beta = mean is from the identity (log-log).

    ``train_error``: the measured RMS of ``y - x`` (relative to the population std) in
    training mode for each batch size in ``ms``; ``predicted``: the first-order prediction;
    ``eval_error``: the same measure in eval mode (float32 rounding), drawn as a level line.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.loglog(ms, train_error, "o", color=COLORS[0], label="training mode (batch statistics), measured")
    ax.loglog(ms, predicted, "-", color=COLORS[0], lw=1, alpha=0.7,
              label=r"prediction $\sqrt{3/(2m)}$: slope $-1/2$")
    ax.axhline(eval_error, color=COLORS[2], lw=2, ls="--",
               label="eval mode (running statistics), float32")
    ax.set_xlabel("batch size m")
    ax.set_ylabel(r"RMS of $y - x$, relative to $\sigma$")
    ax.legend(loc="center right")
    fig.tight_layout()
    return fig


def parameter_trajectories(gamma: np.ndarray, beta: np.ndarray, gamma_target: np.ndarray,
                           beta_target: np.ndarray, title: str,
                           gamma_reference: np.ndarray | None = None) -> Figure:
    """gamma and beta during training (shape ``(steps, C)``), one colour per channel.

    The targets (shape ``(C,)``) are dashed lines; ``gamma_reference``, if given, is drawn
    dotted (for example the population std when the target is the mean batch std).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharex=True)
    for ax, values, target, name in [(axes[0], gamma, gamma_target, r"$\gamma$"),
                                     (axes[1], beta, beta_target, r"$\beta$")]:
        for c in range(values.shape[1]):
            color = COLORS[c % len(COLORS)]
            ax.plot(np.arange(len(values)), values[:, c], color=color, lw=1.5, label=f"channel {c}")
            ax.axhline(target[c], color=color, ls="--", lw=1)
            if gamma_reference is not None and name == r"$\gamma$":
                ax.axhline(gamma_reference[c], color=color, ls=":", lw=1)
        ax.set_xlabel("step")
        ax.set_title(name)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 7: BatchNorm in training
# --------------------------------------------------------------------------------------------
def accuracy_grids(grids: dict[tuple[str, str], np.ndarray], scales: Sequence[float],
                   lrs: Sequence[float]) -> Figure:
    """Heatmaps of final test accuracy, one per ``(model, variant)`` key, in rows by model.

    Each grid has shape ``(len(scales), len(lrs))``: rows are weight-initialisation scales,
    columns learning rates; every cell is annotated with its accuracy.
    """
    models = list(dict.fromkeys(key[0] for key in grids))
    variants = list(dict.fromkeys(key[1] for key in grids))
    fig, axes = plt.subplots(len(models), len(variants), figsize=(3.4 * len(variants), 2.9 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        for j, variant in enumerate(variants):
            ax = axes[i, j]
            grid = grids[(model, variant)]
            ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            for (r, c), value in np.ndenumerate(grid):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=9,
                        color="black" if value > 0.6 else "white")
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
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves(curves: dict[tuple[str, str, float], Sequence[float]], scales: Sequence[float],
                title: str, diverged: Sequence[tuple[str, str, float]] = (),
                window: int = 10) -> Figure:
    """Training loss per step (moving average over ``window`` steps), log scale.

    ``curves`` maps ``(model, variant, init scale)`` to the per-step losses; one panel per
    model (rows) and scale (columns), one line per variant.  Runs whose key is in
    ``diverged`` stopped early; their panel says at which step.
    """
    models = list(dict.fromkeys(key[0] for key in curves))
    variants = list(dict.fromkeys(key[1] for key in curves))
    fig, axes = plt.subplots(len(models), len(scales), figsize=(2.3 * len(scales), 2.4 * len(models)),
                             sharex=True, sharey=True, squeeze=False)
    for i, model in enumerate(models):
        for j, scale in enumerate(scales):
            ax = axes[i, j]
            notes = []
            for k, variant in enumerate(variants):
                key = (model, variant, scale)
                losses = curves[key]
                smooth = _smooth(losses, window)
                steps = np.arange(len(smooth)) + (len(losses) - len(smooth))
                ax.plot(steps, smooth, color=COLORS[k], lw=1.3, label=variant)
                if key in diverged:
                    notes.append((f"{variant}: diverged at step {len(losses)}", COLORS[k]))
            for n, (note, color) in enumerate(notes):
                ax.text(0.97, 0.95 - 0.11 * n, note, transform=ax.transAxes, ha="right", va="top",
                        fontsize=7, color=color)
            ax.set_yscale("log")
            ax.set_ylim(0.02, 30)
            ax.set_title(f"{model}, init scale {scale:g}", fontsize=9)
            if i == len(models) - 1:
                ax.set_xlabel("step")
        axes[i, 0].set_ylabel("training loss")
    axes[-1, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def activation_scale(stds: dict[str, Sequence[float]]) -> Figure:
    """Standard deviation of each hidden layer's pre-activations (log scale), one line per key."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (label, values) in enumerate(stds.items()):
        layers = np.arange(1, len(values) + 1)
        style = "-o" if "with BN" in label else "--s"
        ax.semilogy(layers, values, style, color=COLORS[k % len(COLORS)], label=label)
    ax.set_xticks(np.arange(1, len(next(iter(stds.values()))) + 1))
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("std of the ReLU inputs")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def activation_histograms(values: dict[str, Sequence[np.ndarray]], bins: int = 60) -> Figure:
    """Histograms of each hidden layer's pre-activations: one row per key, one column per layer.

    Each panel's title gives the fraction of values below 0 (ReLU outputs 0 for them).
    """
    labels = list(values)
    layers = len(values[labels[0]])
    fig, axes = plt.subplots(len(labels), layers, figsize=(2.5 * layers, 2.2 * len(labels)),
                             squeeze=False)
    for i, label in enumerate(labels):
        for j, layer_values in enumerate(values[label]):
            ax = axes[i, j]
            flat = np.ravel(layer_values)
            ax.hist(flat, bins=bins, color=COLORS[i % len(COLORS)], alpha=0.85)
            ax.axvline(0, color="gray", lw=0.8)
            ax.set_yticks([])
            ax.set_title(f"layer {j + 1}: {np.mean(flat < 0):.0%} below 0", fontsize=9)
        axes[i, 0].set_ylabel(label)
    fig.tight_layout()
    return fig


def batch_size_sweep(batch_sizes: Sequence[int], accuracies: dict[str, Sequence[float]],
                     ylabel: str = "test accuracy (eval mode)") -> Figure:
    """Accuracy against batch size (log scale), one line per normalization."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (label, values) in enumerate(accuracies.items()):
        ax.plot(batch_sizes, values, "-o", color=COLORS[k % len(COLORS)], label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("batch size during training")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 9: beyond one device and beyond BatchNorm
# --------------------------------------------------------------------------------------------
def statistic_noise_vs_batch(ms: Sequence[int], noise: Sequence[float], marks: dict[str, int]) -> Figure:
    """Spread (std over many batches) of a channel's batch mean against the batch size ``m``,
    log-log, with the prediction ``1/sqrt(m)`` and vertical marks at named batch sizes."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
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


def normalization_family(shape: tuple[int, int, int] = (4, 6, 4), groups: int = 2) -> Figure:
    """The four members of the family on one (N, C, H*W) block: the blue cubes share one
    mean and variance (after the figure of Wu and He's Group Normalization paper)."""
    n, c, hw = shape
    patterns = {}
    batch = np.zeros(shape, dtype=bool)
    batch[:, 0, :] = True
    patterns["BatchNorm\nover (N, H, W), per channel"] = batch
    layer = np.zeros(shape, dtype=bool)
    layer[0] = True
    patterns["LayerNorm\nover (C, H, W), per sample"] = layer
    instance = np.zeros(shape, dtype=bool)
    instance[0, 0, :] = True
    patterns["InstanceNorm\nover (H, W), per sample, channel"] = instance
    group = np.zeros(shape, dtype=bool)
    group[0, : c // groups, :] = True
    patterns[f"GroupNorm ({groups} groups)\nover (C/G, H, W), per group"] = group
    fig = plt.figure(figsize=(13, 3.6))
    for k, (title, mask) in enumerate(patterns.items()):
        ax = fig.add_subplot(1, 4, k + 1, projection="3d")
        reduction_pattern(ax, shape, mask, "")
        ax.set_title(title, fontsize=9, pad=12)
    fig.subplots_adjust(left=0.0, right=0.98, top=0.88, bottom=0.02, wspace=0.05)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 8: BatchNorm on the GPU
# --------------------------------------------------------------------------------------------
def variance_error_by_method(means: Sequence[float], errors: dict[str, Sequence[float]]) -> Figure:
    """Relative error of a float32 variance (vs float64) against the data's mean, one line per
    method; errors of 0 are drawn at the bottom of the axis."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    floor = 1e-9
    for k, (name, values) in enumerate(errors.items()):
        shown = np.maximum(np.asarray(values, dtype=float), floor)
        ax.plot(means, shown, marker="o", color=COLORS[k % len(COLORS)], label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.text(means[0], 1.3, "100% error", fontsize=8, color="gray")
    ax.set_xlabel("mean of the data (standard deviation 1)")
    ax.set_ylabel("relative error of the variance")
    ax.set_ylim(floor / 2, None)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def tiles_in_memory(layouts: dict[str, tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]) -> Figure:
    """One strip per layout: the tensor's elements in memory order, coloured by channel
    (top row) and by the program that reads them (bottom row, numbered by tile).

    ``layouts`` maps a title to ``(channel, program)`` arrays in memory order.
    """
    fig, axes = plt.subplots(len(layouts), 1, figsize=(10, 1.5 * len(layouts) + 0.3))
    axes = np.atleast_1d(axes)
    tile_colors = plt.get_cmap("tab20")
    for ax, (title, (channel, program)) in zip(axes, layouts.items()):
        size = len(channel)
        for i in range(size):
            ax.add_patch(plt.Rectangle((i, 1), 1, 1, facecolor=COLORS[int(channel[i]) % len(COLORS)],
                                       edgecolor="white", lw=0.5))
            ax.add_patch(plt.Rectangle((i, 0), 1, 1, facecolor=tile_colors(int(program[i]) % 20),
                                       edgecolor="white", lw=0.5))
            ax.text(i + 0.5, 1.5, f"c{int(channel[i])}", ha="center", va="center", fontsize=6, color="white")
            ax.text(i + 0.5, 0.5, str(int(program[i])), ha="center", va="center", fontsize=6)
        ax.set_xlim(0, size)
        ax.set_ylim(0, 2)
        ax.set_yticks([0.5, 1.5], ["program", "channel"])
        ax.set_xticks([])
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel(f"memory address (elements) of a tensor of shape {tuple(shape)}")
    fig.tight_layout()
    return fig


def _bench_rows(report: dict, pass_name: str) -> list[dict]:
    return [r for r in report["results"] if r["pass"] == pass_name]


def _case_label(r: dict) -> str:
    layout = " CL" if r["layout"] == "channels_last" else ""
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[r["dtype"]]
    return f"{'x'.join(map(str, r['shape']))} {dtype}{layout}"


def gpu_bench_times(report: dict) -> Figure:
    """Time of each implementation in copies' worth (time / time of ``x.clone()``), per case,
    forward and forward+backward; the dashed line is the minimal traffic in copies (1.5 and
    4): a kernel on it moves no more bytes than it must, at a copy's speed."""
    names = {"triton": "Triton (triton_bn)", "cudnn": "F.batch_norm (cuDNN)",
             "native": "F.batch_norm, cuDNN off", "torch_bn": "torch_bn (torch ops)"}
    passes = [("forward", 1.5), ("forward+backward", 4.0)]
    rows = _bench_rows(report, "forward")
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.4 + 0.55 * len(rows)), sharey=True)
    for ax, (pass_name, floor) in zip(axes, passes):
        rows = _bench_rows(report, pass_name)
        y = np.arange(len(rows))
        height = 0.8 / len(names)
        for k, (key, label) in enumerate(names.items()):
            values = [r["ms"][key] / r["ms"]["copy"] for r in rows]
            ax.barh(y - 0.4 + (k + 0.5) * height, values, height=height, color=COLORS[k], label=label)
        ax.axvline(floor, color="black", ls="--", lw=1)
        ax.set_xscale("log")
        ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
                 if t <= 1.2 * max(r["ms"][key] / r["ms"]["copy"] for r in rows for key in names)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_yticks(y, [_case_label(r) for r in rows])
        ax.set_title(f"{pass_name} (floor: {floor:g} copies)")
        ax.set_xlabel("time / time of x.clone()")
    axes[0].invert_yaxis()  # (shared: once for both)
    env = report["environment"]
    fig.suptitle(f"{env['gpu']}, torch {env['torch']}, triton {env['triton']}, {report['date']}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8)
    return fig


def gpu_bench_bandwidth(report: dict, target: float = 0.8) -> Figure:
    """The Triton kernels' bandwidth (minimal traffic / time) as a fraction of a copy's, per
    case, forward and forward+backward, with the 80% target line."""
    forward = _bench_rows(report, "forward")
    both = _bench_rows(report, "forward+backward")
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(forward)))
    y = np.arange(len(forward))
    for offset, rows, label, color in [(-0.2, forward, "forward", COLORS[0]),
                                       (0.2, both, "forward+backward", COLORS[1])]:
        ax.barh(y + offset, [r["gbps"]["triton"] / r["gbps"]["copy"] for r in rows], height=0.38,
                color=color, label=label)
    ax.axvline(target, color="black", ls="--", lw=1)
    ax.text(target, -0.9, f" target {target:.0%}", fontsize=8)
    ax.set_yticks(y, [_case_label(r) for r in forward])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("Triton: bandwidth of its minimal traffic / bandwidth of x.clone()")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
    fig.tight_layout()
    return fig

