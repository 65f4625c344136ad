"""Every checker passes a right answer and fails known-wrong ones with the right diagnosis.

The wrong implementations below are written the way a learner would write them (not taken
from bncourse.misconceptions), so a checker that stops recognising a mistake fails here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bncourse import numpy_bn, torch_bn
from bncourse.checks import EXERCISES, CheckFailed, NotAttempted, check


def axes_of(x):
    return (0,) + tuple(range(2, x.ndim))


def shape_of(x):
    return (1, -1) + (1,) * (x.ndim - 2)


# --------------------------------------------------------------------------------------------
# Right answers
# --------------------------------------------------------------------------------------------
# The right answers are written independently of bncourse's reference implementations (which
# the checkers compare against): with torch.nn.functional, or directly from the formulas.
def right_batch_stats(x):
    axes = (0, *range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes)


def right_forward(x, gamma, beta, eps=1e-5):
    as_tensor = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    out = F.batch_norm(torch.from_numpy(x), None, None, as_tensor(gamma), as_tensor(beta),
                       training=True, eps=eps)
    return out.numpy(), None


def right_backward(dout, x, gamma, eps=1e-5):
    x_t = torch.from_numpy(x).requires_grad_()
    gamma_t = torch.from_numpy(gamma).requires_grad_()
    beta_t = torch.zeros_like(gamma_t, requires_grad=True)
    out = F.batch_norm(x_t, None, None, gamma_t, beta_t, training=True, eps=eps)
    return tuple(g.numpy() for g in torch.autograd.grad(out, (x_t, gamma_t, beta_t), torch.from_numpy(dout)))


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


def right_range_params(x, low, high, eps=1e-5):
    out, _ = numpy_bn.forward_train(x, eps=eps)
    a = axes_of(x)
    gamma = (high - low) / (out.max(a) - out.min(a))
    return gamma, low - gamma * out.min(a)


def right_values_per_statistic(norm, shape, groups=1):
    positions = math.prod(shape[2:])
    return {"batch": shape[0], "layer": shape[1], "group": shape[1] // groups}[norm] * positions


def right_freeze_batchnorm(model):
    from bncourse.training import freeze_batchnorm

    return freeze_batchnorm(model)


def right_running_stats_update(running_mean, running_var, x, momentum, num_batches_tracked):
    dims = axes_of(x)
    factor = 1 / num_batches_tracked if momentum is None else momentum
    mean, var = x.mean(dims), x.var(dims, correction=1)
    return (1 - factor) * running_mean + factor * mean, (1 - factor) * running_var + factor * var


def right_batchnorm_modes(x, running_mean, running_var, weight, bias, training, momentum=0.1,
                          eps=1e-5):
    return torch_bn.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


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
    return torch_bn.batch_norm(x, module.running_mean if hand_over else None,
                               module.running_var if hand_over else None, module.weight,
                               module.bias, use_batch_stats, factor, module.eps)


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


def right_bn_bytes(shape, itemsize):
    from bncourse.gpu_bench import PASSES

    size = math.prod(shape) * itemsize
    return PASSES["forward"] * size, (PASSES["forward+backward"] - PASSES["forward"]) * size


def right_welford_update(count, mean, m2, x):
    count += 1
    delta = x - mean
    mean = mean + delta / count
    return count, mean, m2 + delta * (x - mean)


def right_tile_partials(values, tile):
    from bncourse.distributed import local_stats

    parts = [local_stats(torch.from_numpy(values[i:i + tile]).reshape(-1, 1))
             for i in range(0, len(values), tile)]
    return tuple(torch.stack([part[k].reshape(()) for part in parts]).numpy() for k in range(3))


RIGHT = {
    "standardize": lambda x: (x - x.mean(0)) / x.std(0),
    "extreme-batch": lambda m: np.r_[np.zeros(m - 1), 5.0],
    "expected-std": lambda n, c: math.sqrt(n * c / (n * c - 1)),
    "numpy-batch-stats": right_batch_stats,
    "numpy-forward": right_forward,
    "numpy-backward": right_backward,
    "numerical-gradient": right_numerical_gradient,
    "identity-params": lambda running_mean, running_var, eps=1e-5: (np.sqrt(running_var + eps), running_mean),
    "samuelson-bound": lambda m, ddof=0: (m - 1) / math.sqrt(m) if ddof else math.sqrt(m - 1),
    "output-range": right_range_params,
    "values-per-statistic": right_values_per_statistic,
    "freeze-batchnorm": right_freeze_batchnorm,
    "state-sizes": lambda c, affine, track: (2 * c if affine else 0, 2 * c + 1 if track else 0),
    "running-stats-update": right_running_stats_update,
    "batchnorm-modes": right_batchnorm_modes,
    "autograd-function": RightBatchNormTrain,
    "module-forward": right_module_forward,
    "chan-merge": right_merge_stats,
    "fold-batchnorm": right_fold_bn,
    "group-norm": right_group_norm,
    "bn-bytes": right_bn_bytes,
    "welford-update": right_welford_update,
    "tile-partials": right_tile_partials,
}


def test_every_exercise_has_a_right_answer_here():
    assert set(RIGHT) == set(EXERCISES)


@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_right_answers_pass_with_one_line(exercise_id, capsys):
    check(exercise_id, RIGHT[exercise_id])
    out = capsys.readouterr().out
    assert out.startswith(f"✔ {exercise_id} passed: ") and out.count("\n") == 1


def test_forward_may_return_only_the_output():
    check("numpy-forward", lambda x, g, b, eps=1e-5: numpy_bn.forward_train(x, g, b, eps)[0])


@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_a_stub_is_not_attempted(exercise_id):
    def stub(*args, **kwargs):
        raise NotImplementedError("write your solution here")

    with pytest.raises(NotAttempted, match=f"^{exercise_id}: not attempted yet"):
        check(exercise_id, stub)


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)
    assert issubclass(NotAttempted, CheckFailed)


def test_a_crash_is_reported_as_a_failure():
    def crashes(x, gamma, beta, eps=1e-5):
        return x.mean(axis=7)

    with pytest.raises(CheckFailed, match="numpy-forward: your function raised AxisError"):
        check("numpy-forward", crashes)


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(KeyError, match="known ids: .*numpy-forward"):
        check("numpy-forwards", right_forward)


# --------------------------------------------------------------------------------------------
# Forward pass: one wrong implementation per misconception
# --------------------------------------------------------------------------------------------
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
    return right_forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64), eps)[0]


def forward_flattened(x, gamma, beta, eps=1e-5):
    return right_forward(x, gamma, beta, eps)[0].reshape(x.shape[0], -1)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (forward_unbiased, "unbiased variance"),
        (forward_axis0, r"wrong reduction axes: statistics over axes \(0\) instead of \(0, 2\)"),
        (forward_per_sample, r"wrong reduction axes: statistics over axes \(1\) instead of \(0\); axis 1 holds the channels"),
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


# --------------------------------------------------------------------------------------------
# Batch statistics
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda x: (x.mean(axes_of(x)), x.var(axes_of(x), ddof=1)), "the variance from .* unbiased variance"),
        (lambda x: (x.mean(axes_of(x)), x.std(axes_of(x))), "standard deviation instead of variance"),
        (lambda x: (x.mean(0), x.var(0)), r"shape \(3, 5\), expected \(3,\).*wrong reduction axes: statistics over axes \(0\)"),
        (lambda x: (x.mean(axes_of(x), keepdims=True), x.var(axes_of(x), keepdims=True)), "keepdims=True"),
        (lambda x: (x.mean(1), x.var(1)), r"shape \(6,\), expected \(4,\).*axes \(1\) instead of \(0\)"),
        (lambda x: x.mean(axes_of(x)), r"should return a tuple \(mean, var\), got a ndarray"),
    ],
)
def test_batch_stats_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("numpy-batch-stats", wrong)


# --------------------------------------------------------------------------------------------
# Backward pass
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Chapter 1 and central differences
# --------------------------------------------------------------------------------------------
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
        (lambda m: np.r_[np.zeros(m - 2), 1.0, 1.0] if m > 2 else np.array([0.0, 1.0]),
         r"for m=5 the largest \|xhat\| of your batch is 1.2247.*put all the spread in one value"),
        (lambda m: np.ones(m), "constant"),
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
        (lambda n, c: "1.0171", None),
    ],
)
def test_expected_std_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis or "expected_std"):
        check("expected-std", wrong)


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


# --------------------------------------------------------------------------------------------
# Chapter 4: parameters and buffers, running statistics, train and eval
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda c, a, t: (2 * c * a + 2 * c * t, int(t)), "running_mean and running_var counted as learnable"),
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
        return factor * running_mean + (1 - factor) * mean, factor * running_var + (1 - factor) * var
    return (1 - factor) * running_mean + factor * mean, (1 - factor) * running_var + factor * var


def update_tf_style(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    return stats_update(running_mean, running_var, x.mean(axes_of(x)), x.var(axes_of(x)),
                        factor, tf_style=True)


def update_biased(running_mean, running_var, x, momentum, num_batches_tracked):
    factor = 1 / num_batches_tracked if momentum is None else momentum
    return stats_update(running_mean, running_var, x.mean(axes_of(x)),
                        x.var(axes_of(x), unbiased=False), factor)


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


def modes_batch_stats_always(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    if training:
        update_in_place(running_mean, running_var, x, momentum)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_running_stats_always(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    out = normalize(x, running_mean, running_var, weight, bias, eps)
    if training:
        update_in_place(running_mean, running_var, x, momentum)
    return out


def modes_rebinds_instead_of_updating(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    mean, var = x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False)
    if training:
        running_mean = (1 - momentum) * running_mean + momentum * mean  # a new local tensor
        running_var = (1 - momentum) * running_var + momentum * x.var(axes_of(x))
        return normalize(x, mean, var, weight, bias, eps)
    return normalize(x, running_mean, running_var, weight, bias, eps)


def modes_updates_in_eval(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    out = right_batchnorm_modes(x, running_mean.clone(), running_var.clone(), weight, bias,
                                training, momentum, eps)
    update_in_place(running_mean, running_var, x, momentum)
    return out


def modes_tf_momentum(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    if not training:
        return normalize(x, running_mean, running_var, weight, bias, eps)
    update_in_place(running_mean, running_var, x, momentum, tf_style=True)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_biased_running_var(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    if not training:
        return normalize(x, running_mean, running_var, weight, bias, eps)
    update_in_place(running_mean, running_var, x, momentum, biased=True)
    return normalize(x, x.mean(axes_of(x)), x.var(axes_of(x), unbiased=False), weight, bias, eps)


def modes_eps_outside_in_eval(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    if training:
        return right_batchnorm_modes(x, running_mean, running_var, weight, bias, training, momentum, eps)
    s = shape_of(x)
    return (x - running_mean.view(s)) / (torch.sqrt(running_var.view(s)) + eps) * weight.view(s) + bias.view(s)


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


# --------------------------------------------------------------------------------------------
# Chapter 5: the autograd.Function and the module's forward
# --------------------------------------------------------------------------------------------
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
    lambda dout, xhat, inv_std, w: w.view(shape_of(xhat)) * inv_std * (dout - xhat * mean_of(dout * xhat)))
NoVariancePath = function_with_backward(
    lambda dout, xhat, inv_std, w: w.view(shape_of(xhat)) * inv_std * (dout - mean_of(dout)))


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


def module_forward_with(*, factor_of=None, count=True, count_always=False, batch_stats_of=None,
                        hand_over_of=None):
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
        use_batch_stats = (batch_stats_of or (lambda m: m.training or m.running_mean is None))(module)
        hand_over = (hand_over_of or (lambda m: not m.training or m.track_running_stats))(module)
        return torch_bn.batch_norm(x, module.running_mean if hand_over else None,
                                   module.running_var if hand_over else None, module.weight,
                                   module.bias, use_batch_stats, factor, module.eps)

    return forward


def count_after_factor(module, x):
    factor = module.momentum
    if module.training and module.track_running_stats:
        if module.momentum is None:
            factor = 1.0 / float(module.num_batches_tracked)  # before counting this batch
        module.num_batches_tracked.add_(1)
    return torch_bn.batch_norm(x, module.running_mean, module.running_var, module.weight,
                               module.bias, module.training or module.running_mean is None,
                               factor or 0.0, module.eps)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (module_forward_with(factor_of=lambda m: m.momentum), "momentum=None reached batch_norm"),
        (module_forward_with(factor_of=lambda m: 0.1 if m.momentum is None else m.momentum),
         "momentum=None treated as the default 0.1"),
        (count_after_factor, "must count this batch too"),
        (module_forward_with(count=False), "num_batches_tracked not incremented"),
        (module_forward_with(count_always=True), "num_batches_tracked incremented in eval mode"),
        (module_forward_with(batch_stats_of=lambda m: True), "batch statistics used in eval mode"),
        (module_forward_with(batch_stats_of=lambda m: False), "running statistics used in training mode"),
        (module_forward_with(batch_stats_of=lambda m: m.training),
         "evaluation normalizes with the batch's statistics: pass training=True"),
        (module_forward_with(factor_of=lambda m: 1 - m.momentum if m.momentum else 0.0),
         "TF/Keras-style momentum"),
    ],
)
def test_module_forward_mistakes(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("module-forward", wrong)


# --------------------------------------------------------------------------------------------
# Chapter 6: identity parameters, Samuelson's bound, any output range
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv), rm), "gamma from .* eps missing"),
        (lambda rm, rv, eps=1e-5: (rm, np.sqrt(rv + eps)), "gamma from .* gamma and beta swapped"),
        (lambda rm, rv, eps=1e-5: (rv + eps, rm), "not a variance"),
        (lambda rm, rv, eps=1e-5: (1 / np.sqrt(rv + eps), rm), "gamma is the inverse"),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + 1e-5), rm), r"eps=0.001.*the eps argument is ignored"),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), -rm), "beta from .* wrong sign"),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), np.zeros_like(rm)), "beta = 0 does not put the mean back"),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps), rm, None), r"should return a tuple \(gamma, beta\), got a tuple of 3"),
        (lambda rm, rv, eps=1e-5: (np.sqrt(rv + eps).astype(np.float32), rm), "dtype float32, expected float64"),
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
        (range_params_from(lambda x, a, eps: (x - x.mean(a, keepdims=True)) / np.sqrt(x.var(a, keepdims=True, ddof=1) + eps)),
         "unbiased variance"),
        (range_params_from(lambda x, a, eps: (x - x.mean(a, keepdims=True)) / x.std(a, keepdims=True)), "eps missing"),
        (lambda x, low, high, eps=1e-5: right_range_params(x, low, high, eps)[::-1], "gamma and beta swapped"),
        (lambda x, low, high, eps=1e-5: (high - low, low), "is wrong"),
        (lambda x, low, high, eps=1e-5: tuple(v.reshape(1, -1) for v in right_range_params(x, low, high, eps)),
         r"gamma from .* has shape \(1, 3\), expected \(3,\)"),
    ],
)
def test_output_range_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("output-range", wrong)


def test_output_range_accepts_the_mirrored_answer():
    """A negative gamma maps the largest value to low and the smallest to high: also right."""

    def mirrored(x, low, high, eps=1e-5):
        out, _ = numpy_bn.forward_train(x, eps=eps)
        a = axes_of(x)
        gamma = -(high - low) / (out.max(a) - out.min(a))
        return gamma, high - gamma * out.min(a)

    check("output-range", mirrored)


# --------------------------------------------------------------------------------------------
# Chapter 7: values per statistic, freezing BatchNorm
# --------------------------------------------------------------------------------------------
def per_statistic_with(norm_changed, value):
    def values_per_statistic(norm, shape, groups=1):
        if norm == norm_changed:
            return value(shape, groups)
        return right_values_per_statistic(norm, shape, groups)

    return values_per_statistic


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (per_statistic_with("batch", lambda s, g: s[0]), r"\('batch', \(2, 8, 8, 8\).*= 2, expected 128.*not N"),
        (per_statistic_with("batch", lambda s, g: math.prod(s)), "the channels are not pooled"),
        (per_statistic_with("layer", lambda s, g: s[1]), "LayerNorm over \\(C, H, W\\) also reduces over the spatial"),
        (per_statistic_with("layer", lambda s, g: math.prod(s)), "LayerNorm keeps one statistic per sample"),
        (per_statistic_with("group", lambda s, g: g * math.prod(s[2:])), "groups is the number of groups"),
        (per_statistic_with("group", lambda s, g: math.prod(s[1:])), "the groups were ignored"),
        (per_statistic_with("group", lambda s, g: s[0] * s[1] // g * math.prod(s[2:])), "GroupNorm keeps statistics per sample"),
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
        (freeze_with_zero_momentum, "still in training mode, so it normalizes with batch statistics"),
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


# --------------------------------------------------------------------------------------------
# Chapter 9: Chan's merge, folding BatchNorm, GroupNorm
# --------------------------------------------------------------------------------------------
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
        (lambda *args, **kwargs: right_fold_bn(*args, **kwargs)[0], r"should return a tuple \(weight, bias\)"),
    ],
)
def test_fold_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("fold-batchnorm", wrong)


def group_norm_over(view_of, axes_of_view, ddof=0):
    def group_norm(x, groups, eps=1e-5):
        v = view_of(x, groups)
        axes = axes_of_view(v)
        out = (v - v.mean(axis=axes, keepdims=True)) / np.sqrt(v.var(axis=axes, keepdims=True, ddof=ddof) + eps)
        return out.reshape(x.shape)

    return group_norm


grouped = lambda x, g: x.reshape(x.shape[0], g, x.shape[1] // g, *x.shape[2:])  # noqa: E731
interleaved = lambda x, g: x.reshape(x.shape[0], x.shape[1] // g, g, *x.shape[2:])  # noqa: E731


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (group_norm_over(interleaved, lambda v: (1, *range(3, v.ndim))), "the groups interleave the channels"),
        (group_norm_over(grouped, lambda v: (0, *range(2, v.ndim))), "the batch axis is reduced too"),
        (group_norm_over(lambda x, g: x, lambda v: tuple(range(2, v.ndim))), r"statistics per channel \(InstanceNorm\)"),
        (group_norm_over(lambda x, g: x, lambda v: tuple(range(1, v.ndim))), r"the groups are ignored \(LayerNorm\)"),
        (group_norm_over(grouped, lambda v: tuple(range(2, v.ndim)), ddof=1), "unbiased variance"),
    ],
)
def test_group_norm_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("group-norm", wrong)


# --------------------------------------------------------------------------------------------
# Chapter 8: bytes moved, Welford's update, per-tile partials
# --------------------------------------------------------------------------------------------
def bytes_one_pass_forward(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 2 * n, 5 * n  # "read it, write it"


def bytes_without_dx_write(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 4 * n


def bytes_backward_reads_once(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 3 * n


def bytes_backward_with_forward(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 8 * n


def bytes_in_values(shape, itemsize):
    n = math.prod(shape)
    return 3 * n, 5 * n


def bytes_in_bits(shape, itemsize):
    n = math.prod(shape) * itemsize * 8
    return 3 * n, 5 * n


def bytes_per_sample_and_channel(shape, itemsize):
    n = shape[0] * shape[1] * itemsize
    return 3 * n, 5 * n


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (bytes_one_pass_forward, "the forward reads the input twice"),
        (bytes_without_dx_write, "dx is written too"),
        (bytes_backward_reads_once, "x and dy are each read twice"),
        (bytes_backward_with_forward, "that counts the forward too"),
        (bytes_in_values, "a count of values, not of bytes"),
        (bytes_in_bits, "bits, not bytes"),
        (bytes_per_sample_and_channel, "all N \\* C \\* H \\* W of them"),
        (lambda shape, itemsize: 3 * math.prod(shape) * itemsize, "should return a tuple"),
    ],
)
def test_bn_bytes_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("bn-bytes", wrong)


def welford_not_counting(count, mean, m2, x):
    new_count, new_mean, new_m2 = right_welford_update(count, mean, m2, x)
    return count, new_mean, new_m2


def welford_old_count(count, mean, m2, x):
    delta = x - mean
    mean = mean + delta / max(count, 1)
    return count + 1, mean, m2 + delta * (x - mean)


def welford_average(count, mean, m2, x):
    new_mean = (mean + x) / 2
    return count + 1, new_mean, m2 + (x - mean) * (x - new_mean)


def welford_delta_squared(count, mean, m2, x):
    delta = x - mean
    return count + 1, mean + delta / (count + 1), m2 + delta * delta


def welford_new_deviation_squared(count, mean, m2, x):
    mean = mean + (x - mean) / (count + 1)
    return count + 1, mean, m2 + (x - mean) ** 2


def welford_sum_of_squares(count, mean, m2, x):
    return count + 1, mean + (x - mean) / (count + 1), m2 + x * x


def welford_variance(count, mean, m2, x):
    new_count, new_mean, new_m2 = right_welford_update(count, mean, m2, x)
    return new_count, new_mean, new_m2 / new_count


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (welford_not_counting, "the count must grow by one"),
        (welford_old_count, "divides by the new count"),
        (welford_average, "not the average of the old mean and x"),
        (welford_delta_squared, r"not \(x - old mean\)\^2"),
        (welford_new_deviation_squared, r"not \(x - new mean\)\^2"),
        (welford_sum_of_squares, "not a sum of squares"),
        (welford_variance, "M2 is the sum, not the variance"),
    ],
)
def test_welford_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("welford-update", wrong)


def tiles_of(values, tile):
    return [values[i:i + tile] for i in range(0, len(values), tile)]


def tile_partials_full_counts(values, tile):
    _, means, m2s = right_tile_partials(values, tile)
    return np.full(len(means), tile), means, m2s


def tile_partials_dropping_the_tail(values, tile):
    usable = values[: len(values) // tile * tile].reshape(-1, tile)
    mean = usable.mean(1)
    return np.full(len(usable), tile), mean, ((usable - mean[:, None]) ** 2).sum(1)


def tile_partials_sum_over_tile(values, tile):
    counts, _, m2s = right_tile_partials(values, tile)
    return counts, np.array([t.sum() / tile for t in tiles_of(values, tile)]), m2s


def tile_partials_global_mean(values, tile):
    counts, _, m2s = right_tile_partials(values, tile)
    return counts, np.full(len(counts), values.mean()), m2s


def tile_partials_variance(values, tile):
    tiles = tiles_of(values, tile)
    return (np.array([len(t) for t in tiles]), np.array([t.mean() for t in tiles]),
            np.array([t.var() for t in tiles]))


def tile_partials_global_deviations(values, tile):
    tiles = tiles_of(values, tile)
    return (np.array([len(t) for t in tiles]), np.array([t.mean() for t in tiles]),
            np.array([((t - values.mean()) ** 2).sum() for t in tiles]))


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (tile_partials_full_counts, "count the values it really holds"),
        (tile_partials_dropping_the_tail, "the last, shorter tile was dropped"),
        (tile_partials_sum_over_tile, "divided by the tile size"),
        (tile_partials_global_mean, "every tile got the mean of all values"),
        (tile_partials_variance, "not the variance"),
        (tile_partials_global_deviations, "the tile's own mean"),
    ],
)
def test_tile_partials_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("tile-partials", wrong)

