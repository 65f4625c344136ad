"""Chapter 6's exercises, the identity-recovery argument: right answers pass, known mistakes are
named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bncourse import numpy_bn
from bncourse.checks import CheckFailed, check
from exercise_testing import axes_of, standard_tests

CHAPTER = "06_identity_recovery"


def right_range_params(x, low, high, eps=1e-5):
    out, _ = numpy_bn.forward_train(x, eps=eps)
    a = axes_of(x)
    gamma = (high - low) / (out.max(a) - out.min(a))
    return gamma, low - gamma * out.min(a)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv), rm), "gamma from .* eps missing"),
        (lambda rm, rv, eps=1e-5: (rm, np.sqrt(rv + eps)), "gamma from .* gamma and beta swapped"),
        (lambda rm, rv, eps=1e-5: (rv + eps, rm), "not a variance"),
        (lambda rm, rv, eps=1e-5: (1 / np.sqrt(rv + eps), rm), "gamma is the inverse"),
        (
            lambda rm, rv, eps=1e-5: (np.sqrt(rv + 1e-5), rm),
            r"eps=0.001.*the eps argument is ignored",
        ),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), -rm), "beta from .* wrong sign"),
        (
            lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), np.zeros_like(rm)),
            "beta = 0 does not put the mean back",
        ),
        (
            lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), rm, None),
            r"should return a tuple \(gamma, beta\), got a tuple of 3",
        ),
        (
            lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps).astype(np.float32), rm),
            "dtype float32, expected float64",
        ),
    ],
)
def test_identity_params_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("identity-params", wrong)


def test_identity_params_checks_the_identity_itself():
    """A gamma off by a tiny relative error that no misconception explains still fails."""
    with pytest.raises(CheckFailed) as failure:
        check("identity-params", lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps) * (1 + 1e-3), rm))
    assert "Likely cause" not in str(failure.value)


def samuelson_ignoring_ddof(m, ddof=0):
    return math.sqrt(m - 1)


def samuelson_correcting_the_wrong_way(m, ddof=0):
    bound = math.sqrt(m - 1)
    return bound * math.sqrt(m / (m - 1)) if ddof == 1 else bound


def samuelson_swapped(m, ddof=0):
    return math.sqrt(m - 1) if ddof else (m - 1) / math.sqrt(m)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (samuelson_ignoring_ddof, r"samuelson_bound\(3, ddof=1\).*ddof is ignored"),
        (samuelson_correcting_the_wrong_way, "the correction goes the other way"),
        (samuelson_swapped, r"ddof=0 is the biased std"),
        (lambda m, ddof=0: math.sqrt(m), "sqrt\\(m\\) is never reached"),
        (lambda m, ddof=0: m - 1, "take the square root"),
        (lambda m, ddof=0: "sqrt(m - 1)", "should be a number"),
    ],
)
def test_samuelson_bound_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("samuelson-bound", wrong)


def range_params_from(xhat_of):
    def range_params(x, low, high, eps=1e-5):
        a = axes_of(x)
        xhat = xhat_of(x, a, eps)
        gamma = (high - low) / (xhat.max(a) - xhat.min(a))
        return gamma, low - gamma * xhat.min(a)

    return range_params


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (range_params_from(lambda x, a, eps: x), "range of x, not of the normalized xhat"),
        (
            range_params_from(
                lambda x, a, eps: (
                    (x - x.mean(a, keepdims=True)) / np.sqrt(x.var(a, keepdims=True, ddof=1) + eps)
                )
            ),
            "unbiased variance",
        ),
        (
            range_params_from(
                lambda x, a, eps: (x - x.mean(a, keepdims=True)) / x.std(a, keepdims=True)
            ),
            "eps missing",
        ),
        (
            lambda x, low, high, eps=1e-5: right_range_params(x, low, high, eps)[::-1],
            "gamma and beta swapped",
        ),
        (
            lambda x, low, high, eps=1e-5: tuple(
                v.reshape(1, -1) for v in right_range_params(x, low, high, eps)
            ),
            r"gamma from .* has shape \(1, 3\), expected \(3,\)",
        ),
    ],
)
def test_output_range_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("output-range", wrong)


def test_output_range_an_unknown_mistake_says_where_without_a_guess():
    with pytest.raises(CheckFailed) as failure:
        check("output-range", lambda x, low, high, eps=1e-5: (high - low, low))
    message = str(failure.value)
    assert message.startswith("output-range: the (min, max) of each channel of BatchNorm's output")
    assert "is wrong: largest error" in message and "at index (" in message
    assert "Likely cause" not in message


def test_output_range_accepts_the_mirrored_answer():
    """A negative gamma maps the largest value to low and the smallest to high: also right."""

    def mirrored(x, low, high, eps=1e-5):
        out, _ = numpy_bn.forward_train(x, eps=eps)
        a = axes_of(x)
        gamma = -(high - low) / (out.max(a) - out.min(a))
        return gamma, high - gamma * out.min(a)

    check("output-range", mirrored)


@pytest.mark.parametrize("wrong", [24.44, 1.0, -3.0, 1e-3])
def test_predict_bias_grad_explains_a_nonzero_gradient(wrong):
    with pytest.raises(CheckFailed, match="chapter 3's first identity"):
        check("predict-bias-grad", wrong)


RIGHT = {
    "identity-params": lambda running_mean, running_var, eps=1e-5: (
        np.sqrt(running_var + eps),
        running_mean,
    ),
    "samuelson-bound": lambda m, ddof=0: (m - 1) / math.sqrt(m) if ddof else math.sqrt(m - 1),
    "output-range": right_range_params,
    "predict-bias-grad": 0.0,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
