"""Compile, for a GPU that is not here, every Triton kernel launch triton_bn makes.

The interpreter runs the kernels' Python, but not Triton's compiler: a kernel can work in the
interpreter and still fail to compile (a type mismatch in a loop, a constexpr branch, an
argument the launch passes wrongly).  This script imports ``bncourse.triton_bn`` with the
interpreter off, replaces each kernel by a recorder, runs forward and backward passes on CPU
tensors in every dtype, layout and mode (the recorders launch nothing), and then compiles each
distinct launch it saw for an H100 (``sm_90``) with Triton's own compiler and ``ptxas``, which
need no GPU.  Argument types follow Triton's JIT: tensors are pointers to their dtype, Python
floats ``fp32``, ints ``i32`` (``i64`` if large) and an int equal to 1 a constant.

Run by ``tests/test_triton_bn.py`` in a subprocess (``TRITON_INTERPRET`` must be unset when the
kernels are decorated); prints one line per compiled launch and exits non-zero on a failure.
"""
from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from bncourse import torch_bn, triton_bn  # noqa: E402

KERNELS = ["_stats_kernel", "_finalize_stats_kernel", "_normalize_kernel",
           "_backward_sums_kernel", "_backward_finalize_kernel", "_grad_input_kernel"]
POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16",
           torch.bfloat16: "*bf16"}


def argument_type(value):
    """Triton's JIT type of a launch argument, or ``None`` for a constant (an int equal to 1)."""
    if isinstance(value, torch.Tensor):
        return POINTER[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return None if value == 1 else ("i32" if -2**31 <= value < 2**31 else "i64")
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unexpected launch argument {value!r}")


class Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
            signature, constants = {}, dict(kwargs)
            for name, value in zip(self.kernel.arg_names, args):
                kind = argument_type(value)
                if kind is None:
                    constants[name] = value
                else:
                    signature[name] = kind
            for name in constants:
                signature[name] = "constexpr"
            key = (self.kernel.fn.__name__, tuple(sorted(signature.items())),
                   tuple(sorted((k, str(v)) for k, v in constants.items())),
                   tuple(sorted(options.items())))
            self.launches[key] = (self.kernel, signature, constants, options)

        return launch


def record_launches():
    launches = {}
    for name in KERNELS:
        setattr(triton_bn, name, Recorder(getattr(triton_bn, name), launches))
    triton_bn._check_device = lambda *tensors: None  # CPU tensors stand in for CUDA ones
    # (float16 takes bfloat16's paths, float64 is one more accumulation type; the sizes give
    # tiles and partials of more than one)
    layouts = [((32, 16, 30, 30), "contiguous"), ((32, 16, 30, 30), "channels_last"),
               ((3000, 6), "contiguous")]
    for dtype, cases in [(torch.float32, layouts), (torch.bfloat16, layouts),
                         (torch.float64, layouts[:1])]:
        for shape, layout in cases:
            x = torch.zeros(shape, dtype=dtype)
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            c, acc = shape[1], torch_bn.accumulation_dtype(dtype)
            for training, affine in [(True, True), (False, True), (True, False)]:
                params = [torch.ones(c, dtype=acc, requires_grad=True) if affine else None
                          for _ in range(2)]
                stats = torch.zeros(c, dtype=acc), torch.ones(c, dtype=acc)
                leaf = x.clone().requires_grad_()
                y = triton_bn.batch_norm(leaf, *stats, *params, training=training)
                y.backward(torch.zeros_like(y))
                if affine:  # only the input's gradient: the backward without the sums (eval)
                    leaf = x.clone().requires_grad_()
                    frozen = [p.detach() for p in params]
                    triton_bn.batch_norm(leaf, *stats, *frozen,
                                         training=training).backward(torch.zeros_like(y))
    return launches


def main() -> int:
    launches = record_launches()
    target = GPUTarget("cuda", 90, 32)
    failures = 0
    for (name, signature, constants, options), (kernel, sig, const, opts) in zip(
            launches.keys(), launches.values()):
        try:
            source = ASTSource(fn=kernel, signature=sig, constexprs=const)
            triton.compile(source, target=target, options=opts)
            print(f"compiled {name} {dict(constants)}")
        except Exception as error:  # noqa: BLE001 - report every failure, then fail
            failures += 1
            print(f"FAILED {name} {dict(constants)}: {type(error).__name__}: {error}")
    print(f"{len(launches) - failures} of {len(launches)} launches compiled for sm_90")
    return 1 if failures or not launches else 0


if __name__ == "__main__":
    sys.exit(main())
