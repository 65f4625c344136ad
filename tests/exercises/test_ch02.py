"""Chapter 2's exercises, the forward pass in NumPy: right answers pass, known mistakes are
named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bncourse import numpy_bn
from bncourse.checks import CheckFailed, check
from exercise_testing import axes_of, shape_of, standard_tests

CHAPTER = "02_numpy_forward"


# the checkers compare against): with torch.nn.functional, or directly from the formulas.
def right_batch_stats(x):
    axes = (0, *range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes)


def right_forward(x, gamma, beta, eps=1e-5):
    as_tensor = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    out = F.batch_norm(
        torch.from_numpy(x), None, None, as_tensor(gamma), as_tensor(beta), training=True, eps=eps
    )
    return out.numpy(), None


def test_forward_may_return_only_the_output():
    check("numpy-forward", lambda x, g, b, eps=1e-5: numpy_bn.forward_train(x, g, b, eps)[0])


def forward_unbiased(x, gamma, beta, eps=1e-5):
    a = axes_of(x)
    xhat = (x - x.mean(a, keepdims=True)) / np.sqrt(x.var(a, keepdims=True, ddof=1) + eps)
    return gamma.reshape(shape_of(x)) * xhat + beta.reshape(shape_of(x))


def forward_axis0(x, gamma, beta, eps=1e-5):
    xhat = (x - x.mean(0, keepdims=True)) / np.sqrt(x.var(0, keepdims=True) + eps)
    return gamma.reshape(shape_of(x)) * xhat + beta.reshape(shape_of(x))


def forward_per_sample(x, gamma, beta, eps=1e-5):
    a = tuple(range(1, x.ndim))  # LayerNorm's axes
    xhat = (x - x.mean(a, keepdims=True)) / np.sqrt(x.var(a, keepdims=True) + eps)
    return gamma.reshape(shape_of(x)) * xhat + beta.reshape(shape_of(x))


def forward_eps_outside(x, gamma, beta, eps=1e-5):
    a = axes_of(x)
    xhat = (x - x.mean(a, keepdims=True)) / (np.sqrt(x.var(a, keepdims=True)) + eps)
    return gamma.reshape(shape_of(x)) * xhat + beta.reshape(shape_of(x))


def forward_no_eps(x, gamma, beta, eps=1e-5):
    a = axes_of(x)
    xhat = (x - x.mean(a, keepdims=True)) / np.sqrt(x.var(a, keepdims=True))
    return gamma.reshape(shape_of(x)) * xhat + beta.reshape(shape_of(x))


def forward_swapped(x, gamma, beta, eps=1e-5):
    return right_forward(x, beta, gamma, eps)[0]


def forward_no_affine(x, gamma, beta, eps=1e-5):
    return right_forward(x, None, None, eps)[0]


def forward_fixed_eps(x, gamma, beta, eps=1e-5):
    return right_forward(x, gamma, beta, 1e-5)[0]


def forward_always_float64(x, gamma, beta, eps=1e-5):
    return right_forward(
        x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64), eps
    )[0]


def forward_flattened(x, gamma, beta, eps=1e-5):
    return right_forward(x, gamma, beta, eps)[0].reshape(x.shape[0], -1)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (forward_unbiased, "unbiased variance"),
        (forward_axis0, r"wrong reduction axes: statistics over axes \(0\) instead of \(0, 2\)"),
        (
            forward_per_sample,
            r"wrong reduction axes: statistics over axes \(1\) instead of \(0\); "
            r"axis 1 holds the channels",
        ),
        (forward_eps_outside, "eps outside the square root"),
        (forward_no_eps, "eps missing"),
        (forward_swapped, "gamma and beta swapped"),
        (forward_no_affine, "gamma and beta not applied"),
        (forward_fixed_eps, "the eps argument is ignored"),
        (forward_always_float64, "dtype float64, expected float32"),
        (forward_flattened, r"has shape \(4, 15\), expected \(4, 3, 5\)"),
    ],
)
def test_forward_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis) as failure:
        check("numpy-forward", wrong)
    assert str(failure.value).startswith("numpy-forward: ")


def test_forward_failure_says_where_and_how_large():
    with pytest.raises(CheckFailed) as failure:
        check("numpy-forward", forward_unbiased)
    message = str(failure.value)
    assert "for x of shape (6, 4) (float64)" in message
    assert "largest error" in message and "at index (" in message and "expected" in message


def test_forward_unrecognised_mistake_still_fails_without_a_guess():
    def off_by_a_bit(x, gamma, beta, eps=1e-5):
        return right_forward(x, gamma, beta, eps)[0] + 0.01

    with pytest.raises(CheckFailed) as failure:
        check("numpy-forward", off_by_a_bit)
    assert "Likely cause" not in str(failure.value)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (
            lambda x: (x.mean(axes_of(x)), x.var(axes_of(x), ddof=1)),
            "the variance from .* unbiased variance",
        ),
        (
            lambda x: (x.mean(axes_of(x)), x.std(axes_of(x))),
            "standard deviation instead of variance",
        ),
        (
            lambda x: (x.mean(0), x.var(0)),
            r"shape \(3, 5\), expected \(3,\).*wrong reduction axes: statistics over axes \(0\)",
        ),
        (
            lambda x: (x.mean(axes_of(x), keepdims=True), x.var(axes_of(x), keepdims=True)),
            "keepdims=True",
        ),
        (
            lambda x: (x.mean(1), x.var(1)),
            r"shape \(6,\), expected \(4,\).*axes \(1\) instead of \(0\)",
        ),
        (lambda x: x.mean(axes_of(x)), r"should return a tuple \(mean, var\), got a ndarray"),
    ],
)
def test_batch_stats_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("numpy-batch-stats", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (8, "only the batch axis"),
        (16, "InstanceNorm"),
        (384, "every value of the tensor"),
        (129, "every sample, every position"),
        (None, "not attempted"),
    ],
)
def test_predict_values_per_channel_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-values-per-channel", wrong)


RIGHT = {
    "numpy-batch-stats": right_batch_stats,
    "numpy-forward": right_forward,
    "predict-values-per-channel": 128,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
