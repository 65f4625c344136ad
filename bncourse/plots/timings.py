"""Times: CPU timings of the chapters, the recorded GPU benchmark, and the bandwidth model.

The measured GPU figures draw a results file of :mod:`bncourse.gpu_bench` (as
:func:`bncourse.gpu_bench.load_results` returns it); :func:`bandwidth_model_times` draws the
floors :func:`bncourse.gpu_bench.bandwidth_model` predicts, labeled "predicted, not measured".
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import COLORS, legend_below

__all__ = [
    "timing_bars",
    "bench_bars",
    "gpu_bench_times",
    "gpu_bench_bandwidth",
    "bandwidth_model_times",
]


def timing_bars(labels: Sequence[str], seconds: Sequence[float], title: str) -> Figure:
    """Horizontal bars of run times in milliseconds."""
    fig, ax = plt.subplots(figsize=(6, 1.4 + 0.5 * len(labels)))
    ms = np.asarray(seconds) * 1e3
    ax.barh(range(len(labels)), ms, color=COLORS[: len(labels)])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("time per call (ms)")
    ax.set_title(title, wrap=True)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def bench_bars(
    labels: Sequence[str], ours: Sequence[float], native: Sequence[float], copy: Sequence[float]
) -> Figure:
    """Forward+backward times (ms) per input shape: ours, torch.nn's and one plain copy."""
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.9 * len(labels)))
    y = np.arange(len(labels))
    for offset, values, name, color in [
        (-0.27, ours, "ours (torch_bn)", COLORS[0]),
        (0.0, native, "torch.nn (ATen)", COLORS[1]),
        (0.27, copy, "x.clone()", COLORS[2]),
    ]:
        ax.barh(y + offset, values, height=0.25, color=color, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("time per forward+backward (ms)")
    fig.tight_layout()
    legend_below(fig, ax, ncol=2)
    return fig


def _bench_rows(report: dict, pass_name: str) -> list[dict]:
    """The results of one pass (``"forward"`` or ``"forward+backward"``), in file order."""
    return [r for r in report["results"] if r["pass"] == pass_name]


def _case_label(r: dict) -> str:
    """A result's case, short (:func:`bncourse.gpu_bench.case_label`; imported here, where a
    results file is drawn, so that drawing nothing else needs torch)."""
    from ..gpu_bench import case_label

    return case_label(r)


def gpu_bench_times(report: dict) -> Figure:
    """Time of each implementation in copies' worth (time / time of ``x.clone()``), per case,
    forward and forward+backward; the dashed line is the minimal traffic in copies (1.5 and
    4): a kernel on it moves no more bytes than it must, at a copy's speed."""
    names = {
        "triton": "Triton (triton_bn)",
        "cudnn": "F.batch_norm (cuDNN or ATen)",
        "native": "F.batch_norm, cuDNN off",
        "torch_bn": "torch_bn (torch ops)",
    }
    passes = [("forward", 1.5), ("forward+backward", 4.0)]
    rows = _bench_rows(report, "forward")
    fig, axes = plt.subplots(2, 1, figsize=(6, 2.4 + 0.8 * len(rows)))
    for ax, (pass_name, floor) in zip(axes, passes):
        rows = _bench_rows(report, pass_name)
        y = np.arange(len(rows))
        height = 0.8 / len(names)
        for k, (key, label) in enumerate(names.items()):
            values = [r["ms"][key] / r["ms"]["copy"] for r in rows]
            ax.barh(
                y - 0.4 + (k + 0.5) * height, values, height=height, color=COLORS[k], label=label
            )
        ax.axvline(floor, color="black", ls="--", lw=1)
        ax.set_xscale("log")
        largest = max(r["ms"][key] / r["ms"]["copy"] for r in rows for key in names)
        ticks = [
            t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128) if t <= 1.2 * largest
        ]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_yticks(y, [_case_label(r) for r in rows])
        ax.set_title(f"{pass_name} (floor: {floor:g} copies)")
        ax.set_xlabel("time / time of x.clone()")
    for ax in axes:
        ax.invert_yaxis()
    env = report["environment"]
    fig.suptitle(f"{env['gpu']},\ntorch {env['torch']}, triton {env['triton']}, {report['date']}")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    return fig


def gpu_bench_bandwidth(report: dict, target: float = 0.8) -> Figure:
    """The Triton kernels' bandwidth (minimal traffic / time) as a fraction of a copy's, per
    case, forward and forward+backward, with the 80% target line."""
    forward = _bench_rows(report, "forward")
    both = _bench_rows(report, "forward+backward")
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(forward)))
    y = np.arange(len(forward))
    for offset, rows, label, color in [
        (-0.2, forward, "forward", COLORS[0]),
        (0.2, both, "forward+backward", COLORS[1]),
    ]:
        ax.barh(
            y + offset,
            [r["gbps"]["triton"] / r["gbps"]["copy"] for r in rows],
            height=0.38,
            color=color,
            label=label,
        )
    ax.axvline(target, color="black", ls="--", lw=1)
    ax.text(target, -0.9, f" target {target:.0%}")
    ax.set_yticks(y, [_case_label(r) for r in forward])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("Triton: bandwidth of its minimal traffic\n/ bandwidth of x.clone()")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
    fig.tight_layout()
    return fig


_MODEL_LABELS = {
    "copy": "x.clone() (copy)",
    "fused": "one fused kernel (Triton; cuDNN, ATen at best)",
    "torch_bn": "torch_bn (torch ops)",
}


def bandwidth_model_times(rows: list[dict]) -> Figure:
    """The bandwidth model's time floors (:func:`bncourse.gpu_bench.bandwidth_model`), per case,
    forward and forward+backward: one bar per implementation at the first GPU's bandwidth
    (the H100's), and inside it a darker bar at the second's (the H200's).  Every title says
    "predicted, not measured"."""
    gpus = list(rows[0]["us"])
    names = list(rows[0]["bytes"])
    passes = list(dict.fromkeys(r["pass"] for r in rows))
    forward = [r for r in rows if r["pass"] == passes[0]]
    fig, axes = plt.subplots(len(passes), 1, figsize=(6, 2.6 + 0.8 * len(forward)), squeeze=False)
    axes = axes[:, 0]
    height = 0.8 / len(names)
    for ax, pass_name in zip(axes, passes):
        selected = [r for r in rows if r["pass"] == pass_name]
        y = np.arange(len(selected))
        for k, name in enumerate(names):
            offset = y - 0.4 + (k + 0.5) * height
            ax.barh(
                offset,
                [r["us"][gpus[0]][name] for r in selected],
                height=height,
                color=COLORS[k],
                alpha=0.45,
                label=f"{_MODEL_LABELS.get(name, name)}",
            )
            if len(gpus) > 1:
                ax.barh(
                    offset,
                    [r["us"][gpus[1]][name] for r in selected],
                    height=height * 0.5,
                    color=COLORS[k],
                )
        ax.set_xscale("log")
        ax.set_yticks(y, [_case_label(r) for r in selected])
        ax.set_title(f"{pass_name}: predicted, not measured")
        ax.set_xlabel("time floor (µs) = bytes moved / published bandwidth")
        ax.invert_yaxis()
    inner = f";\ninner dark bars: {gpus[1]}" if len(gpus) > 1 else ""
    fig.suptitle(f"Bandwidth model, PREDICTED, NOT MEASURED.\nWide light bars: {gpus[0]}{inner}")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    return fig
