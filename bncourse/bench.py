"""How fast is our BatchNorm? Forward + backward against torch.nn's and against a plain copy.

``python -m bncourse bench`` times, for each input shape and in the same run:

* ``ours``: :mod:`bncourse.torch_bn`'s module, forward then backward (gradients of the input,
  weight and bias from ``torch.autograd.grad``, so nothing accumulates between calls);
* ``native``: ``torch.nn.BatchNorm1d/2d/3d``, the same calls (ATen's fused kernels; cuDNN on
  CUDA);
* ``copy``: ``x.clone()``, one read and one write of the input: the memory-bandwidth floor.

BatchNorm is memory-bound: it does a few flops per value and must read the input several
times (statistics, normalization, the backward's sums and ``dx``).  ``native/copy`` says how
many copies' worth of time the fused kernels take; ``ours/native`` what writing the passes as
separate torch operations (each one a full read and write of memory) costs on top.

Timing: every measurement is one call of one implementation; the implementations take turns
(``ours``, ``native``, ``copy``, ``ours``, ...) over ``repeats`` rounds after ``warmup``
untimed ones.  The table reports the *best* time of each (``timeit``'s advice: the spread
above the minimum is other processes taking the processor, not the code; on a shared machine
it can be many times the minimum), and the ratios of best times; the JSON also has the
medians.  On CUDA each call is synchronized before the clock stops.  Module mode is training
(batch statistics, running statistics updated), input float32.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import torch_bn
from .conventions import MODULE_FOR_NDIM

__all__ = ["DEFAULT_SHAPES", "Result", "parse_shape", "time_calls", "run", "format_table", "main"]

DEFAULT_SHAPES: list[tuple[int, ...]] = [(64, 64, 32, 32), (256, 256, 14, 14), (8192, 512)]

# torch.nn's BatchNorm class for an input of each number of dimensions


@dataclass
class Result:
    """One shape's timings in milliseconds (best and median) and the two ratios (of best)."""

    shape: list[int]
    module: str
    dtype: str
    device: str
    ours_ms: float
    native_ms: float
    copy_ms: float
    ours_median_ms: float
    native_median_ms: float
    copy_median_ms: float
    ours_over_native: float
    native_over_copy: float


def parse_shape(text: str) -> tuple[int, ...]:
    """``"64x64x32x32"`` (or ``"64,64,32,32"``) -> ``(64, 64, 32, 32)``; 2 to 5 dimensions."""
    try:
        shape = tuple(int(part) for part in text.replace(",", "x").split("x"))
    except ValueError:
        raise ValueError(
            f"a shape is sizes joined by 'x', like 64x64x32x32, got {text!r}"
        ) from None
    if not 2 <= len(shape) <= 5 or min(shape) < 1:
        raise ValueError(f"a BatchNorm input has 2 to 5 positive sizes (N, C, ...), got {text!r}")
    return shape


def time_calls(
    calls: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call for each entry of ``calls``, taking turns: ``{name: [seconds, ...]}``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _forward_backward(
    module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor
) -> Callable[[], object]:
    inputs = [x, module.weight, module.bias]
    return lambda: torch.autograd.grad(module(x), inputs, dy)


def run(
    shapes: list[tuple[int, ...]] | None = None,
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> list[Result]:
    """Time ours, native and copy for every shape (float32, training mode)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch.cuda.is_available() is False")
    results = []
    for shape in shapes or DEFAULT_SHAPES:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=generator).to(dev).requires_grad_()
        dy = torch.randn(shape, generator=generator).to(dev)
        name = MODULE_FOR_NDIM[len(shape)]
        ours = getattr(torch_bn, name)(shape[1], device=dev)
        native = getattr(torch.nn, name)(shape[1], device=dev)
        seconds = time_calls(
            {
                "ours": _forward_backward(ours, x, dy),
                "native": _forward_backward(native, x, dy),
                "copy": lambda x=x: x.detach().clone(),  # (x of this shape)
            },
            repeats,
            warmup,
            dev,
        )
        median = {k: statistics.median(v) * 1e3 for k, v in seconds.items()}
        best = {k: min(v) * 1e3 for k, v in seconds.items()}
        results.append(
            Result(
                shape=list(shape),
                module=name,
                dtype="float32",
                device=str(dev),
                ours_ms=best["ours"],
                native_ms=best["native"],
                copy_ms=best["copy"],
                ours_median_ms=median["ours"],
                native_median_ms=median["native"],
                copy_median_ms=median["copy"],
                ours_over_native=best["ours"] / best["native"],
                native_over_copy=best["native"] / best["copy"],
            )
        )
    return results


def format_table(results: list[Result]) -> str:
    """The results as an aligned text table (best times in ms, and their ratios)."""
    header = (
        f"{'shape':<20} {'module':<12} {'ours ms':>9} {'native ms':>10} {'copy ms':>8} "
        f"{'ours/native':>12} {'native/copy':>12}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{str(tuple(r.shape)):<20} {r.module:<12} {r.ours_ms:>9.2f} {r.native_ms:>10.2f} "
            f"{r.copy_ms:>8.2f} {r.ours_over_native:>12.2f} {r.native_over_copy:>12.2f}"
        )
    return "\n".join(lines)


def environment(device: str) -> dict[str, object]:
    """What the numbers depend on: versions, threads, the processor or GPU."""
    info: dict[str, object] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(
    shapes: list[tuple[int, ...]] | None = None,
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    json_path: str | None = None,
) -> list[Result]:
    """Run, print the table, and write the JSON report if ``json_path`` is given."""
    env = environment(device)
    print(
        f"BatchNorm forward+backward, float32, training mode, device {device}, "
        f"torch {env['torch']}, {env['threads']} threads; best of {repeats} runs"
    )
    results = run(shapes, device, repeats, warmup)
    print(format_table(results))
    if json_path:
        report = {
            "device": device,
            "repeats": repeats,
            "warmup": warmup,
            "environment": env,
            "results": [asdict(r) for r in results],
        }
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    assert all(math.isfinite(r.ours_over_native) for r in results)
    return results
