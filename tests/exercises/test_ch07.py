"""Chapter 7's exercises, BatchNorm in training: right answers pass, known mistakes are named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import math

import pytest
import torch

from bncourse.checks import CheckFailed, check
from exercise_testing import standard_tests

CHAPTER = "07_bn_in_training"


def right_values_per_statistic(norm, shape, groups=1):
    positions = math.prod(shape[2:])
    return {"batch": shape[0], "layer": shape[1], "group": shape[1] // groups}[norm] * positions


def right_freeze_batchnorm(model):
    from bncourse.training import freeze_batchnorm

    return freeze_batchnorm(model)


def per_statistic_with(norm_changed, value):
    def values_per_statistic(norm, shape, groups=1):
        if norm == norm_changed:
            return value(shape, groups)
        return right_values_per_statistic(norm, shape, groups)

    return values_per_statistic


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (
            per_statistic_with("batch", lambda s, g: s[0]),
            r"\('batch', \(2, 8, 8, 8\).*= 2, expected 128.*not N",
        ),
        (per_statistic_with("batch", lambda s, g: math.prod(s)), "the channels are not pooled"),
        (
            per_statistic_with("layer", lambda s, g: s[1]),
            "LayerNorm over \\(C, H, W\\) also reduces over the spatial",
        ),
        (
            per_statistic_with("layer", lambda s, g: math.prod(s)),
            "LayerNorm keeps one statistic per sample",
        ),
        (
            per_statistic_with("group", lambda s, g: g * math.prod(s[2:])),
            "groups is the number of groups",
        ),
        (per_statistic_with("group", lambda s, g: math.prod(s[1:])), "the groups were ignored"),
        (
            per_statistic_with("group", lambda s, g: s[0] * s[1] // g * math.prod(s[2:])),
            "GroupNorm keeps statistics per sample",
        ),
        (per_statistic_with("batch", lambda s, g: None), "should be a number"),
    ],
)
def test_values_per_statistic_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("values-per-statistic", wrong)


def freeze_eval_only(model):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def freeze_gradients_only(model):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.requires_grad = False
            module.bias.requires_grad = False


def freeze_batchnorm1d_only(model):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.eval()
            module.weight.requires_grad = False
            module.bias.requires_grad = False


def freeze_with_model_eval(model):
    model.eval()
    freeze_gradients_only(model)


def freeze_every_parameter(model):
    freeze_eval_only(model)
    for parameter in model.parameters():
        parameter.requires_grad = False


def freeze_with_zero_momentum(model):
    """Stops the running statistics from moving, but still normalizes with batch statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    freeze_gradients_only(model)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (freeze_eval_only, "gamma and beta of the BatchNorm2d layer still get gradients"),
        (freeze_gradients_only, "the BatchNorm2d layer is still in training mode"),
        (freeze_batchnorm1d_only, "the BatchNorm2d layer is still in training mode"),
        (freeze_with_model_eval, "the Dropout layer is in eval mode too"),
        (freeze_every_parameter, "the Conv2d layer no longer gets gradients"),
        (
            freeze_with_zero_momentum,
            "still in training mode, so it normalizes with batch statistics",
        ),
    ],
)
def test_freeze_batchnorm_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("freeze-batchnorm", wrong)


def test_freeze_batchnorm_check_leaves_the_random_state_alone():
    """The checker builds its model from its own seed without moving the learner's RNG."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("freeze-batchnorm", right_freeze_batchnorm)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        ("", "Samuelson"),
        ("e", "Samuelson"),
        ("ab", "LayerNorm normalizes each sample"),
        ("abcd", "LayerNorm normalizes each sample"),
        ("ac", "GroupNorm normalizes each sample"),
        ("ad", "nothing is estimated from the batch"),
        ("ae", "8 values per statistic are enough"),
        (["a", "e"], "8 values per statistic are enough"),
        ("af", "the runs are a, b, c, d, e"),
        (1, "letters of the runs"),
    ],
)
def test_predict_small_batch_runs_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-small-batch-runs", wrong)


@pytest.mark.parametrize("right", ["a", "A", " a", ["a"], {"a"}])
def test_predict_small_batch_runs_accepts_the_ways_to_write_a(right):
    check("predict-small-batch-runs", right)


RIGHT = {
    "predict-small-batch-runs": "a",
    "values-per-statistic": right_values_per_statistic,
    "freeze-batchnorm": right_freeze_batchnorm,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
