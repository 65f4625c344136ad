"""Compiled kernels for CUDA tensors, interpreted ones for CPU tensors, chosen per launch.

``@triton.jit`` (in :mod:`.kernels`) makes a ``JITFunction``, compiled for the GPU at its
first launch with a new specialization.  Triton's interpreter, which runs a kernel's Python
with NumPy one program after another, is usually a choice for a whole process:
``TRITON_INTERPRET=1``, set before ``triton`` is imported, makes ``triton.jit`` return an
``InterpretedFunction`` instead, for these kernels and for ``triton.language``'s own jit
functions (``tl.zeros``, ``tl.sum``).  Here the interpreter is chosen per launch, by device:

* :data:`COMPILED`: the ``@triton.jit`` kernels themselves; take CUDA tensors;
* :data:`INTERPRETED`: each kernel's function in an ``InterpretedFunction``; takes CPU
  tensors (it would copy others to the CPU and back).

While an interpreted kernel runs, it calls ``JITFunction`` objects: our helpers and
``tl.zeros``/``tl.sum``.  Calling one outside a compiled kernel is normally an error, so for
the duration of an interpreted launch :func:`_jit_calls_interpreted` makes such a call
interpret the function instead, as ``InterpretedFunction.__call__`` would, except that it
also undoes the interpreter's patches of ``triton.language`` after each call (Triton's own
call leaves some in place, which would break kernels compiled later in the same process).

(With ``TRITON_INTERPRET=1`` in the environment, Triton interprets every kernel, CUDA
tensors' included, as it does for any Triton code.)
"""

from __future__ import annotations

import threading
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from triton.runtime import interpreter
from triton.runtime.jit import JITFunction

from . import kernels

__all__ = ["COMPILED", "INTERPRETED", "for_device", "check_devices"]

_interpreted_functions: dict[Callable[..., Any], interpreter.InterpretedFunction] = {}
# The interpreter patches module-wide state (triton.language, JITFunction.__call__ below):
# one interpreted launch at a time.
_one_at_a_time = threading.Lock()


def _interpret(function: Callable[..., Any]) -> interpreter.InterpretedFunction:
    """The (cached) ``InterpretedFunction`` of a plain Python function in Triton's language."""
    if function not in _interpreted_functions:
        _interpreted_functions[function] = interpreter.InterpretedFunction(function)
    return _interpreted_functions[function]


def _call_interpreted(self: JITFunction, *args: Any, **kwargs: Any) -> Any:
    """A ``JITFunction`` called from inside an interpreted kernel, interpreted."""
    patches = interpreter._patch_lang(self.fn)  # what InterpretedFunction.__call__ does,
    try:
        return _interpret(self.fn).rewrite()(*args, **kwargs)
    finally:
        patches.restore()  # and undone


@contextmanager
def _jit_calls_interpreted() -> Iterator[None]:
    """Within: calling a ``JITFunction`` interprets it (instead of raising an error)."""
    raises = JITFunction.__call__
    JITFunction.__call__ = _call_interpreted
    try:
        yield
    finally:
        JITFunction.__call__ = raises


class _InterpretedKernel:
    """A ``@triton.jit`` kernel launched as ``kernel[grid](**arguments)`` in the interpreter."""

    def __init__(self, kernel: Any) -> None:
        self.fn = kernel.fn  # the function in Triton's language (for inspect.getsource)

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        def launch(**arguments: Any) -> None:
            with _one_at_a_time, _jit_calls_interpreted():
                _interpret(self.fn)[grid](**arguments)

        return launch


COMPILED = types.SimpleNamespace(**{name: getattr(kernels, name) for name in kernels.__all__})
INTERPRETED = types.SimpleNamespace(
    **{name: _InterpretedKernel(getattr(kernels, name)) for name in kernels.__all__}
)


def for_device(device: torch.device) -> types.SimpleNamespace:
    """The kernels that take tensors on ``device``: :data:`COMPILED` for a CUDA device,
    :data:`INTERPRETED` for the CPU; a ``RuntimeError`` for any other device."""
    if device.type == "cuda":
        return COMPILED
    if device.type == "cpu":
        return INTERPRETED
    raise RuntimeError(
        f"triton_bn: got an input on {device}, but the kernels take CUDA "
        "tensors (compiled) or CPU tensors (Triton's interpreter)"
    )


def check_devices(input: torch.Tensor, *others: torch.Tensor | None) -> None:
    """The kernels' device rule: a CUDA or CPU ``input`` (or a meta one: shapes only, no
    kernel), and every other tensor on its device."""
    if input.device.type != "meta":
        for_device(input.device)
    for other in others:
        if other is not None and other.device != input.device:
            raise RuntimeError(
                f"triton_bn: expected every tensor on {input.device}, got one on {other.device}"
            )
