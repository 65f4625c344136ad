"""Numerical gradients by central differences, and how to compare gradients.

A central difference approximates one partial derivative with two evaluations of ``f``::

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)

Its truncation error is O(h^2) (the one-sided ``(f(x + h e_i) - f(x)) / h`` is only O(h)) and
its rounding error is about ``eps_machine * |f| / h``, so in float64 ``h ~ 1e-5`` balances the
two; always check gradients in float64.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "relative_error"]


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Gradient of the scalar function ``f`` at ``x`` (any shape), by central differences.

    ``x`` is nudged in place one entry at a time and restored afterwards, so ``f`` may close
    over it.  Costs ``2 * x.size`` calls of ``f``.  Returns an array shaped like ``x``.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = f(x)
        x[index] = old - h
        f_minus = f(x)
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max(|a| + |b|)``: scale-free, 0 for equal arrays, at most 1."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(a) + np.abs(b))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)
