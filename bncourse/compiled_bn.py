"""Chapter 5's BatchNorm with its passes fused by ``torch.compile``: a drop-in for
``torch.nn.BatchNorm1d/2d/3d``.

What holds on which layout, on a CPU (chapter 5 measures it with ``python -m bncourse
bench``): TorchInductor turns one reduction per channel into loops that walk down each
channel's values. For NCHW inputs those are runs of ``H * W`` contiguous values, but where
the channels are the innermost dimension (``channels_last``, and the ``(N, C)`` input of
``BatchNorm1d``) a channel is a column of the ``(rows, C)`` matrix, and the loops, a vector
register of channels at a time (8 or 16 float32), walk down the columns. So for inputs
of at least :data:`bncourse.torch_bn.SPLIT_MIN_VALUES` values,
:func:`bncourse.torch_bn.split_plan` cuts the input into blocks (rows of channels, about
256 KB each, where the channels are innermost; for contiguous NCHW, one sample, or a few
samples where a channel's run of ``H * W`` values is short, as the 49 of a 7 x 7 image, so
that what each partial result costs besides reading its values, a loop tail and the
horizontal sum of a vector register, is paid once for several runs), the statistics and the
backward's two sums are reduced per block (from the cache, the blocks in parallel) and the
partial results merged, Chan's formula for the ``(count, mean, M2)``
(:func:`bncourse.torch_bn.merge_blocks`): a split reduction, chapter 8's tiles on the CPU,
with the precision of the two-pass statistics. Then the loops read the input in the order it
lies in memory on both layouts, 8 passes over it in all (one per read or write of an
input-sized tensor; 9 with one reduction, which reads the input twice for the statistics).
Measured (``python -m bncourse bench``, float32 forward + backward; chapter 5's table): on
NCHW inputs the compiled module takes less time than ATen's kernel, whose statistics add a
channel's values one at a time; where the channels are innermost it takes more, though it
reads the input no more often: within a block the loops still take a vector register of
channels down the rows, then the next, where ATen's kernel reads whole rows, and each
compiled pass is called through TorchDynamo's and AOTAutograd's Python wrappers.

Nothing here is new math. :class:`CompiledBatchNormFunction` is
:class:`bncourse.torch_bn.BatchNormFunction` with its three passes,
:func:`~bncourse.torch_bn.forward_train`, :func:`~bncourse.torch_bn.forward_eval` and
:func:`~bncourse.torch_bn.backward` (the formulas of chapter 5, one implementation), each
handed to ``torch.compile``: TorchInductor turns the dozen operations of each pass into a few
loops (C++ with OpenMP on a CPU, compiled by the machine's C++ compiler; Triton kernels on a
GPU) that read the input for the sums and once more to write the result, where the eager
operations read and write an input-sized tensor each. The functions are compiled on first use
(about 20 s for each number of dimensions, dtype, memory layout and mode; TorchInductor caches
the code on disk, in ``/tmp/torchinductor_$USER`` or where ``TORCHINDUCTOR_CACHE_DIR`` says,
for the next process, under a key that includes the SIMD width, :func:`vector_bits`), as
``torch.compile`` does by default: for the sizes of the first input, as constants, then, when
an input of other sizes comes (the last, smaller batch of an epoch), once more with the sizes
as symbols, and that code serves later sizes of the same kind (TorchDynamo's "automatic
dynamic shapes"; sizes that change the split reduction's plan, an input that crosses
:data:`bncourse.torch_bn.SPLIT_MIN_VALUES` or one whose rows do or do not leave a shorter last
block, compile once more). Code for known sizes is faster (no loop tails to guard, no index
arithmetic on symbols): in a training loop of one batch size, that is the code that runs.

:func:`batch_norm` and the modules :class:`BatchNorm1d`, :class:`BatchNorm2d`,
:class:`BatchNorm3d` are :mod:`bncourse.torch_bn`'s, with this function inside: same
signature, errors, state and results (within float rounding: the compiled loops add in
another order).

Where the compiled code is not used, the eager formulas of :mod:`bncourse.torch_bn` run:

* ``torch.compile`` cannot work here (no C++ compiler, an unsupported platform or Python,
  PyTorch installed under a path with a space: :func:`path_problem`): the first call warns
  once, with the reason (and the remedy where one is known), and from then on everything
  runs eager;
* the backward pass is itself differentiated (``create_graph=True``): TorchInductor's code is
  not differentiable, so the eager backward runs (and recomputes the statistics, as
  :class:`~bncourse.torch_bn.BatchNormFunction` does);
* inside another transform that must see the operations: ``torch.compile`` of a model that
  holds the module (the outer compilation fuses them itself), ``torch.jit.trace``,
  and ``torch.export``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import textwrap
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers

from . import torch_bn
from .validation import apply_checked

__all__ = [
    "compiled",
    "compile_disabled",
    "path_problem",
    "reset",
    "generated_kernel",
    "vector_bits",
    "loop_nests",
    "CompiledBatchNormFunction",
    "batch_norm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
]

PASSES = ("forward_train", "forward_eval", "backward")  # the functions of torch_bn compiled
# torch.compile's backend: TorchInductor, which generates the fused code. (The parity tests
# use "aot_eager", the same capture by TorchDynamo and AOTAutograd without the code
# generation, which costs seconds per graph: tests/test_batchnorm_interface.py.)
BACKEND = "inductor"
_compiled: dict[tuple[str, str], Callable[..., Any]] = {}
_disabled: list[str] = []  # why compiling cannot work here, once known


def compile_disabled() -> str | None:
    """Why this process runs the eager formulas (``None`` while compiling works)."""
    return _disabled[0] if _disabled else None


def compiled(name: str) -> Callable[..., Any]:
    """``torch.compile`` of ``torch_bn.<name>`` (one of :data:`PASSES`), made once per
    process (until :func:`reset`): sizes as constants first, symbols after a second size
    (``torch.compile``'s default), ``fullgraph=True`` (the pass is one graph or an error,
    never silently split), up to :data:`RECOMPILE_LIMIT` compilations."""
    key = (name, BACKEND)
    if key not in _compiled:
        function = getattr(torch_bn, name)
        options = {"cpp.simdlen": vector_bits()}
        limit = {"recompile_limit": RECOMPILE_LIMIT} if _OWN_LIMIT else {}
        _compiled[key] = torch.compile(
            function, backend=BACKEND, fullgraph=True, options=options, **limit
        )
    return _compiled[key]


def vector_bits() -> int:
    """The width in bits of the SIMD vectors TorchInductor's C++ uses in this process (1: none,
    under ``ATEN_CPU_CAPABILITY=default``), which :func:`compiled` writes into its
    configuration as ``cpp.simdlen``.

    Left unset, torch 2.13 decides the width from ``ATEN_CPU_CAPABILITY`` and a test build per
    instruction set, and neither is part of the key of its on-disk cache of compiled graphs:
    a graph cached by a process that used 8-float vectors (AVX2) was loaded by one that uses
    16 (AVX-512), whose build of that C++ then stored 16 floats where the loops step by 8, past
    the ends of its buffers ("free(): invalid size", a segmentation fault, or wrong numbers).
    Written into the configuration, the width is part of the key. Raises what TorchInductor
    raises where it cannot build C++ at all (no compiler): :func:`run` then warns once and
    runs eager."""
    if _scalar_aten():
        return 1
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()  # (from ATEN_CPU_CAPABILITY and what the processor can build)
    return isa.bit_width() if isa else 1


def reset() -> None:
    """Forget what was compiled in this process (``torch._dynamo.reset``): the next call
    compiles for its own sizes, as a fresh process would (the benchmark does this per case, so
    that each case runs the code made for its shape). The disk cache stays."""
    _compiled.clear()
    torch._dynamo.reset()


def _outside_other_transforms() -> bool:
    """Not inside a transform that must see the operations themselves."""
    return not (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch._C._functorch.peek_interpreter_stack() is not None  # vmap, grad, jacrev
    )


_SCALAR = {"cpp.simdlen": 1}  # TorchInductor's C++ without SIMD instructions


def _scalar_aten() -> bool:
    """``ATEN_CPU_CAPABILITY=default``: PyTorch's own kernels run scalar, and TorchInductor's
    vectorized C++ fails to compile (torch 2.13), so the compiled code is scalar too."""
    return os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() == "default"


# Compilations allowed per pass: one per number of dimensions, dtype, layout, mode and kind of
# sizes (see run). TorchDynamo's default is 8, past which it would run eager with one line in
# the log; with fullgraph=True, past this limit it raises, and run() warns.
RECOMPILE_LIMIT = 128
# torch.compile takes the limit per function in recent versions (torch 2.13 does); older ones
# have only TorchDynamo's global setting, which run() then sets around each call.
_OWN_LIMIT = "recompile_limit" in inspect.signature(torch.compile).parameters


@contextlib.contextmanager
def _global_limit() -> Iterator[None]:
    """For a torch.compile without a limit of its own: TorchDynamo's global limit at
    :data:`RECOMPILE_LIMIT`, and raising past it, for the time of one call, then the caller's
    settings back (set and restored by hand: ``config.patch`` costs more than a small call)."""
    config = torch._dynamo.config
    # (torch 2.6 and older call the limit cache_size_limit)
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    settings = {limit: RECOMPILE_LIMIT}
    if hasattr(config, "fail_on_recompile_limit_hit"):
        settings["fail_on_recompile_limit_hit"] = True
    saved = {key: getattr(config, key) for key in settings}
    for key, value in settings.items():
        setattr(config, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


def path_problem(torch_dir: str | None = None) -> str | None:
    """Why TorchInductor's C++ build cannot work from this installation, known before
    trying (``None``: nothing known). ``torch_dir``: where PyTorch is installed (default:
    this process's).

    TorchInductor's C++ command line names PyTorch's headers and libraries by their paths,
    and torch 2.13 splits the command at spaces: under a path with a space (the course's
    ``.venv`` inside a clone at ``~/My Courses/bn``) the compiler gets the halves and fails.
    """
    torch_dir = torch_dir or os.path.dirname(torch.__file__)
    if not any(character.isspace() for character in torch_dir):
        return None
    return (
        f"PyTorch is installed under a path with a space ({torch_dir}), which TorchInductor's "
        "C++ build command cannot take (it splits the command at spaces). To compile, put "
        "the course's folder (with its .venv) at a path without spaces, e.g. ~/bn-course, "
        "and run `python3 course.py test` there again"
    )


def _reason(error: Exception) -> str:
    """The reason an error gives, in one line: its type, its first line that is not blank,
    and for a C++ compiler's failure the compiler's first line that says "error"."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"
    compiler = next((line for line in lines[1:] if "error" in line.lower()), None)
    return reason if compiler is None else f"{reason} ({compiler})"


def _give_up(reason: str) -> None:
    """From now on, run eager: say so once, with the reason."""
    _disabled.append(reason)
    warnings.warn(
        "bncourse.compiled_bn: torch.compile cannot work here, so BatchNorm runs chapter 5's "
        f"eager operations (same results, slower). The reason: {reason}",
        RuntimeWarning,
        stacklevel=3,
    )


def run(name: str, *args: Any) -> Any:
    """``torch_bn.<name>(*args)``: compiled where it can be, else eager (see the module).

    Parameters go in as plain tensors (``detach``: inside an autograd node nothing is
    recorded anyway), because TorchDynamo keeps the shapes of ``nn.Parameter`` arguments
    static, which would compile anew for each number of channels even after a second size.
    Each pass may be compiled :data:`RECOMPILE_LIMIT` times; past that it fails loudly, which
    warns below."""
    if _disabled or not _outside_other_transforms():
        return getattr(torch_bn, name)(*args)
    if (name, BACKEND) not in _compiled and (problem := path_problem()):  # (before compiling)
        _give_up(problem)
    else:
        args = tuple(a.detach() if isinstance(a, torch.nn.Parameter) else a for a in args)
        try:
            if _OWN_LIMIT:
                return compiled(name)(*args)
            with _global_limit():
                return compiled(name)(*args)
        except Exception as error:  # the compiler cannot work here: say so, once, and go eager
            reason = _reason(error)
            if type(error).__name__ == "FailOnRecompileLimitHit":
                reason = (
                    f"torch_bn.{name} reached a limit on recompilations (each pass may compile "
                    f"{RECOMPILE_LIMIT} times, and TorchDynamo's accumulated_recompile_limit "
                    f"bounds all together) ({reason})"
                )
            _give_up(reason)
    return getattr(torch_bn, name)(*args)


class CompiledBatchNormFunction(torch_bn.BatchNormFunction):
    """:class:`bncourse.torch_bn.BatchNormFunction` with its passes compiled (:func:`run`):
    the same arguments, outputs, saved tensors (its ``setup_context``) and double backward."""

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """``torch.autograd.Function.apply``, less the ``inspect.signature`` it runs on every
        call of a function with a ``setup_context`` to bind default arguments (``forward``
        has none, and :func:`batch_norm` passes all seven by position), which takes several
        times what the rest of ``apply`` does. Arguments by keyword, and inside
        ``torch.func``'s transforms: ``Function.apply`` itself; while TorchDynamo traces the
        call: the eager passes, as :class:`~bncourse.torch_bn.ThenUpdate` does."""
        if torch.compiler.is_compiling():
            return torch_bn.TracedBatchNormFunction.apply(*args, **kwargs)
        if kwargs or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        # (what Function.apply does next: tensors left wrapped by a finished transform
        # unwrapped, then autograd's own apply, which Function.apply calls as super().apply)
        args = unwrap_dead_wrappers(args)
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def forward(
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if training:
            return run("forward_train", input, weight, bias, eps)
        return run("forward_eval", input, running_mean, running_var, weight, bias, eps)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: the eager, differentiable backward
            return torch_bn.BatchNormFunction.backward(ctx, grad_output)
        input, weight, mean, invstd = ctx.saved_tensors
        mask = ctx.needs_input_grad[:3]
        grads = run(
            "backward", grad_output, input, weight, mean, invstd, ctx.training, mask, ctx.bias_dtype
        )
        return *grads, None, None, None, None


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """:func:`bncourse.torch_bn.batch_norm` (``F.batch_norm``'s signature, checks and
    semantics), computed by :class:`CompiledBatchNormFunction`."""
    return apply_checked(
        torch_bn.ThenUpdate(CompiledBatchNormFunction),
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    )


class BatchNorm1d(torch_bn.BatchNorm1d):
    """Drop-in for ``torch.nn.BatchNorm1d`` (input ``(N, C)`` or ``(N, C, L)``), compiled."""

    functional = staticmethod(batch_norm)


class BatchNorm2d(torch_bn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d`` (input ``(N, C, H, W)``), compiled."""

    functional = staticmethod(batch_norm)


class BatchNorm3d(torch_bn.BatchNorm3d):
    """Drop-in for ``torch.nn.BatchNorm3d`` (input ``(N, C, D, H, W)``), compiled."""

    functional = staticmethod(batch_norm)


# --------------------------------------------------------------------------------------------
# What TorchInductor wrote (chapter 5 reads it)
# --------------------------------------------------------------------------------------------
def generated_kernel(name: str, *args: Any) -> str:
    """The C++ kernel TorchInductor writes for ``torch_bn.<name>(*args)``, compiled afresh
    (no cache: a cached compilation writes no code to read) in a form that is the same on
    every CPU: scalar (``cpp.simdlen=1``: no SIMD
    instructions, which depend on the processor), the ``#pragma omp`` lines and the
    ``static_cast<int64_t>(...)`` around every number left out. Its sizes are symbols
    (``ks0``, ...), its arrays ``in_ptr0, ...`` (read) and ``out_ptr0, ...`` (written)."""
    from torch._inductor.utils import run_and_get_code

    if problem := path_problem():
        raise RuntimeError(problem)
    function = torch.compile(getattr(torch_bn, name), dynamic=True, fullgraph=True)
    with (
        torch._inductor.config.patch({**_SCALAR, "fx_graph_cache": False}),
        torch._functorch.config.patch(enable_autograd_cache=False),  # (a hit writes no code)
    ):
        _, sources = run_and_get_code(function, *args)
    kernels = [c for source in sources for c in re.findall(r"r'''(.*?)'''", source, re.S)]
    kernel = next(k for k in kernels if 'extern "C"' in k)
    lines = [line for line in kernel.splitlines() if not line.strip().startswith("#pragma")]
    return _drop_casts("\n".join(line for line in lines if line.strip()))


def _drop_casts(text: str) -> str:
    """``static_cast<int64_t>(expr)`` -> ``expr`` (parentheses balanced)."""
    marker, out, i = "static_cast<int64_t>(", [], 0
    while (j := text.find(marker, i)) >= 0:
        out.append(text[i:j])
        depth, k = 1, j + len(marker)
        while depth:
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            k += 1
        inner = text[j + len(marker) : k - 1]
        out.append(_drop_casts(inner))
        i = k
    out.append(text[i:])
    return "".join(out)


def loop_nests(kernel: str) -> list[dict[str, Any]]:
    """The outermost loop nests of a :func:`generated_kernel`, in order, each as ``{"code":
    its text, "passes": [...]}``: one entry per innermost loop that goes over the input's
    values, ``{"reads": [...], "writes": [...]}``, the arrays it reads and writes
    *elementwise*, indexed by two or more loop variables (``in_ptr0[x2 + 64*x1 + ...]``: a
    tensor of the input's size), not per channel (``in_ptr1[x1]``)."""
    nests, i = [], 0
    while (start := kernel.find("for(", i)) >= 0:
        end = _loop_end(kernel, start)
        line_start = kernel.rfind("\n", 0, start) + 1
        code = textwrap.dedent(kernel[line_start:end])
        passes = [
            accesses
            for inner in _loops(code)
            if "for(" not in inner[4:]  # innermost
            and ((accesses := _elementwise_accesses(inner))["reads"] or accesses["writes"])
        ]
        nests.append({"code": code, "passes": passes})
        i = end
    return nests


def _loop_end(text: str, start: int) -> int:
    """Where the loop ``for(`` at ``start`` ends: after the brace that closes its body."""
    depth, k = 1, text.index("{", start) + 1
    while depth:
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        k += 1
    return k


def _loops(code: str) -> list[str]:
    """Every loop in ``code``, nested ones too, as text."""
    found, i = [], 0
    while (start := code.find("for(", i)) >= 0:
        found.append(code[start : _loop_end(code, start)])
        i = start + 4
    return found


def _elementwise_accesses(code: str) -> dict[str, list[str]]:
    reads, writes = [], []
    for array, index in re.findall(r"\b((?:in_out|in|out)_ptr\d+)\[([^\]]*)\]", code):
        if len(set(re.findall(r"\bx\d+\b", index))) < 2:
            continue  # one per channel, or a scalar
        stored = re.search(rf"\b{array}\[{re.escape(index)}\]\s*=[^=]", code) is not None
        target = writes if stored else reads
        if array not in target:
            target.append(array)
    return {"reads": reads, "writes": writes}
