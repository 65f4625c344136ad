"""Numerical gradients by central differences, and how to compare gradients.

A central difference approximates one partial derivative with two evaluations of ``f``::

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)

Its truncation error is O(h^2) (the one-sided ``(f(x + h e_i) - f(x)) / h`` is only O(h)) and
its rounding error is about ``eps_machine * |f| / h``, so in float64 ``h ~ 1e-5`` balances the
two; always check gradients in float64.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["numerical_gradient", "forward_difference", "relative_error", "batch_norm_gradcheck"]


def numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
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


def forward_difference(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """The one-sided ``(f(x + h e_i) - f(x)) / h`` for every entry ``i``: error O(h), not O(h^2).

    What :func:`numerical_gradient` improves on (chapter 3 compares the two). ``x`` is not
    changed (a float64 copy is nudged). Costs ``x.size + 1`` calls of ``f``.
    """
    x = x.astype(np.float64)
    base = f(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        grad[index] = (f(x) - base) / h
        x[index] = old
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max(|a| + |b|)``: scale-free, 0 for equal arrays, at most 1."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(a) + np.abs(b))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def batch_norm_gradcheck(
    batch_norm: Callable[..., Any],
    shape: tuple[int, ...],
    training: bool,
    parameters: tuple[str, ...] = ("weight", "bias"),
    eps: float = 1e-3,
    seed: int = 0,
) -> tuple[bool, bool]:
    """``torch.autograd.gradcheck`` and ``gradgradcheck`` of a function with ``F.batch_norm``'s
    signature, on a float64 input of ``shape`` (random, from ``seed``): the first and second
    derivatives of its output with respect to the input and the ``parameters`` named
    (``"weight"``, ``"bias"``; the others are ``None``) against central differences. In
    evaluation mode it normalizes with random running statistics. Returns the two verdicts
    (each raises, with the details, where a derivative is wrong).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    given = {
        "weight": torch.randn(c, generator=g, dtype=torch.float64).requires_grad_(),
        "bias": torch.randn(c, generator=g, dtype=torch.float64).requires_grad_(),
    }
    running_mean = torch.randn(c, generator=g, dtype=torch.float64)
    running_var = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    inputs = (x, *(given[name] for name in parameters))

    def f(x: Any, *values: Any) -> Any:
        named = dict(zip(parameters, values))
        rm, rv = (None, None) if training else (running_mean, running_var)
        return batch_norm(
            x, rm, rv, named.get("weight"), named.get("bias"), training=training, eps=eps
        )

    return torch.autograd.gradcheck(f, inputs), torch.autograd.gradgradcheck(f, inputs)
