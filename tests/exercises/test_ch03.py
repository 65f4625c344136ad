"""Chapter 3's exercises, the backward pass by hand: right answers pass, known mistakes are
named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bncourse.checks import CheckFailed, check
from exercise_testing import axes_of, shape_of, standard_tests

CHAPTER = "03_backward_by_hand"


def right_backward(dout, x, gamma, eps=1e-5):
    x_t = torch.from_numpy(x).requires_grad_()
    gamma_t = torch.from_numpy(gamma).requires_grad_()
    beta_t = torch.zeros_like(gamma_t, requires_grad=True)
    out = F.batch_norm(x_t, None, None, gamma_t, beta_t, training=True, eps=eps)
    return tuple(
        g.numpy() for g in torch.autograd.grad(out, (x_t, gamma_t, beta_t), torch.from_numpy(dout))
    )


def right_numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def backward_parts(dout, x, gamma, eps):
    a, s = axes_of(x), shape_of(x)
    m = x.size // x.shape[1]
    inv_std = 1 / np.sqrt(x.var(a, keepdims=True) + eps)
    xhat = (x - x.mean(a, keepdims=True)) * inv_std
    dbeta, dgamma = dout.sum(a), (dout * xhat).sum(a)
    return a, s, m, inv_std, xhat, dbeta, dgamma


def backward_no_mean_path(dout, x, gamma, eps=1e-5):
    a, s, m, inv_std, xhat, dbeta, dgamma = backward_parts(dout, x, gamma, eps)
    dx = gamma.reshape(s) * inv_std / m * (m * dout - xhat * dgamma.reshape(s))
    return dx, dgamma, dbeta


def backward_no_variance_path(dout, x, gamma, eps=1e-5):
    a, s, m, inv_std, xhat, dbeta, dgamma = backward_parts(dout, x, gamma, eps)
    dx = gamma.reshape(s) * inv_std / m * (m * dout - dbeta.reshape(s))
    return dx, dgamma, dbeta


def backward_like_a_constant_scale(dout, x, gamma, eps=1e-5):
    a, s, m, inv_std, xhat, dbeta, dgamma = backward_parts(dout, x, gamma, eps)
    return gamma.reshape(s) * inv_std * dout, dgamma, dbeta


def backward_without_gamma(dout, x, gamma, eps=1e-5):
    a, s, m, inv_std, xhat, dbeta, dgamma = backward_parts(dout, x, gamma, eps)
    return inv_std / m * (m * dout - dbeta.reshape(s) - xhat * dgamma.reshape(s)), dgamma, dbeta


def backward_swapped_parameters(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = right_backward(dout, x, gamma, eps)
    return dx, dbeta, dgamma


def backward_sum_over_axis0(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = right_backward(dout, x, gamma, eps)
    return dx, dgamma, dout.sum(0)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (backward_no_mean_path, "mean path is missing"),
        (backward_no_variance_path, "variance path is missing"),
        (backward_like_a_constant_scale, "both the mean and the variance paths are missing"),
        (backward_without_gamma, "gamma is missing from dx"),
        (backward_swapped_parameters, "dgamma and dbeta are swapped"),
        (backward_sum_over_axis0, "dbeta should sum dout over every axis but 1"),
    ],
)
def test_backward_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("numpy-backward", wrong)


def one_sided(f, x, h=1e-5):
    grad = np.zeros_like(x)
    base = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f(x) - base) / h
        x[i] = old
    return grad


def divides_by_h(f, x, h=1e-5):
    return 2 * right_numerical_gradient(f, x, h)


def forgets_to_restore(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        x[i] += h
        f_plus = f(x)
        x[i] -= 2 * h
        grad[i] = (f_plus - f(x)) / (2 * h)
    return grad


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (one_sided, "one-sided"),
        (divides_by_h, "dividing by h instead of 2h"),
        (forgets_to_restore, "left x changed"),
    ],
)
def test_numerical_gradient_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("numerical-gradient", wrong)


@pytest.mark.parametrize("wrong", [1.0, -0.3, 1e-3, 2.5])
def test_predict_sum_dx_explains_a_nonzero_sum(wrong):
    with pytest.raises(CheckFailed, match=r"\(1, \.\.\., 1\)"):
        check("predict-sum-dx", wrong)


RIGHT = {
    "numpy-backward": right_backward,
    "numerical-gradient": right_numerical_gradient,
    "predict-sum-dx": 0,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)


def test_a_backward_with_one_wrong_part_earns_the_other_two():
    """dx, dgamma and dbeta are judged independently: partial credit, every wrong part named."""

    def wrong_dx_only(dout, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = right_backward(dout, x, gamma, eps)
        return 2 * dx, dgamma, dbeta

    with pytest.raises(CheckFailed, match=r"(?s)dx from .*right: dgamma, dbeta; 2 of the 3") as one:
        check("numpy-backward", wrong_dx_only)
    assert one.value.credit == pytest.approx(2 / 3)

    def swapped_and_wrong_dx(dout, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = right_backward(dout, x, gamma, eps)
        return 0 * dx, dbeta, dgamma

    with pytest.raises(CheckFailed, match=r"(?s)dx from .*dgamma from .*dbeta from") as none:
        check("numpy-backward", swapped_and_wrong_dx)
    assert none.value.credit == 0 and "partial credit" not in str(none.value)
