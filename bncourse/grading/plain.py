"""Converting a candidate's answer to plain values before anything compares it.

A learner's function could return an object that lies to the comparison: an ``ndarray``
subclass whose ``==`` and ``np.allclose`` always agree, a float subclass that equals
everything, a tensor subclass with ``__torch_function__``. :func:`plain` rebuilds the answer
from base types only, through the base classes' own methods (never the object's): a plain
``np.ndarray`` copy of a numeric array, a plain ``torch.Tensor``, Python numbers, and tuples,
lists and dicts of those. What it cannot rebuild (a model, a module) is returned as it is:
the checkers of those exercises inspect attributes, not comparisons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NotPlain", "plain"]

_NUMERIC = "biufc"  # bool, signed, unsigned, float, complex: the dtypes an answer may have


class NotPlain(TypeError):
    """An answer that holds values the grader will not compare (object arrays, ...)."""


def _array(value: np.ndarray) -> np.ndarray:
    base = np.ndarray.view(value, np.ndarray)  # the base class's view: no subclass code runs
    if base.dtype.kind not in _NUMERIC:
        raise NotPlain(f"an array of dtype {base.dtype}, not numbers")
    return np.array(base, copy=True, subok=False)


def _tensor(value: Any) -> Any:
    import torch

    if type(value) is torch.Tensor or type(value) is torch.nn.Parameter:
        return value
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.as_subclass(value, torch.Tensor)


def plain(value: Any) -> Any:
    """``value`` rebuilt from base types (see the module docstring)."""
    kind = type(value)
    if value is None or kind in (bool, int, float, complex, str, bytes):
        return value
    if issubclass(kind, np.ndarray):
        return _array(value)
    if issubclass(kind, np.generic):
        if kind.__module__ == "numpy":
            return value
        return _array(np.asarray(np.ndarray.view(np.array([value]), np.ndarray))[0:1])[0]
    if issubclass(kind, bool):
        return bool(int.__int__(value))
    if issubclass(kind, int):
        return int.__int__(value)
    if issubclass(kind, float):
        return float.__float__(value)
    if issubclass(kind, complex):
        return complex(float.__float__(value.real), float.__float__(value.imag))
    if issubclass(kind, tuple):
        return tuple(plain(item) for item in tuple.__iter__(value))
    if issubclass(kind, list):
        return [plain(item) for item in list.__iter__(value)]
    if issubclass(kind, dict):
        return {plain(k): plain(v) for k, v in dict.items(value)}
    torch = __import__("sys").modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and issubclass(kind, torch.Tensor):
        return _tensor(value)
    return value
