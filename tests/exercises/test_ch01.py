"""Chapter 1's exercises, what BatchNorm does to a batch: right answers pass, known mistakes are
named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bncourse.checks import CheckFailed, check
from exercise_testing import standard_tests

CHAPTER = "01_what_batchnorm_does"


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda x: (x - x.mean(0)) / x.std(0, ddof=1), "unbiased standard deviation"),
        (lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True), "statistics per row"),
        (lambda x: (x - x.min(0)) / (x.max(0) - x.min(0)), "min-max scaling"),
        (lambda x: (x - x.mean()) / x.std(), "whole array"),
        (lambda x: x - x.mean(0), "without dividing"),
    ],
)
def test_standardize_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("standardize", wrong)


def test_standardize_must_not_modify_its_input():
    def in_place(x):
        x -= x.mean(0)
        x /= x.std(0)
        return x

    with pytest.raises(CheckFailed, match="changed its input"):
        check("standardize", in_place)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (
            lambda m: np.r_[np.zeros(m - 2), 1.0, 1.0] if m > 2 else np.array([0.0, 1.0]),
            r"for m=5 the largest \|xhat\| of your batch is 1.2247"
            r".*put all the spread in one value",
        ),
        (lambda m: np.ones(m), "constant"),
        (lambda m: np.full(m, 1e308), "overflows"),  # inf/inf is NaN, and NaN < bound is False
        (lambda m: np.r_[np.zeros(m - 1), 1e308], "overflows"),
        (lambda m: np.zeros(m + 1), r"has shape \(3,\), expected \(2,\)"),
    ],
)
def test_extreme_batch_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("extreme-batch", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda n, c: 1.0, "torch.Tensor.std divides by"),
        (lambda n, c: math.sqrt(n / (n - 1)), "over all N\\*C values at once"),
    ],
)
def test_expected_std_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("expected-std", wrong)


def test_expected_std_wants_the_number_not_the_printed_digits():
    """The printed 1.0171 is rounded: it is 5e-6 from sqrt(30/29), beyond the 1e-6 allowed;
    the message shows the digits where they differ, and guesses no misconception."""
    with pytest.raises(CheckFailed) as failure:
        check("expected-std", lambda n, c: 1.0171)  # (a string is refused: another test)
    message = str(failure.value)
    assert "expected_std(3, 10) = 1.0171, expected 1.017095." in message
    assert "Likely cause" not in message


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (1.0, "not softmax"),
        (1, "not softmax"),
        (8.0, "not all 1"),
        (0.5, "deviations from a mean sum to 0"),
        (-0.02, "deviations from a mean sum to 0"),  # just outside the tolerance
        ("0", "should be a number"),
        (True, "should be a number"),
        (np.False_, "should be a number"),  # numpy's and torch's booleans are not numbers
        (np.complex128(5j), "should be a number"),  # (float() would keep its real part, 0)
        (np.array([0.0]), "should be one number"),
        (np.zeros((1, 1)), "should be one number"),
        (float("nan"), "finite"),
    ],
)
def test_predict_output_sum_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-output-sum", wrong)


def test_predict_output_sum_accepts_a_value_near_0():
    check("predict-output-sum", 0.004)  # within the stated tolerance, 0.01


RIGHT = {
    "standardize": lambda x: (x - x.mean(0)) / x.std(0),
    "extreme-batch": lambda m: np.r_[np.zeros(m - 1), 5.0],
    "expected-std": lambda n, c: math.sqrt(n * c / (n * c - 1)),
    "predict-output-sum": 0.0,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
