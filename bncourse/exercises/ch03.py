"""Chapter 3, the backward pass by hand: the closed-form gradients and central differences.

The backward mistakes (:data:`DX`) serve chapter 5's autograd.Function too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy_bn
from ..conventions import channel_shape, reduce_axes
from ..gradcheck import forward_difference
from .base import (
    CheckFailed,
    Mistakes,
    Parts,
    compare,
    compare_prediction,
    exercise,
    prediction,
    rng,
    tuple_text,
    unpack,
)

CHAPTER = "03_backward_by_hand"


def backward_cases() -> list[dict[str, Any]]:
    """Inputs for the backward exercises: a (N, C) and a (N, C, H, W) batch, float64."""
    cases = []
    for seed, shape in [(20, (8, 3)), (21, (4, 3, 2, 2))]:
        generator = rng(seed)
        x = generator.normal(size=shape) * 2.0 + 1.0
        gamma = generator.uniform(0.5, 2.0, size=shape[1])
        dout = generator.normal(size=shape)
        cases.append(dict(x=x, gamma=gamma, dout=dout, eps=1e-5))
    return cases


# --------------------------------------------------------------------------------------------
# batchnorm_backward: (dx, dgamma, dbeta)
# --------------------------------------------------------------------------------------------
def _paths(
    dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float
) -> tuple[np.ndarray, ...]:
    """The pieces of chapter 3's ``dx = s * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = gamma * dout``: ``s = 1 / sqrt(var + eps)``, ``g``, ``xhat``, ``mean(g)`` and
    ``mean(g * xhat)`` (the means per channel, dims kept). The mistakes drop some of them."""
    _, cache = numpy_bn.forward_train(x, gamma, None, eps)
    axes, shape = reduce_axes(x.ndim), channel_shape(x.ndim)
    s = cache.inv_std.reshape(shape)
    g = dout * gamma.reshape(shape)
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_g_xhat = (g * cache.xhat).mean(axis=axes, keepdims=True)
    return s, g, cache.xhat, mean_g, mean_g_xhat


DX = Mistakes()


@DX.add("the mean path is missing (the gradient through mu): the per-channel sum of dx should be 0")
def dx_without_the_mean_path(dout, x, gamma, eps):
    s, g, xhat, mean_g, mean_g_xhat = _paths(dout, x, gamma, eps)
    return s * (g - xhat * mean_g_xhat)


@DX.add(
    "the variance path is missing (the gradient through var): the per-channel sum of "
    "dx * xhat should be 0"
)
def dx_without_the_variance_path(dout, x, gamma, eps):
    s, g, xhat, mean_g, mean_g_xhat = _paths(dout, x, gamma, eps)
    return s * (g - mean_g)


@DX.add(
    "both the mean and the variance paths are missing: dx is not just gamma * dout / "
    "sqrt(var + eps)"
)
def dx_as_a_constant_scale(dout, x, gamma, eps):
    s, g, *_ = _paths(dout, x, gamma, eps)
    return s * g


@DX.add("gamma is missing from dx: the gradient reaching xhat is gamma * dout")
def dx_without_gamma(dout, x, gamma, eps):
    s, g, xhat, mean_g, mean_g_xhat = _paths(dout, x, np.ones_like(gamma), eps)  # g = dout
    return s * (g - mean_g - xhat * mean_g_xhat)


def sum_over_axis_0(a: np.ndarray) -> np.ndarray:
    """A per-channel sum taken over the batch axis only: shape ``(C, *spatial)``."""
    return a.sum(axis=0)


@exercise(
    "numpy-backward",
    chapter=CHAPTER,
    title="The closed-form backward pass",
    signature="batchnorm_backward(dout, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)",
)
def check_backward(batchnorm_backward: Callable[..., Any]) -> str:
    parts = Parts("dx", "dgamma", "dbeta")  # independent: each earns a third of the points
    for case in backward_cases():
        with parts.case():
            x, gamma, dout, eps = case["x"], case["gamma"], case["dout"], case["eps"]
            name = f"batchnorm_backward for x of shape {tuple_text(x.shape)}"
            result = batchnorm_backward(dout.copy(), x.copy(), gamma.copy(), eps=eps)
            dx, dgamma, dbeta = unpack(name, result, ("dx", "dgamma", "dbeta"))
            _, cache = numpy_bn.forward_train(x, gamma, None, eps)
            right_dx, right_dgamma, right_dbeta = numpy_bn.backward(dout, cache)
            with parts.judging("dbeta"):
                compare(
                    f"dbeta from {name}",
                    dbeta,
                    right_dbeta,
                    mistakes={
                        "dgamma and dbeta are swapped": right_dgamma,
                        "dbeta should sum dout over every axis but 1": sum_over_axis_0(dout),
                    },
                )
            with parts.judging("dgamma"):
                compare(
                    f"dgamma from {name}",
                    dgamma,
                    right_dgamma,
                    mistakes={
                        "dgamma and dbeta are swapped": right_dbeta,
                        "dgamma should sum dout * xhat over every axis but 1": sum_over_axis_0(
                            dout * cache.xhat
                        ),
                    },
                )
            with parts.judging("dx"):
                compare(f"dx from {name}", dx, right_dx, mistakes=DX.answers(dout, x, gamma, eps))
    parts.verdict()
    return "dx, dgamma, dbeta match the analytic gradients for (N, C) and (N, C, H, W)"


# --------------------------------------------------------------------------------------------
# numerical_gradient: central differences
# --------------------------------------------------------------------------------------------
@exercise(
    "numerical-gradient",
    chapter=CHAPTER,
    title="Central differences",
    signature="numerical_gradient(f, x, h=1e-5) -> array shaped like x",
)
def check_numerical_gradient(numerical_gradient: Callable[..., Any]) -> str:
    generator = rng(30)
    x = generator.normal(size=(3, 4))
    w = generator.normal(size=(3, 4))
    calls = []

    def f(v: np.ndarray) -> float:
        calls.append(1)
        return float(np.sum(np.sin(v) * w) + 0.5 * np.sum(v * v) ** 1.5 * 1e-2)

    def exact(v: np.ndarray) -> np.ndarray:
        return np.cos(v) * w + 1.5 * 1e-2 * np.sum(v * v) ** 0.5 * v

    before = x.copy()
    got = numerical_gradient(f, x, h=1e-5)
    if not np.array_equal(x, before):
        raise CheckFailed(
            "numerical_gradient left x changed: restore each entry after nudging it "
            "(x[i] = old value), or the later entries are measured at the wrong point"
        )
    if not calls:
        raise CheckFailed("numerical_gradient never called f")
    mistakes = {
        "a one-sided (forward) difference (f(x+h) - f(x)) / h, whose error is O(h) instead "
        "of O(h^2)": forward_difference(f, x, 1e-5),
        "dividing by h instead of 2h in (f(x+h) - f(x-h)) / (2h)": 2 * exact(x),
    }
    # Central differences with h=1e-5 are accurate to ~1e-10 here; a one-sided difference is
    # off by ~1e-5, so atol=1e-8 tells them apart.
    compare("numerical_gradient(f, x)", got, exact(x), rtol=1e-7, atol=1e-8, mistakes=mistakes)
    return "central differences match the exact gradient to 1e-8"


# --------------------------------------------------------------------------------------------
# predict-sum-dx: before the identities are shown
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-sum-dx",
    chapter=CHAPTER,
    title="Predict the sum of a channel's gradient",
    signature="predicted_sum_dx: a number, the sum of one channel's dx over the batch",
)
def check_predict_sum_dx(predicted_sum_dx: Any) -> str:
    # Tolerance 1e-6: the identity is exact, float64 leaves about 1e-16, and any number
    # derived from the chapter's data (dbeta, say) is of order 1.
    got = compare_prediction(
        "predicted_sum_dx",
        predicted_sum_dx,
        0.0,
        tolerance=1e-6,
        otherwise=(
            "Adding the same number to every value of a channel moves its mean by as much and "
            "leaves BatchNorm's output unchanged, so the loss does not change along "
            "(1, ..., 1): the gradient's components sum to 0"
        ),
    )
    return f"you predicted {got}: the mean path removes every shift of a channel"
