"""Compile, for a GPU that is not here, every Triton kernel launch triton_bn makes.

The interpreter runs the kernels' Python, but not Triton's compiler: a kernel can work in the
interpreter and still fail to compile (a type mismatch in a loop, a constexpr branch, an
argument the launch passes wrongly).  This script first runs one forward and backward in the
interpreter (so that compiling after interpreting, in one process, is covered too), then
makes ``bncourse.triton_bn`` launch recorders instead of kernels, runs forward and backward
passes on CPU tensors in every dtype, layout and mode (the recorders launch nothing), and
records chapter 8's warm-up kernel (``warmup.row_sum``) and a plain function given to
``warmup.launcher`` (as the row-max exercise does), then
compiles each distinct launch it saw for an H100 (``sm_90``) with Triton's own compiler and
``ptxas``, which need no GPU.  Argument types follow Triton's JIT: tensors are pointers to
their dtype, Python floats ``fp32``, ints ``i32`` (``i64`` if large) and an int equal to 1 a
constant.

Run by ``tests/test_triton_bn.py`` in a subprocess (with an empty kernel cache); prints one
line per compiled launch and exits non-zero on a failure.
"""

from __future__ import annotations

import sys
import types

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bncourse import triton_bn
from bncourse.triton_bn import backends
from bncourse.validation import accumulation_dtype

POINTER = {
    torch.float32: "*fp32",
    torch.float64: "*fp64",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
}
OPTIONS = ("num_warps", "num_stages")  # launch options, not kernel arguments


def argument_type(value):
    """Triton's JIT type of a launch argument, or ``None`` for a constant (an int equal to 1)."""
    if isinstance(value, torch.Tensor):
        return POINTER[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return None if value == 1 else ("i32" if -(2**31) <= value < 2**31 else "i64")
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unexpected launch argument {value!r}")


class Recorder:
    """Stands in for a compiled kernel: ``kernel[grid](**arguments)`` records the launch."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(**arguments):
            options = {k: arguments.pop(k) for k in OPTIONS if k in arguments}
            assert set(arguments) == set(self.kernel.arg_names), "every argument, by name"
            signature, constants = {}, {}
            for param in self.kernel.params:
                value = arguments[param.name]
                kind = None if param.is_constexpr else argument_type(value)
                if kind is None:
                    constants[param.name] = value
                signature[param.name] = "constexpr" if kind is None else kind
            key = (
                self.kernel.fn.__name__,
                tuple(sorted(signature.items())),
                tuple(sorted((k, str(v)) for k, v in constants.items())),
                tuple(sorted(options.items())),
            )
            self.launches[key] = (self.kernel, signature, constants, options)

        return launch


def interpret_once():
    """One small forward and backward in Triton's interpreter, checked against torch.nn."""
    x = torch.randn(20, 3, 4, 5, requires_grad=True)
    y = triton_bn.batch_norm(x, None, None, training=True)
    y.backward(torch.ones_like(y))
    expected = torch.nn.functional.batch_norm(x.detach(), None, None, training=True)
    torch.testing.assert_close(y.detach(), expected)


def record_launches():
    launches = {}
    recorders = types.SimpleNamespace(
        **{name: Recorder(kernel, launches) for name, kernel in vars(backends.COMPILED).items()}
    )
    backends.for_device = lambda device: recorders  # CPU tensors stand in for CUDA ones
    # (float16 takes bfloat16's paths, float64 is one more accumulation type; the sizes give
    # tiles and partials of more than one)
    layouts = [
        ((32, 16, 30, 30), "contiguous"),
        ((32, 16, 30, 30), "channels_last"),
        ((3000, 6), "contiguous"),
    ]
    for dtype, cases in [
        (torch.float32, layouts),
        (torch.bfloat16, layouts),
        (torch.float64, layouts[:1]),
    ]:
        for shape, layout in cases:
            x = torch.zeros(shape, dtype=dtype)
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            c, acc = shape[1], accumulation_dtype(dtype)
            for training, affine in [(True, True), (False, True), (True, False)]:
                params = [
                    torch.ones(c, dtype=acc, requires_grad=True) if affine else None
                    for _ in range(2)
                ]
                stats = torch.zeros(c, dtype=acc), torch.ones(c, dtype=acc)
                leaf = x.clone().requires_grad_()
                y = triton_bn.batch_norm(leaf, *stats, *params, training=training)
                y.backward(torch.zeros_like(y))
                if affine:  # only the input's gradient: the backward without the sums (eval)
                    leaf = x.clone().requires_grad_()
                    frozen = [p.detach() for p in params]
                    triton_bn.batch_norm(leaf, *stats, *frozen, training=training).backward(
                        torch.zeros_like(y)
                    )
    record_warmup(launches)
    return launches


def row_max_kernel(x_ptr, out_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
    """Chapter 8's exercise, as a learner writes it: a plain function, jitted by launcher."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * stride_row + cols, mask=cols < n_cols, other=-float("inf"))
    tl.store(out_ptr + row, tl.max(x, axis=0))


def record_warmup(launches):
    """Chapter 8's warm-up kernel (row_sum) and a plain function given to ``launcher``, as
    ``warmup.launcher`` would launch them for a CUDA tensor."""
    from bncourse.triton_bn import warmup

    real, recording = warmup.launcher, backends.for_device

    def launcher(kernel, device):
        backends.for_device = lambda device: backends.COMPILED
        try:
            return Recorder(real(kernel, torch.device("cuda")), launches)
        finally:
            backends.for_device = recording

    warmup.launcher = launcher
    try:
        for dtype in (torch.float32, torch.float64):
            x = torch.zeros(6, 10, dtype=dtype)
            warmup.row_sum(x)
            launcher(row_max_kernel, x.device)[(6,)](
                x_ptr=x, out_ptr=x[:, 0], n_cols=10, stride_row=10, BLOCK=16
            )
    finally:
        warmup.launcher = real


def main() -> int:
    interpret_once()
    launches = record_launches()
    launched = {name for name, _, _, _ in launches}
    never = [
        name
        for name in vars(backends.COMPILED)
        if name.endswith("_kernel") and name not in launched
    ]
    for name in never:
        print(f"FAILED {name}: never launched")
    target = GPUTarget("cuda", 90, 32)
    compiled = 0
    for (name, _, _, _), (kernel, signature, constants, options) in launches.items():
        try:
            source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
            triton.compile(source, target=target, options=options)
            compiled += 1
            print(f"compiled {name} {dict(constants)}")
        except Exception as error:  # noqa: BLE001 - report every failure, then fail
            print(f"FAILED {name} {dict(constants)}: {type(error).__name__}: {error}")
    print(f"{compiled} of {len(launches)} launches compiled for sm_90")
    return 0 if launches and compiled == len(launches) and not never else 1


if __name__ == "__main__":
    sys.exit(main())
