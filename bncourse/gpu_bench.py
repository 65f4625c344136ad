"""The GPU benchmark of chapter 8, and the results file the chapter renders.

``python -m bncourse bench --device cuda --json bncourse/data/gpu_bench.json`` times, for each
case (shape, dtype, memory layout) and for the training forward and forward+backward:

* ``triton``: :func:`bncourse.triton_bn.batch_norm`, the course's Triton kernels;
* ``cudnn``: ``F.batch_norm`` as PyTorch runs it (cuDNN where PyTorch picks it);
* ``native``: ``F.batch_norm`` with cuDNN disabled (``torch.backends.cudnn.flags(enabled=False)``):
  ATen's own CUDA kernels;
* ``torch_bn``: :func:`bncourse.torch_bn.batch_norm`, chapter 5's module written with torch
  operations, each one a kernel and a pass over memory;
* ``copy``: ``x.clone()``, one read and one write: what memory bandwidth allows.

All in the same run, in training mode with running statistics (momentum 0.1), float32
parameters and buffers.  Each time is the median of ``triton.testing.do_bench`` (CUDA events,
the L2 cache flushed before every call).  Before timing, the Triton results are compared with
``F.batch_norm``'s (outputs and the three gradients); the file records the largest difference
(relative to each tensor's largest magnitude) and whether it is within two units in the last
place for float16/bfloat16 and 1e-4 for float32 (``checked``).

Bandwidth: BatchNorm must at least read the input twice and write the output once in the
forward (statistics, then normalization: 3 passes) and read ``x`` and ``dy`` twice and write
``dx`` once in the backward (5 passes), unless it keeps the tensor on chip.  ``bytes`` is that
minimal traffic (``passes * numel * itemsize``; per-channel vectors are negligible) and
``gbps`` divides it by each implementation's time; ``copy`` moves ``2 * numel * itemsize``.
``gbps / gbps["copy"]`` is the fraction of a copy's bandwidth an implementation reaches.

The results file (``FORMAT``)::

    {"format": "bncourse-gpu-bench/1", "date": "2026-01-31",
     "environment": {"gpu", "driver", "cuda", "cudnn", "torch", "triton", "python"},
     "timing": {"method", "statistic", "warmup_ms", "rep_ms", "l2_flushed"},
     "results": [{"shape", "dtype", "layout", "module", "pass", "bytes",
                  "ms": {name: median ms}, "gbps": {name: GB/s}, "ratios": {"triton/cudnn", ...},
                  "max_error": float, "checked": bool}, ...]}

:func:`load_results` reads and validates it (``None`` when there is none), :func:`format_results`
makes the text table; :func:`bncourse.plots.gpu_bench_times` and
:func:`bncourse.plots.gpu_bench_bandwidth` draw it.

Until a results file is recorded, chapter 8 shows the **bandwidth model** instead, predicted
and not measured: :func:`bandwidth_model` divides the bytes each implementation moves
(:func:`memory_bytes` counts ``torch_bn``'s) by the HBM bandwidth NVIDIA publishes for the
H100 and the H200 (:data:`PUBLISHED_BANDWIDTH`), :func:`format_model` prints it and
:func:`bncourse.plots.bandwidth_model_times` draws it.  (How to record a results file is in
CONTRIBUTING.md.)
"""

from __future__ import annotations

import ctypes
import datetime
import json
import math
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .conventions import MODULE_FOR_NDIM

__all__ = [
    "FORMAT",
    "RESULTS_PATH",
    "NO_RESULTS_NOTE",
    "IMPLEMENTATIONS",
    "PASSES",
    "PUBLISHED_BANDWIDTH",
    "MODEL_IMPLEMENTATIONS",
    "Case",
    "DEFAULT_CASES",
    "minimal_bytes",
    "memory_passes",
    "memory_bytes",
    "bandwidth_model",
    "format_model",
    "run",
    "environment",
    "load_results",
    "validate",
    "case_label",
    "format_results",
    "main",
]

FORMAT = "bncourse-gpu-bench/1"
RESULTS_PATH = Path(__file__).resolve().parent / "data" / "gpu_bench.json"
"""Where the recorded results are committed (chapter 8 reads them from here)."""

NO_RESULTS_NOTE = (
    "No GPU run has been recorded for this book yet: predicted by the bandwidth model, "
    "not measured."
)
"""What chapter 8 prints above the bandwidth model's numbers, until :data:`RESULTS_PATH` exists
(a reader's note: how to record the file is in CONTRIBUTING.md, not in the book)."""

IMPLEMENTATIONS = ["triton", "cudnn", "native", "torch_bn", "copy"]
PASSES = {"forward": 3, "forward+backward": 8}
"""Minimal passes over the tensor: forward 2 reads + 1 write; backward 4 reads + 1 write.
(A pass is one read or one write of a tensor of the input's size.)"""

PUBLISHED_BANDWIDTH = {"H100 SXM, 3.35 TB/s": 3.35e12, "H200, 4.8 TB/s": 4.8e12}
"""HBM bandwidth in bytes per second, as NVIDIA's datasheets state it: H100 SXM (80 GB HBM3)
3.35 TB/s, H200 (141 GB HBM3e) 4.8 TB/s.  No kernel reaches it; the bandwidth model divides
by it to get a floor."""

MODEL_IMPLEMENTATIONS = {
    "copy": "x.clone(): 1 read + 1 write",
    "fused": "one fused kernel per pass, minimal traffic (Triton; cuDNN, ATen at best)",
    "torch_bn": "torch_bn: one kernel per torch operation",
}
"""The implementations the bandwidth model predicts, and what each moves."""

TIMING = {
    "method": "triton.testing.do_bench",
    "statistic": "median",
    "warmup_ms": 25,
    "rep_ms": 100,
    "l2_flushed": True,
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One input: ``shape``, ``dtype`` (a name in ``_DTYPES``) and ``layout``
    (``"contiguous"`` or ``"channels_last"``, the latter for 4-d and 5-d inputs)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "contiguous"

    def __str__(self) -> str:
        layout = ", channels_last" if self.layout == "channels_last" else ""
        return f"{tuple(self.shape)} {self.dtype}{layout}"


_RESNET50 = [(256, 64, 56, 56), (256, 128, 28, 28), (256, 256, 14, 14), (256, 512, 7, 7)]
DEFAULT_CASES: list[Case] = (
    [Case(s, "float32", "contiguous") for s in _RESNET50]
    + [Case(s, "bfloat16", "channels_last") for s in _RESNET50]
    + [Case((65536, 256)), Case((100000, 32))]
)
"""ResNet-50's BatchNorm layers at batch 256 (float32 NCHW, bfloat16 channels_last) and two
BatchNorm1d inputs with many rows and few channels."""


def minimal_bytes(case: Case, pass_name: str) -> int:
    """Bytes BatchNorm must move without keeping the tensor on chip (see the module docstring)."""
    numel = math.prod(case.shape)
    return PASSES[pass_name] * numel * _DTYPES[case.dtype].itemsize


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


_ALLOCATIONS = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "set_"}


def _input_sized_traffic(function: Callable[..., Any], *args: Any) -> list[tuple[str, list, list]]:
    """The operations ``function(*args)`` runs below autograd, each one a kernel on a GPU:
    ``(name, tensors read, tensors written)``, keeping the tensors of the first argument's
    size (views and allocations cost nothing and are left out)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    size = args[0].numel()
    log: list[tuple[str, list, list]] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            inputs = _tensors((args, {k: v for k, v in kwargs.items() if k != "out"}))
            reads = [t for t in inputs if t.numel() == size]
            writes = [t for t in _tensors(out) if t.numel() == size]
            mutates = any(
                a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments
            )
            storages = {t.untyped_storage().data_ptr() for t in reads}
            is_view = (
                not mutates
                and writes
                and all(t.untyped_storage().data_ptr() in storages for t in writes)
            )
            name = func.overloadpacket.__name__
            if (reads or writes) and not is_view and name not in _ALLOCATIONS:
                log.append((name, reads, writes))
            return out

    with Recorder():
        function(*args)
    return log


def memory_passes(function: Callable[..., Any], *args: Any) -> list[tuple[str, int, int]]:
    """The operations ``function(*args)`` runs below autograd, each one a kernel on a GPU:
    ``(name, reads, writes)``, counting the tensors of the first argument's size it reads and
    writes (views and allocations cost nothing and are left out).  What a kernel does inside
    is not seen, nor are Triton's kernels (they are not torch operations): one
    fused operation counts 1 read and 1 write even if it reads its input twice."""
    return [
        (name, len(reads), len(writes))
        for name, reads, writes in _input_sized_traffic(function, *args)
    ]


def memory_bytes(function: Callable[..., Any], *args: Any) -> int:
    """Bytes that the operations of ``function(*args)`` read and write in tensors of the first
    argument's size (as :func:`memory_passes` counts them, each tensor by its own dtype: a
    float32 copy of a bfloat16 input moves twice the bytes of the input)."""
    return sum(
        t.numel() * t.element_size()
        for _, reads, writes in _input_sized_traffic(function, *args)
        for t in reads + writes
    )


def _torch_bn_bytes_per_value(case: Case) -> dict[str, float]:
    """Bytes ``torch_bn`` moves per value of the input, forward and forward+backward, counted
    by :func:`memory_bytes` on a small input of the case's dtype, layout and number of
    dimensions (every operation is elementwise or a per-channel reduction, so the bytes per
    value do not depend on the size)."""
    from . import torch_bn

    shape = (8, 4) + (3,) * (len(case.shape) - 2)
    inputs = _make_inputs(Case(shape, case.dtype, case.layout), torch.device("cpu"), 0)
    x, dy, weight, bias = inputs["x"], inputs["dy"], inputs["weight"], inputs["bias"]

    def forward(x: torch.Tensor) -> torch.Tensor:
        stats = torch.zeros(shape[1]), torch.ones(shape[1])
        return torch_bn.batch_norm(x, *stats, weight, bias, True, 0.1, 1e-5)

    forward_bytes = memory_bytes(forward, x)
    y = forward(x)
    backward_bytes = memory_bytes(lambda x: torch.autograd.grad(y, (x, weight, bias), dy), x)
    numel = math.prod(shape)
    return {
        "forward": forward_bytes / numel,
        "forward+backward": (forward_bytes + backward_bytes) / numel,
    }


def bandwidth_model(
    cases: list[Case] | None = None, bandwidth: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """The time floor of each implementation, **predicted, not measured**: the bytes it moves
    divided by a published bandwidth (:data:`PUBLISHED_BANDWIDTH` by default).

    One dict per (case, pass), in :data:`DEFAULT_CASES` order: ``shape``, ``dtype``, ``layout``,
    ``pass``, ``bytes`` (per implementation of :data:`MODEL_IMPLEMENTATIONS`: ``copy`` 2
    passes, ``fused`` the minimal :data:`PASSES`, ``torch_bn`` as :func:`memory_bytes` counts
    its operations) and ``us`` (per GPU, per implementation: microseconds at that bandwidth).
    A floor: real kernels reach less than the datasheet's bandwidth, and launch overheads
    (one per torch operation for ``torch_bn``) and caches are not modelled."""
    bandwidth = bandwidth or PUBLISHED_BANDWIDTH
    rows = []
    for case in cases or DEFAULT_CASES:
        numel = math.prod(case.shape)
        per_value = _torch_bn_bytes_per_value(case)
        for pass_name in PASSES:
            nbytes = {
                "copy": 2 * numel * _DTYPES[case.dtype].itemsize,
                "fused": minimal_bytes(case, pass_name),
                "torch_bn": round(per_value[pass_name] * numel),
            }
            rows.append(
                dict(
                    shape=list(case.shape),
                    dtype=case.dtype,
                    layout=case.layout,
                    **{"pass": pass_name},
                    bytes=nbytes,
                    us={
                        gpu: {name: b / rate * 1e6 for name, b in nbytes.items()}
                        for gpu, rate in bandwidth.items()
                    },
                )
            )
    return rows


def format_model(rows: list[dict[str, Any]]) -> str:
    """The bandwidth model as a text table, headed "predicted, not measured": microseconds per
    call of each implementation at each GPU's published bandwidth."""
    gpus = list(rows[0]["us"])
    names = list(MODEL_IMPLEMENTATIONS)
    width = 9 * len(names)
    left = f"{'':<42} {'':<17}"
    lines = [
        "predicted, not measured: microseconds = bytes moved / published HBM bandwidth",
        left + "".join(f"   {gpu:>{width}}" for gpu in gpus),
        f"{'case':<42} {'pass':<17}"
        + "".join("   " + "".join(f"{name:>9}" for name in names) for _ in gpus),
    ]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        case = str(Case(tuple(r["shape"]), r["dtype"], r["layout"]))
        cells = "".join(
            "   " + "".join(f"{r['us'][gpu][name]:>9.0f}" for name in names) for gpu in gpus
        )
        lines.append(f"{case:<42} {r['pass']:<17}{cells}")
    return "\n".join(lines)


def _make_inputs(case: Case, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = _DTYPES[case.dtype]
    x = torch.randn(case.shape, generator=generator, device=device, dtype=torch.float32)
    x = (x * 2 + 1).to(dtype)
    dy = torch.randn(case.shape, generator=generator, device=device, dtype=torch.float32).to(dtype)
    if case.layout == "channels_last":
        fmt = torch.channels_last if len(case.shape) == 4 else torch.channels_last_3d
        x, dy = x.to(memory_format=fmt), dy.to(memory_format=fmt)
    c = case.shape[1]
    return dict(
        x=x.requires_grad_(),
        dy=dy,
        weight=torch.linspace(0.5, 1.5, c, device=device).requires_grad_(),
        bias=torch.linspace(-1, 1, c, device=device).requires_grad_(),
    )


def _calls(inputs: dict[str, torch.Tensor], pass_name: str) -> dict[str, Callable[[], Any]]:
    """One zero-argument call per implementation; each has its own running statistics."""
    from . import torch_bn, triton_bn

    x, dy, weight, bias = inputs["x"], inputs["dy"], inputs["weight"], inputs["bias"]
    c = x.shape[1]

    def timed(function: Callable[..., torch.Tensor], cudnn: bool = True) -> Callable[[], Any]:
        running_mean = torch.zeros(c, device=x.device)
        running_var = torch.ones(c, device=x.device)

        def forward() -> torch.Tensor:
            with torch.backends.cudnn.flags(enabled=cudnn):
                return function(x, running_mean, running_var, weight, bias, True, 0.1, 1e-5)

        if pass_name == "forward":
            return lambda: forward().detach()

        def forward_backward() -> tuple[torch.Tensor, ...]:
            with torch.backends.cudnn.flags(enabled=cudnn):
                return torch.autograd.grad(forward(), (x, weight, bias), dy)

        return forward_backward

    return {
        "triton": timed(triton_bn.batch_norm),
        "cudnn": timed(torch.nn.functional.batch_norm),
        "native": timed(torch.nn.functional.batch_norm, cudnn=False),
        "torch_bn": timed(torch_bn.batch_norm),
        "copy": lambda: x.detach().clone(),
    }


# Largest difference allowed between triton_bn and F.batch_norm, relative to the largest
# magnitude of each compared tensor: two units in the last place for the half types (both
# compute in float32 and round once), 1e-4 for float32, whose gradients are sums of millions
# of values added in different orders.
_CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 2 * 2**-7, "float16": 2 * 2**-10}


def _check(inputs: dict[str, torch.Tensor]) -> float:
    """The largest difference between triton_bn's and F.batch_norm's output, ``dx``,
    ``grad_weight`` and ``grad_bias`` (one forward+backward), each relative to the largest
    magnitude of F.batch_norm's (at least 1)."""
    from . import triton_bn

    results = []
    for function in (triton_bn.batch_norm, torch.nn.functional.batch_norm):
        x, weight, bias = (
            inputs[k].detach().clone().requires_grad_() for k in ("x", "weight", "bias")
        )
        y = function(x, None, None, weight, bias, True, 0.1, 1e-5)
        results.append([y.detach(), *torch.autograd.grad(y, (x, weight, bias), inputs["dy"])])
    errors = []
    for ours, theirs in zip(*results):
        ours, theirs = ours.double(), theirs.double()
        errors.append((ours - theirs).abs().max().item() / max(theirs.abs().max().item(), 1.0))
    return max(errors)


def _cuda_timer(call: Callable[[], Any]) -> float:
    """Median milliseconds of ``call`` by ``triton.testing.do_bench`` (L2 flushed each call)."""
    import triton.testing

    return float(
        triton.testing.do_bench(
            call, warmup=TIMING["warmup_ms"], rep=TIMING["rep_ms"], return_mode="median"
        )
    )


def run(
    cases: list[Case] | None = None,
    device: str = "cuda",
    seed: int = 0,
    timer: Callable[[Callable[[], Any]], float] = _cuda_timer,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Check, then time every implementation on every case and pass; one dict per (case, pass)
    in the results file's format.  ``timer`` returns milliseconds per call (the tests pass a
    stand-in to run this on the CPU, under Triton's interpreter, without timing anything)."""
    dev = torch.device(device)
    results = []
    for case in cases or DEFAULT_CASES:
        inputs = _make_inputs(case, dev, seed)
        max_error = _check(inputs)
        checked = max_error <= _CHECK_TOLERANCE[case.dtype]
        for pass_name in PASSES:
            ms = {name: timer(call) for name, call in _calls(inputs, pass_name).items()}
            nbytes = minimal_bytes(case, pass_name)
            copy_bytes = 2 * math.prod(case.shape) * _DTYPES[case.dtype].itemsize
            gbps = {
                name: (copy_bytes if name == "copy" else nbytes) / (t * 1e-3) / 1e9
                for name, t in ms.items()
            }
            results.append(
                dict(
                    shape=list(case.shape),
                    dtype=case.dtype,
                    layout=case.layout,
                    module=MODULE_FOR_NDIM[len(case.shape)],
                    **{"pass": pass_name},
                    bytes=nbytes,
                    ms=ms,
                    gbps=gbps,
                    ratios={
                        "triton/cudnn": ms["triton"] / ms["cudnn"],
                        "triton/native": ms["triton"] / ms["native"],
                        "triton/copy": ms["triton"] / ms["copy"],
                        "torch_bn/cudnn": ms["torch_bn"] / ms["cudnn"],
                    },
                    max_error=max_error,
                    checked=checked,
                )
            )
            if progress:
                # (one line: the times, then the ratios without the case and pass again)
                progress(_times_row(results[-1]) + _ratios_row(results[-1])[30:])
        del inputs
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _driver_version() -> str:
    """The NVIDIA driver's version, from nvidia-smi or NVML; ``"unknown"`` if neither answers."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            if out.strip():
                return out.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        buffer = ctypes.create_string_buffer(96)
        if nvml.nvmlInit_v2() == 0 and nvml.nvmlSystemGetDriverVersion(buffer, 96) == 0:
            return buffer.value.decode()
    except (OSError, AttributeError):
        pass
    return "unknown"


def environment(device: str = "cuda") -> dict[str, Any]:
    """What the numbers depend on: the GPU, driver, CUDA, cuDNN, torch, triton and Python."""
    import triton

    cuda = torch.device(device).type == "cuda"
    return {
        "gpu": torch.cuda.get_device_name(torch.device(device))
        if cuda
        else f"none: {platform.processor() or platform.machine()} CPU, Triton interpreter",
        "driver": _driver_version() if cuda else "none",
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
    }


def validate(report: Any) -> dict[str, Any]:
    """``report`` if it is a results file in ``FORMAT``; otherwise a ``ValueError`` saying what
    is missing."""
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ValueError(f"not a results file of format {FORMAT!r}")
    for key in ("date", "environment", "timing", "results"):
        if key not in report:
            raise ValueError(f"the results file has no {key!r}")
    for key in ("gpu", "driver", "torch", "triton"):
        if key not in report["environment"]:
            raise ValueError(f"the results file's environment does not name the {key}")
    if not report["results"]:
        raise ValueError("the results file has no results")
    for row in report["results"]:
        missing = {"shape", "dtype", "layout", "pass", "bytes", "ms", "gbps", "checked"} - set(row)
        missing |= {f"ms[{name!r}]" for name in IMPLEMENTATIONS if name not in row.get("ms", {})}
        if missing:
            raise ValueError(f"a result lacks {', '.join(sorted(missing))}")
        if row["pass"] not in PASSES:
            raise ValueError(f"unknown pass {row['pass']!r}")
    return report


def load_results(path: str | Path | None = None) -> dict[str, Any] | None:
    """The recorded results (validated), or ``None`` when no file has been recorded yet.
    ``path`` defaults to :data:`RESULTS_PATH`."""
    path = Path(path) if path is not None else RESULTS_PATH
    if not path.exists():
        return None
    return validate(json.loads(path.read_text()))


def case_label(r: dict[str, Any]) -> str:
    """A result's case, short: ``256x64x56x56 bf16 CL`` (CL: channels_last)."""
    layout = " CL" if r["layout"] == "channels_last" else ""
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[r["dtype"]]
    return f"{'x'.join(map(str, r['shape']))} {dtype}{layout}"


_SHORT_PASS = {"forward": "fwd", "forward+backward": "fwd+bwd"}


def format_results(report: dict[str, Any]) -> str:
    """The results as two text tables, each line at most 83 characters and each row's case
    first (:func:`case_label`): the median milliseconds of every implementation; then the
    Triton kernel's ratios to cuDNN and to ATen without cuDNN, its GB/s of minimal traffic
    and that as a fraction of a copy's bandwidth."""
    env, rows = report["environment"], report["results"]
    key = f"{'case':<22} {'pass':<7}"
    times = key + "".join(f" {name:>8}" for name in IMPLEMENTATIONS)
    ratios = key + f" {'MB':>7} {'/cudnn':>7} {'/native':>7} {'GB/s':>6} {'%copy':>6}"
    lines = [
        f"{env['gpu']}",
        f"driver {env['driver']}, torch {env['torch']}, triton {env['triton']}, {report['date']}",
        f"median ms per call ({report['timing']['method']}); CL: channels_last",
        "",
        times,
        "-" * len(times),
    ]
    lines += [_times_row(r) for r in rows]
    lines += ["", "triton: its time over cuDNN's and ATen's, its minimal traffic", ratios]
    lines.append("-" * len(ratios))
    lines += [_ratios_row(r) for r in rows]
    return "\n".join(lines)


def _times_row(r: dict[str, Any]) -> str:
    return f"{case_label(r):<22} {_SHORT_PASS[r['pass']]:<7}" + "".join(
        f" {r['ms'][name]:>8.3f}" for name in IMPLEMENTATIONS
    )


def _ratios_row(r: dict[str, Any]) -> str:
    ms, gbps = r["ms"], r["gbps"]
    return (
        f"{case_label(r):<22} {_SHORT_PASS[r['pass']]:<7} {r['bytes'] / 1e6:>7.0f}"
        + f" {ms['triton'] / ms['cudnn']:>7.2f} {ms['triton'] / ms['native']:>7.2f}"
        + f" {gbps['triton']:>6.0f} {gbps['triton'] / gbps['copy']:>6.0%}"
        + ("" if r["checked"] else "  CHECK FAILED")
    )


def main(
    cases: list[Case] | None = None, device: str = "cuda", json_path: str | None = None
) -> dict[str, Any]:
    """Run the suite, print the table as it goes, and write the results file if asked."""
    env = environment(device)
    print(
        f"{env['gpu']}, driver {env['driver']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
        f"torch {env['torch']}, triton {env['triton']}",
        flush=True,
    )
    print(
        "training mode; median ms per call (L2 flushed); /cudnn, /native: triton's time "
        "over theirs; GB/s and %copy: triton's minimal traffic",
        flush=True,
    )
    results = run(cases, device, progress=lambda line: print(line, flush=True))
    report = {
        "format": FORMAT,
        "date": datetime.date.today().isoformat(),
        "environment": env,
        "timing": TIMING,
        "results": results,
    }
    validate(report)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    return report
