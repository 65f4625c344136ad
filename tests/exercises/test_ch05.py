"""Chapter 5's exercises, the autograd.Function and the module's forward: right answers pass,
known mistakes are named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import pytest
import torch

from bncourse import torch_bn
from bncourse.checks import CheckFailed, check
from exercise_testing import axes_of, shape_of, standard_tests

CHAPTER = "05_pytorch_module"


class RightBatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        dims, s = axes_of(x), shape_of(x)
        mean = x.mean(dims, keepdim=True)
        inv_std = 1 / torch.sqrt(x.var(dims, keepdim=True, correction=0) + eps)
        xhat = (x - mean) * inv_std
        ctx.save_for_backward(xhat, inv_std, weight)
        return weight.view(s) * xhat + bias.view(s)

    @staticmethod
    def backward(ctx, dout):
        xhat, inv_std, weight = ctx.saved_tensors
        dims, s = axes_of(xhat), shape_of(xhat)
        m = xhat.numel() // xhat.shape[1]
        dbias, dweight = dout.sum(dims), (dout * xhat).sum(dims)
        dx = weight.view(s) * inv_std / m * (m * dout - dbias.view(s) - xhat * dweight.view(s))
        return dx, dweight, dbias, None


def right_module_forward(module, x):
    factor = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:
            factor = 1.0 / float(module.num_batches_tracked)
    use_batch_stats = module.training or module.running_mean is None
    hand_over = not module.training or module.track_running_stats
    return torch_bn.batch_norm(
        x,
        module.running_mean if hand_over else None,
        module.running_var if hand_over else None,
        module.weight,
        module.bias,
        use_batch_stats,
        factor,
        module.eps,
    )


def function_with_backward(dx_of):
    """A Function whose backward computes dx with ``dx_of(dout, xhat, inv_std, weight)``."""

    class BatchNormTrain(RightBatchNormTrain):
        @staticmethod
        def backward(ctx, dout):
            xhat, inv_std, weight = ctx.saved_tensors
            dims = axes_of(xhat)
            dbias, dweight = dout.sum(dims), (dout * xhat).sum(dims)
            return dx_of(dout, xhat, inv_std, weight), dweight, dbias, None

    return BatchNormTrain


def mean_of(a):
    return a.mean(axes_of(a), keepdim=True)


NoMeanPath = function_with_backward(
    lambda dout, xhat, inv_std, w: (
        w.view(shape_of(xhat)) * inv_std * (dout - xhat * mean_of(dout * xhat))
    )
)


NoVariancePath = function_with_backward(
    lambda dout, xhat, inv_std, w: w.view(shape_of(xhat)) * inv_std * (dout - mean_of(dout))
)


class SwappedGradients(RightBatchNormTrain):
    @staticmethod
    def backward(ctx, dout):
        dx, dweight, dbias, _ = RightBatchNormTrain.backward(ctx, dout)
        return dx, dbias, dweight, None


class ForgetsEps(RightBatchNormTrain):
    @staticmethod
    def backward(ctx, dout):
        return RightBatchNormTrain.backward(ctx, dout)[:3]


class UnbiasedForward(RightBatchNormTrain):
    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        dims, s = axes_of(x), shape_of(x)
        inv_std = 1 / torch.sqrt(x.var(dims, keepdim=True) + eps)  # torch's default: unbiased
        xhat = (x - x.mean(dims, keepdim=True)) * inv_std
        ctx.save_for_backward(xhat, inv_std, weight)
        return weight.view(s) * xhat + bias.view(s)


def with_autograd(x, weight, bias, eps=1e-5):
    return torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (NoMeanPath, "dx from .* the mean path is missing"),
        (NoVariancePath, "dx from .* the variance path is missing"),
        (SwappedGradients, "dweight and dbias swapped"),
        (ForgetsEps, r"incorrect number of gradients.*\(dx, dweight, dbias, None\)"),
        (UnbiasedForward, "the output of .*unbiased variance"),
        (with_autograd, "has grad_fn NativeBatchNormBackward0: autograd recorded"),
    ],
)
def test_autograd_function_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("autograd-function", wrong)


def module_forward_with(
    *, factor_of=None, count=True, count_always=False, batch_stats_of=None, hand_over_of=None
):
    """The right module forward with one decision replaced, the way a learner gets it wrong."""

    def forward(module, x):
        if count_always or (count and module.training and module.track_running_stats):
            module.num_batches_tracked.add_(1)
        if factor_of is not None:
            factor = factor_of(module)
        else:
            factor = module.momentum
            if module.momentum is None:
                factor = 1.0 / float(module.num_batches_tracked) if module.training else 0.0
        use_batch_stats = (batch_stats_of or (lambda m: m.training or m.running_mean is None))(
            module
        )
        hand_over = (hand_over_of or (lambda m: not m.training or m.track_running_stats))(module)
        return torch_bn.batch_norm(
            x,
            module.running_mean if hand_over else None,
            module.running_var if hand_over else None,
            module.weight,
            module.bias,
            use_batch_stats,
            factor,
            module.eps,
        )

    return forward


def count_after_factor(module, x):
    factor = module.momentum
    if module.training and module.track_running_stats:
        if module.momentum is None:
            factor = 1.0 / float(module.num_batches_tracked)  # before counting this batch
        module.num_batches_tracked.add_(1)
    return torch_bn.batch_norm(
        x,
        module.running_mean,
        module.running_var,
        module.weight,
        module.bias,
        module.training or module.running_mean is None,
        factor or 0.0,
        module.eps,
    )


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (module_forward_with(factor_of=lambda m: m.momentum), "momentum=None reached batch_norm"),
        (
            module_forward_with(factor_of=lambda m: 0.1 if m.momentum is None else m.momentum),
            "momentum=None treated as the default 0.1",
        ),
        (count_after_factor, "must count this batch too"),
        (module_forward_with(count=False), "num_batches_tracked not incremented"),
        (module_forward_with(count_always=True), "num_batches_tracked incremented in eval mode"),
        (module_forward_with(batch_stats_of=lambda m: True), "batch statistics used in eval mode"),
        (
            module_forward_with(batch_stats_of=lambda m: False),
            "running statistics used in training mode",
        ),
        (
            module_forward_with(batch_stats_of=lambda m: m.training),
            "evaluation normalizes with the batch's statistics: pass training=True",
        ),
        (
            module_forward_with(factor_of=lambda m: 1 - m.momentum if m.momentum else 0.0),
            "TF/Keras-style momentum",
        ),
    ],
)
def test_module_forward_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("module-forward", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (0.0, "'no update'"),
        (1.422, "the default 0.1"),
        (9.0, "keep the last batch"),
        (3.75, "the initial 0 is not averaged in"),
        (28.75, "neither updates running_mean nor counts"),
        (100.0, "leaves it alone"),
        (5.1, "plain average of the training batches"),
        ("5", "should be a number"),
    ],
)
def test_predict_cumulative_mean_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-cumulative-mean", wrong)


def test_predict_cumulative_mean_tolerance_includes_its_edge():
    """Tolerance 1e-3, edge included: 4.999 is 1.0000000000000334e-3 from 5 in floats."""
    check("predict-cumulative-mean", 4.999)
    check("predict-cumulative-mean", 5.001)
    for outside in (4.9989, 5.0011):
        with pytest.raises(CheckFailed, match="but the answer is 5"):
            check("predict-cumulative-mean", outside)


def test_predict_cumulative_mean_is_what_both_modules_hold():
    """The checker's answer is what nn.BatchNorm1d computes for the cell's calls."""
    from bncourse.exercises.ch05 import CUMULATIVE_BATCH_MEANS, CUMULATIVE_EVAL_MEAN

    module = torch.nn.BatchNorm1d(1, momentum=None, dtype=torch.float64)
    for mean in CUMULATIVE_BATCH_MEANS:
        module(torch.tensor([[mean - 1], [mean + 1]], dtype=torch.float64))
    module.eval()
    module(torch.tensor([[CUMULATIVE_EVAL_MEAN]], dtype=torch.float64))
    check("predict-cumulative-mean", module.running_mean.item())


RIGHT = {
    "predict-cumulative-mean": 5.0,
    "autograd-function": RightBatchNormTrain,
    "module-forward": right_module_forward,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
