"""Chapter 4's exercises, running statistics, training and evaluation: right answers pass, known
mistakes are named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import pytest
import torch

from bncourse import torch_bn
from bncourse.checks import CheckFailed, check
from exercise_testing import axes_of, shape_of, standard_tests

CHAPTER = "04_running_stats"


def right_running_stats_update(running_mean, running_var, x, momentum, num_batches_tracked):
    dims = axes_of(x)
    factor = 1 / num_batches_tracked if momentum is None else momentum
    mean, var = x.mean(dims), x.var(dims, correction=1)
    return (1 - factor) * running_mean + factor * mean, (1 - factor) * running_var + factor * var


def right_batchnorm_modes(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    return torch_bn.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (
            lambda c, a, t: (2 * c * a + 2 * c * t, int(t)),
            "running_mean and running_var counted as learnable",
        ),
        (lambda c, a, t: (2 * c * a, 2 * c * t), "num_batches_tracked forgotten"),
        (lambda c, a, t: (2 * a, 3 * t), "tensors counted, not numbers"),
        (lambda c, a, t: (2 * c, 2 * c + 1), "affine=False has no weight and bias"),
        (lambda c, a, t: 2 * c, r"should return a tuple \(learnable, buffer_values\)"),
    ],
)
def test_state_sizes_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("state-sizes", wrong)


def stats_update(running_mean, running_var, mean, var, factor, tf_style=False):
    if tf_style:
        return factor * running_mean + (1 - factor) * mean, factor * running_var + (
            1 - factor
        ) * var
    return (1 - factor) * running_mean + factor * mean, (1 - factor) * running_var + factor * var


def update_tf_style(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    return stats_update(
        running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x)), factor, tf_style=True
    )


def update_biased(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    return stats_update(
        running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), factor
    )


def update_unbiased_with_batch_size(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    n = x.shape[0]
    var = x.var(axes_of(x), unbiased=False) * n / (n - 1)
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), var, factor)


def update_std(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), x.std(axes_of(x)), factor)


def update_none_as_default(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 0.1 if momentum is None else momentum
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x)), factor)


def update_none_counts_twice(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / (num_batches_tracked + 1) if momentum is None else momentum
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x)), factor)


def update_none_no_update(running_mean, running_var, x, momentum, num_batches_tracked):
    if momentum is None:
        return running_mean, running_var
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x)), momentum)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (update_tf_style, "TF/Keras-style momentum"),
        (update_biased, "running_var fed the biased batch variance"),
        (update_unbiased_with_batch_size, "uses m = N, the batch size"),
        (update_std, "standard deviation instead of the variance"),
        (update_none_as_default, "momentum=None treated as the default 0.1"),
        (update_none_counts_twice, r"not 1 / \(num_batches_tracked \+ 1\)"),
        (update_none_no_update, "momentum=None treated as 'no update'"),
    ],
)
def test_running_stats_update_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("running-stats-update", wrong)


def test_batchnorm_modes_accepts_torchs_own_function():
    check("batchnorm-modes", torch.nn.functional.batch_norm)


def normalize(x, mean, var, weight, bias, eps):
    s = shape_of(x)
    return (x - mean.view(s)) / torch.sqrt(var.view(s) + eps) * weight.view(s) + bias.view(s)


def update_in_place(running_mean, running_var, x, momentum, tf_style=False, biased=False):
    mean, var = x.mean(axes_of(x)), x.var(axes_of(x), unbiased=not biased)
    keep = momentum if tf_style else 1 - momentum
    running_mean.mul_(keep).add_((1 - keep) * mean)
    running_var.mul_(keep).add_((1 - keep) * var)


def modes_batch_stats_always(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    if training:
        update_in_place(running_mean, running_var, x, momentum)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_running_stats_always(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    out = normalize(x, running_mean, running_var, weight, bias, eps)
    if training:
        update_in_place(running_mean, running_var, x, momentum)
    return out


def modes_rebinds_instead_of_updating(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    mean, var = x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False)
    if training:
        running_mean = (1 - momentum) * running_mean + momentum * mean  # a new local tensor
        running_var = (1 - momentum) * running_var + momentum * x.var(axes_of(x))
        return normalize(x, mean, var, weight, bias, eps)
    return normalize(x, running_mean, running_var, weight, bias, eps)


def modes_updates_in_eval(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    out = right_batchnorm_modes(
        x, running_mean.clone(), running_var.clone(), weight, bias, training, momentum, eps
    )
    update_in_place(running_mean, running_var, x, momentum)
    return out


def modes_tf_momentum(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    if not training:
        return normalize(x, running_mean, running_var, weight, bias, eps)
    update_in_place(running_mean, running_var, x, momentum, tf_style=True)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_biased_running_var(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    if not training:
        return normalize(x, running_mean, running_var, weight, bias, eps)
    update_in_place(running_mean, running_var, x, momentum, biased=True)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_eps_outside_in_eval(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    if training:
        return right_batchnorm_modes(
            x, running_mean, running_var, weight, bias, training, momentum, eps
        )
    s = shape_of(x)
    return (x - running_mean.view(s)) / (torch.sqrt(running_var.view(s)) + eps) * weight.view(
        s
    ) + bias.view(s)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (modes_batch_stats_always, "batch statistics used in eval mode"),
        (modes_running_stats_always, "running statistics used in training mode"),
        (modes_rebinds_instead_of_updating, "left running_mean and running_var unchanged"),
        (modes_updates_in_eval, "changed running_mean or running_var: in evaluation mode"),
        (modes_tf_momentum, "running_mean after .*TF/Keras-style momentum"),
        (modes_biased_running_var, "running_var after .*biased batch variance"),
        (modes_eps_outside_in_eval, "eps outside the square root"),
    ],
)
def test_batchnorm_modes_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("batchnorm-modes", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (1.15, "unbiased variance"),
        (3.1, "Keras"),
        (2.35, "weights the new batch, and running_var takes the unbiased"),
        (3.3333, "a tenth of the way"),
        (0.3333, "starts at 1"),
        (1.0, "updates the running statistics"),
        (1.25, "from 1, with the unbiased"),
    ],
)
def test_predict_running_var_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-running-var", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        ("ac", "what counts is m"),
        ("bc", "normalizes with them"),
        ("", "fails there too"),
        ("ab", "what counts is m"),
        ("abc", "what counts is m"),
        (["b", "c"], "normalizes with them"),
        ("cd", "the runs are a, b, c"),
        (3, "letters of the runs"),
    ],
)
def test_predict_batch_of_one_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-batch-of-one", wrong)


@pytest.mark.parametrize("right", ["c", "C", " c ", ["c"], {"c"}])
def test_predict_batch_of_one_accepts_the_ways_to_write_c(right):
    check("predict-batch-of-one", right)


RIGHT = {
    "state-sizes": lambda c, affine, track: (2 * c if affine else 0, 2 * c + 1 if track else 0),
    "running-stats-update": right_running_stats_update,
    "batchnorm-modes": right_batchnorm_modes,
    "predict-running-var": 1.2333,
    "predict-batch-of-one": "c",
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
