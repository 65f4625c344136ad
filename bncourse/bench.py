"""How fast is our BatchNorm? Forward + backward against torch.nn's and against a plain copy.

``python -m bncourse bench`` times, for each case (an input shape and memory layout) and in
the same run:

* ``ours`` (eager): :mod:`bncourse.torch_bn`'s module, forward then backward (gradients of
  the input, weight and bias from ``torch.autograd.grad``, so nothing accumulates between
  calls);
* ``compiled``: :mod:`bncourse.compiled_bn`'s module, the same formulas with each pass
  compiled by ``torch.compile``; its first call, which compiles (or loads TorchInductor's
  cache), is timed on its own: ``compile_s``;
* ``native``: ``torch.nn.BatchNorm1d/2d/3d``, the same calls (ATen's fused kernels; cuDNN on
  CUDA);
* ``copy``: ``x.clone()``, one read and one write of the input: the memory-bandwidth floor.

BatchNorm is memory-bound: it does a few flops per value and must read the input several
times (statistics, normalization, the backward's sums and ``dx``).  ``native/copy`` says how
many copies' worth of time the fused kernels take; ``ours/native`` what writing the passes as
separate torch operations (each one a full read and write of memory) costs on top, and
``compiled/native`` what fusing them gains back.

Timing: every measurement is one call of one implementation; the implementations take turns
(``ours``, ``compiled``, ``native``, ``copy``, ``ours``, ...) over ``repeats`` rounds after
``warmup`` untimed ones.  The table reports the *median* time of each and the ratios of
medians, and the ratio of *best* times too (``timeit``'s advice: the spread above the minimum
is other processes taking the processor, not the code; on a shared machine it can be many
times the minimum); the JSON has both.  On CUDA each call is synchronized before the clock
stops.  Module mode is training (batch statistics, running statistics updated), input
float32.

Two things would otherwise make the numbers differ from run to run by up to 2x, for reasons
that are not the kernels':

* memory: glibc's ``free`` hands blocks of many megabytes back to the operating system, and
  the next call's ``malloc`` gets them back page by page, each page zeroed on first touch
  (thousands of page faults per call, more or fewer depending on the order of the calls).
  The benchmark asks glibc to keep freed memory in the process (:func:`keep_freed_memory`),
  as a training loop's steady state does, so every call works in memory it already has;
* the compiled code: ``torch.compile`` makes code for the first sizes it sees and, after
  another size, code for every size, which is slower. Each case starts from
  :func:`bncourse.compiled_bn.reset`, so that it runs the code made for its shape, as a
  training loop of that shape would.
"""

from __future__ import annotations

import ctypes
import json
import math
import platform
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import compiled_bn, torch_bn
from .conventions import MODULE_FOR_NDIM, values_per_channel

__all__ = [
    "DEFAULT_SHAPES",
    "DEFAULT_CASES",
    "Result",
    "parse_shape",
    "keep_freed_memory",
    "time_calls",
    "floor_passes",
    "run",
    "format_table",
    "main",
]

DEFAULT_SHAPES: list[tuple[int, ...]] = [
    (64, 64, 32, 32),
    (256, 256, 14, 14),
    (8192, 512),
    (100000, 32),  # few channels, many rows: the BatchNorm1d shape of pytorch#61587
    (256, 2048, 7, 7),  # ResNet-50's last BatchNorm: many channels, 49 values per sample
]
# (shape, layout): the default shapes, and (256, 256, 14, 14) in channels_last too
DEFAULT_CASES: list[tuple[tuple[int, ...], str]] = [
    ((64, 64, 32, 32), "contiguous"),
    ((256, 256, 14, 14), "contiguous"),
    ((256, 256, 14, 14), "channels_last"),
    ((8192, 512), "contiguous"),
    ((100000, 32), "contiguous"),
    ((256, 2048, 7, 7), "contiguous"),
]
IMPLEMENTATIONS = ("ours", "compiled", "native", "copy")


@dataclass
class Result:
    """One case's timings in milliseconds (best and median of each implementation), the
    ratios of best times (``ours_over_native``, ``native_over_copy``, ...) and of medians
    (``..._median``), and the seconds of the compiled module's first call (``compile_s``).
    ``compiled_*`` are ``nan`` when the run skipped the compiled module.

    ``compiled_over_copy_median`` is the compiled module's time in copies of the input;
    ``floor_passes`` the passes over input-sized memory of the fused forward + backward
    (:func:`floor_passes`) and ``floor_copies`` the same in copies (a copy is two passes)."""

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
    layout: str = "contiguous"
    compiled_ms: float = math.nan
    compiled_median_ms: float = math.nan
    compiled_over_native: float = math.nan
    compiled_over_copy: float = math.nan
    ours_over_native_median: float = math.nan
    compiled_over_native_median: float = math.nan
    compiled_over_copy_median: float = math.nan
    native_over_copy_median: float = math.nan
    compile_s: float = math.nan
    floor_passes: int = 9
    floor_copies: float = 4.5


def floor_passes(x: torch.Tensor) -> int:
    """The reads and writes of input-sized memory of training's forward + backward, fused
    into one loop per pass that reads its inputs from memory: forward, the statistics (read
    ``x``; twice for the two-pass variance, once where :func:`bncourse.torch_bn.split_plan`
    cuts it into blocks that stay in the cache between the two) and the output (read ``x``,
    write ``y``); backward, the two sums (read ``x`` and ``dy``) and ``dx`` (read ``x`` and
    ``dy``, write ``dx``): 9, or 8 in blocks. The floor of these passes, not of the formulas:
    a kernel that kept a channel's values in the cache from its sums to its output would move
    less."""
    return 8 if torch_bn.split_plan(x) is not None else 9


def parse_shape(text: str) -> tuple[int, ...]:
    """``"64x64x32x32"`` (or ``"64,64,32,32"``) -> ``(64, 64, 32, 32)``; 2 to 5 dimensions,
    with more than one value per channel (the benchmark trains)."""
    try:
        shape = tuple(int(part) for part in text.replace(",", "x").split("x"))
    except ValueError:
        raise ValueError(
            f"a shape is sizes joined by 'x', like 64x64x32x32, got {text!r}"
        ) from None
    if not 2 <= len(shape) <= 5 or min(shape) < 1:
        raise ValueError(f"a BatchNorm input has 2 to 5 positive sizes (N, C, ...), got {text!r}")
    if values_per_channel(shape) == 1:
        raise ValueError(
            f"training needs more than 1 value per channel (N * spatial sizes), got {text!r}"
        )
    return shape


def keep_freed_memory() -> bool:
    """Ask the C library's allocator to keep freed memory in this process (glibc's
    ``mallopt``: no block gets its own ``mmap``, the heap is never trimmed), so that an
    allocation reuses memory instead of faulting in fresh pages. For the rest of the process:
    memory is not returned to the system until it exits. ``False`` where the C library has no
    ``mallopt`` (macOS, Windows, musl), which changes nothing else."""
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


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
    layouts: list[str] | None = None,
    compiled: bool = True,
) -> list[Result]:
    """Time ours, compiled, native and copy for every case (float32, training mode).

    ``shapes`` (each contiguous, or in the layout of the same place in ``layouts``:
    ``"contiguous"`` or ``"channels_last"``), or by default :data:`DEFAULT_CASES`.
    ``compiled=False`` leaves the compiled module out (no compilation). Calls
    :func:`keep_freed_memory` (for the rest of the process)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch.cuda.is_available() is False")
    keep_freed_memory()
    if shapes is None:
        cases = list(DEFAULT_CASES)
    else:
        cases = list(zip(shapes, layouts or ["contiguous"] * len(shapes)))
    results = []
    for shape, layout in cases:
        generator = torch.Generator().manual_seed(seed)
        memory_format = (
            torch.channels_last if layout == "channels_last" else torch.contiguous_format
        )
        x = torch.randn(shape, generator=generator).to(dev, memory_format=memory_format)
        x.requires_grad_()
        dy = torch.randn(shape, generator=generator).to(dev, memory_format=memory_format)
        name = MODULE_FOR_NDIM[len(shape)]
        calls = {"ours": _forward_backward(getattr(torch_bn, name)(shape[1], device=dev), x, dy)}
        compile_s = math.nan
        if compiled:
            compiled_bn.reset()  # code for this shape, not for every shape seen so far
            calls["compiled"] = _forward_backward(
                getattr(compiled_bn, name)(shape[1], device=dev), x, dy
            )
            start = time.perf_counter()
            calls["compiled"]()  # compiles, or loads TorchInductor's cache
            compile_s = time.perf_counter() - start
        calls["native"] = _forward_backward(getattr(torch.nn, name)(shape[1], device=dev), x, dy)
        calls["copy"] = lambda x=x: x.detach().clone()  # (x of this shape and layout)
        seconds = time_calls(calls, repeats, warmup, dev)
        median = {k: statistics.median(v) * 1e3 for k, v in seconds.items()}
        best = {k: min(v) * 1e3 for k, v in seconds.items()}
        median.setdefault("compiled", math.nan)
        best.setdefault("compiled", math.nan)
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
                layout=layout,
                compiled_ms=best["compiled"],
                compiled_median_ms=median["compiled"],
                compiled_over_native=best["compiled"] / best["native"],
                compiled_over_copy=best["compiled"] / best["copy"],
                ours_over_native_median=median["ours"] / median["native"],
                compiled_over_native_median=median["compiled"] / median["native"],
                compiled_over_copy_median=median["compiled"] / median["copy"],
                native_over_copy_median=median["native"] / median["copy"],
                compile_s=compile_s,
                floor_passes=floor_passes(x),
                floor_copies=floor_passes(x) / 2,
            )
        )
    return results


def format_table(results: list[Result], columns: Sequence[str] | None = None) -> str:
    """The results as an aligned text table: median times in ms, ratios of medians, and the
    ratios of best times in brackets; then the compile time of each case. The compiled
    module's columns only where it was timed (not with ``compiled=False``). ``columns``:
    the names of the columns to show, in the table's order (default: all), for a table that
    fits a page; the notes under it are wrapped at 80 characters."""
    with_compiled = any(not math.isnan(r.compiled_ms) for r in results)

    def pair(median: float, best: float, width: int) -> str:
        return f"{median:.2f} [{best:.2f}]".rjust(width)

    cells = [
        ("shape", 18, lambda r: str(tuple(r.shape)), "<"),
        ("module", 11, lambda r: r.module, "<"),
        ("layout", 13, lambda r: r.layout, "<"),
        ("ours ms", 8, lambda r: f"{r.ours_median_ms:.2f}", ">"),
        ("compiled", 9, lambda r: f"{r.compiled_median_ms:.2f}", ">"),
        ("native", 8, lambda r: f"{r.native_median_ms:.2f}", ">"),
        ("copy", 6, lambda r: f"{r.copy_median_ms:.2f}", ">"),
        (
            "ours/native",
            14,
            lambda r: pair(r.ours_over_native_median, r.ours_over_native, 14),
            ">",
        ),
        (
            "compiled/native",
            16,
            lambda r: pair(r.compiled_over_native_median, r.compiled_over_native, 16),
            ">",
        ),
        (
            "compiled/copy",
            14,
            lambda r: pair(r.compiled_over_copy_median, r.compiled_over_copy, 14),
            ">",
        ),
        (
            "native/copy",
            14,
            lambda r: pair(r.native_over_copy_median, r.native_over_copy, 14),
            ">",
        ),
        ("floor", 6, lambda r: f"{r.floor_copies:.1f}", ">"),
    ]
    unknown = set(columns or ()) - {name for name, *_ in cells}
    if unknown:
        raise ValueError(f"no such column: {sorted(unknown)}")

    def row(r: Result | None) -> str:
        """The header (``r`` None) or the line of one result."""
        return " ".join(
            f"{(name if r is None else text(r)):{align}{width}}"
            for name, width, text, align in cells
            if (with_compiled or not name.startswith("compiled"))
            and (columns is None or name in columns)
        )

    header = row(None)
    lines = [header, "-" * len(header), *(row(r) for r in results)]
    lines += textwrap.wrap(
        "(times: medians; ratios: of medians [of best times]; floor: the passes over memory "
        "of the fused forward + backward, in copies)",
        80,
    )
    compile_times = ", ".join(
        f"{tuple(r.shape)} {r.layout}: {r.compile_s:.1f} s"
        for r in results
        if not math.isnan(r.compile_s)
    )
    if compile_times:
        lines += textwrap.wrap(
            f"compiled module's first call (compiling, or loading the cache): {compile_times}",
            80,
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
    layouts: list[str] | None = None,
    compiled: bool = True,
) -> list[Result]:
    """Run, print the table, and write the JSON report if ``json_path`` is given."""
    env = environment(device)
    env["freed_memory_kept"] = keep_freed_memory()
    memory = "kept" if env["freed_memory_kept"] else "returned to the system (no glibc)"
    print(
        f"BatchNorm forward+backward, float32, training mode, device {device}, "
        f"torch {env['torch']}, {env['threads']} threads; {repeats} interleaved rounds; "
        f"freed memory {memory}"
    )
    results = run(shapes, device, repeats, warmup, layouts=layouts, compiled=compiled)
    print(format_table(results))
    if json_path:
        report = {
            "device": device,
            "repeats": repeats,
            "warmup": warmup,
            "compile_disabled": compiled_bn.compile_disabled(),
            "environment": env,
            "results": [asdict(r) for r in results],
        }
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    assert all(math.isfinite(r.ours_over_native) for r in results)
    return results
