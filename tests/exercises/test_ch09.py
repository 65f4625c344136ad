"""Chapter 9's exercises, beyond one device and beyond BatchNorm: right answers pass, known
mistakes are named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncourse.checks import CheckFailed, check
from exercise_testing import standard_tests

CHAPTER = "09_beyond_one_device"


def right_merge_stats(counts, means, m2s):
    from bncourse.distributed import merge_stats

    count, mean, m2 = merge_stats(*(torch.from_numpy(a) for a in (counts, means, m2s)))
    return float(count), mean.numpy(), m2.numpy()


def right_fold_bn(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    a = gamma / np.sqrt(running_var + eps)
    return weight * a.reshape((-1,) + (1,) * (weight.ndim - 1)), a * (bias - running_mean) + beta


def right_group_norm(x, groups, eps=1e-5):
    from bncourse.norm_family import group_norm

    return group_norm(torch.from_numpy(x), groups, eps).numpy()


def merge_unweighted(counts, means, m2s):
    mean = means.mean(axis=0)
    return counts.sum(), mean, m2s.sum(0) + (counts[:, None] * (means - mean) ** 2).sum(0)


def merge_within_only(counts, means, m2s):
    return counts.sum(), (counts[:, None] * means).sum(0) / counts.sum(), m2s.sum(0)


def merge_returns_variance(counts, means, m2s):
    total, mean, m2 = right_merge_stats(counts, means, m2s)
    return total, mean, m2 / total


def merge_counts_processes(counts, means, m2s):
    _, mean, m2 = right_merge_stats(counts, means, m2s)
    return len(counts), mean, m2


def merge_pairwise(counts, means, m2s):
    """Chan's two-part update applied part after part: another right answer."""
    n, mean, m2 = counts[0], means[0], m2s[0]
    for nb, mb, m2b in zip(counts[1:], means[1:], m2s[1:]):
        delta = mb - mean
        total = n + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = mean + delta * nb / total
            m2 = m2 + m2b + delta**2 * n * nb / total
        n = total
    return n, mean, m2


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (merge_unweighted, "the mean from .* averaged without weights"),
        (merge_within_only, "M2 misses the between-process term"),
        (merge_returns_variance, "not the variance M2 / N"),
        (merge_counts_processes, "the count from .* number of processes"),
    ],
)
def test_chan_merge_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("chan-merge", wrong)


def test_chan_merge_accepts_the_pairwise_update():
    """Merging two parts at a time is the same formula: the checker must accept it."""
    check("chan-merge", merge_pairwise)


def fold_scaling_inputs(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    a = gamma / np.sqrt(running_var + eps)
    shape = (1, -1) + (1,) * (weight.ndim - 2)
    return weight * a.reshape(shape), a * (bias - running_mean) + beta


def fold_unscaled_bias(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    folded, _ = right_fold_bn(weight, bias, running_mean, running_var, gamma, beta, eps)
    a = gamma / np.sqrt(running_var + eps)
    return folded, bias - a * running_mean + beta


def fold_without_eps(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    return right_fold_bn(weight, bias, running_mean, running_var, gamma, beta, eps=0.0)


def fold_without_mean(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    return right_fold_bn(weight, bias, np.zeros_like(running_mean), running_var, gamma, beta, eps)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (fold_scaling_inputs, "scaled along the input channels"),
        (fold_unscaled_bias, "the layer's own bias is not scaled"),
        (fold_without_eps, "the weight from .* eps missing"),
        (fold_without_mean, "running_mean is not subtracted"),
        (
            lambda *args, **kwargs: right_fold_bn(*args, **kwargs)[0],
            r"should return a tuple \(weight, bias\)",
        ),
    ],
)
def test_fold_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("fold-batchnorm", wrong)


def group_norm_over(view_of, axes_of_view, ddof=0):
    def group_norm(x, groups, eps=1e-5):
        v = view_of(x, groups)
        axes = axes_of_view(v)
        out = (v - v.mean(axis=axes, keepdims=True)) / np.sqrt(
            v.var(axis=axes, keepdims=True, ddof=ddof) + eps
        )
        return out.reshape(x.shape)

    return group_norm


grouped = lambda x, g: x.reshape(x.shape[0], g, x.shape[1] // g, *x.shape[2:])  # noqa: E731


interleaved = lambda x, g: x.reshape(x.shape[0], x.shape[1] // g, g, *x.shape[2:])  # noqa: E731


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (
            group_norm_over(interleaved, lambda v: (1, *range(3, v.ndim))),
            "the groups interleave the channels",
        ),
        (
            group_norm_over(grouped, lambda v: (0, *range(2, v.ndim))),
            "the batch axis is reduced too",
        ),
        (
            group_norm_over(lambda x, g: x, lambda v: tuple(range(2, v.ndim))),
            r"statistics per channel \(InstanceNorm\)",
        ),
        (
            group_norm_over(lambda x, g: x, lambda v: tuple(range(1, v.ndim))),
            r"the groups are ignored \(LayerNorm\)",
        ),
        (group_norm_over(grouped, lambda v: tuple(range(2, v.ndim)), ddof=1), "unbiased variance"),
    ],
)
def test_group_norm_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("group-norm", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (3, "never mixes samples"),
        (6, "BatchNorm"),
        (4, "LayerNorm"),
        (24, "InstanceNorm"),
        (12.5, "N \\* G means"),
    ],
)
def test_predict_group_norm_means_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-group-norm-means", wrong)


RIGHT = {
    "chan-merge": right_merge_stats,
    "fold-batchnorm": right_fold_bn,
    "group-norm": right_group_norm,
    "predict-group-norm-means": 12,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)


def test_a_fold_with_the_right_weight_earns_half():
    def right_weight_wrong_bias(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
        a = gamma / np.sqrt(running_var + eps)
        return weight * a.reshape((-1,) + (1,) * (weight.ndim - 1)), bias + beta

    with pytest.raises(
        CheckFailed, match=r"(?s)the bias from .*right: weight; 1 of the 2"
    ) as failed:
        check("fold-batchnorm", right_weight_wrong_bias)
    assert failed.value.credit == 0.5


def test_a_fold_that_breaks_on_a_later_shape_earns_no_partial_credit():
    """The weight is right for the square Linear weight but broadcasts wrongly for a Conv2d's:
    the first failure is the diagnosis, and no part was shown right on every case."""

    def inputs_axis(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
        a = gamma / np.sqrt(running_var + eps)
        return weight * a.reshape((-1,) + (1,) * (weight.ndim - 1)), bias + beta

    def square_only(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
        if weight.ndim > 2:
            raise ValueError("operands could not be broadcast")
        return inputs_axis(weight, bias, running_mean, running_var, gamma, beta, eps)

    with pytest.raises(CheckFailed, match=r"(?s)the bias from .*raised ValueError") as failed:
        check("fold-batchnorm", square_only)
    assert failed.value.credit == 0
