"""Chapter 4, running statistics: parameters and buffers, one update, training vs evaluation.

The learner works with float64 torch tensors here; answers are compared as NumPy arrays. The
running-statistics mistakes (:data:`RUNNING_STATS`) and the sentences that name the
momentum and evaluation-mode misconceptions serve chapter 5's module exercise too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy_bn
from ..conventions import channel_shape, values_per_channel
from .base import (
    CheckFailed,
    Mistakes,
    as_array,
    compare,
    compare_letters,
    compare_prediction,
    exercise,
    feedback,
    prediction,
    quoted,
    rng,
    tuple_text,
    unpack,
)
from .ch02 import FORWARD, affine

CHAPTER = "04_running_stats"

# One mistake, one name, wherever it shows (here and in chapter 5).
TF_MOMENTUM = (
    "TF/Keras-style momentum: PyTorch computes running = (1 - momentum) * running + "
    "momentum * batch, so momentum=0.1 is the weight of the NEW batch (Keras' momentum=0.99 and "
    "CS231n's 0.9 weigh the OLD value: the opposite convention)"
)
BIASED_RUNNING_VAR = (
    "running_var fed the biased batch variance (divide by m); PyTorch normalizes with the "
    "biased one but stores the unbiased one, var * m / (m - 1), in running_var"
)
UNBIASED_WITH_BATCH_SIZE = (
    "the unbiased correction m / (m - 1) uses m = N, the batch size; m counts every value of "
    "a channel, N * prod(spatial)"
)
NONE_AS_DEFAULT = (
    "momentum=None treated as the default 0.1; None means a cumulative average: "
    "momentum = 1 / num_batches_tracked"
)
NONE_COUNT_BEFORE_BATCH = (
    "momentum=None: 1 / num_batches_tracked must count this batch too (add 1 first), so the "
    "first batch gets weight 1 and batch k gets weight 1/k"
)
NONE_COUNT_TWICE = (
    "momentum=None: num_batches_tracked already counts this batch, so the factor is "
    "1 / num_batches_tracked, not 1 / (num_batches_tracked + 1)"
)
NONE_NO_UPDATE = (
    "momentum=None treated as 'no update'; None means a cumulative average: "
    "momentum = 1 / num_batches_tracked"
)
BATCH_STATS_IN_EVAL = (
    "batch statistics used in eval mode: after model.eval() BatchNorm normalizes with "
    "running_mean and running_var (and leaves them alone)"
)
RUNNING_STATS_IN_TRAINING = (
    "running statistics used in training mode: training normalizes with the batch's own "
    "mean and biased variance (the running statistics are only updated)"
)


def tensor(array: np.ndarray) -> Any:
    """A float64 torch tensor holding a copy of ``array``: what the learner's function gets."""
    import torch

    return torch.from_numpy(np.array(array, dtype=np.float64))


def float64(name: str, value: Any) -> np.ndarray:
    """A learner's tensor (or array) as float64 NumPy, for :func:`compare`."""
    return as_array(name, value).astype(np.float64, copy=False)


# --------------------------------------------------------------------------------------------
# state_sizes: learnable numbers and buffer values of a BatchNorm layer
# --------------------------------------------------------------------------------------------
def state_size_mistakes(c: int, affine: bool, track: bool) -> list[tuple[tuple[int, int], str]]:
    """Wrong ``(learnable, buffer_values)`` answers, in the order they are recognised."""
    right = (2 * c if affine else 0, 2 * c + 1 if track else 0)
    as_parameters = (right[0] + (2 * c if track else 0), 1 if track else 0)
    return [
        (
            (2 * c, 2 * c + 1),
            "affine=False has no weight and bias and track_running_stats=False "
            "no buffers (they are None)",
        ),
        (
            as_parameters,
            "running_mean and running_var counted as learnable: they are buffers, "
            "updated by the forward pass, never by the optimizer",
        ),
        (
            (as_parameters[0], right[1]),
            "running_mean and running_var counted as learnable (and "
            "as buffers): they are buffers only",
        ),
        (
            (right[0], 2 * c if track else 0),
            "num_batches_tracked forgotten: a third buffer, one "
            "int64 that counts the training batches",
        ),
        (
            (2 if affine else 0, 3 if track else 0),
            "tensors counted, not numbers: weight and bias hold C numbers each",
        ),
    ]


@exercise(
    "state-sizes",
    chapter=CHAPTER,
    title="How many numbers BatchNorm learns and how many it stores",
    signature="state_sizes(num_features, affine, track_running_stats) -> "
    "(learnable, buffer_values)",
)
def check_state_sizes(state_sizes: Callable[..., Any]) -> str:
    for c, affine_, track in [
        (3, True, True),
        (64, True, True),
        (3, False, True),
        (3, True, False),
        (5, False, False),
    ]:
        call = f"state_sizes({c}, affine={affine_}, track_running_stats={track})"
        got = unpack(call, state_sizes(c, affine_, track), ("learnable", "buffer_values"))
        try:
            got = tuple(int(v) for v in got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{call} should return two integers, got {quoted(got)}") from None
        right = (2 * c if affine_ else 0, 2 * c + 1 if track else 0)
        if got == right:
            continue
        message = f"{call} = {got}, expected {right}."
        for answer, cause in state_size_mistakes(c, affine_, track):
            if got == answer:  # (the cases before this one passed, so the first match is it)
                raise CheckFailed(f"{message} Likely cause: {cause}.", cause=cause)
        raise CheckFailed(message)
    return "2*C learnable numbers with affine=True; 2*C + 1 buffer values with tracking"


# --------------------------------------------------------------------------------------------
# update_running_stats: one update after a batch
# --------------------------------------------------------------------------------------------
def running_stats_cases() -> list[dict[str, Any]]:
    """Batches for the running-statistics exercises: small (m and m - 1 differ), running
    statistics far from the batch's (so either momentum convention shows), (N, C) and
    (N, C, L), a fixed momentum and momentum=None after a few batches and on the first one."""
    cases = []
    for seed, shape, momentum, tracked in [
        (40, (4, 3), 0.1, 1),
        (41, (3, 2, 4), 0.3, 5),
        (42, (5, 3), None, 3),
        (43, (3, 2, 2), None, 1),
    ]:
        generator = rng(seed)
        c = shape[1]
        view = channel_shape(len(shape))
        x = generator.normal(
            loc=generator.uniform(-3, 3, size=c).reshape(view),
            scale=generator.uniform(0.5, 2.0, size=c).reshape(view),
            size=shape,
        )
        cases.append(
            dict(
                x=x,
                running_mean=generator.uniform(-1, 1, size=c),
                running_var=generator.uniform(0.5, 3.0, size=c),
                momentum=momentum,
                num_batches_tracked=tracked,
            )
        )
    return cases


def _updated(running_mean, running_var, x, factor, batch_var=None):
    """PyTorch's update with momentum ``factor``, fed ``batch_var`` (the biased variance by
    default, which the update turns into the unbiased one)."""
    mean, var = numpy_bn.batch_stats(x)
    return numpy_bn.update_running_stats(
        running_mean,
        running_var,
        mean,
        var if batch_var is None else batch_var,
        values_per_channel(x.shape),
        factor,
        1,
    )


def _factor(momentum: float | None, num_batches_tracked: int) -> float:
    return 1.0 / num_batches_tracked if momentum is None else momentum


RUNNING_STATS = Mistakes()
"""Wrong ``(new_running_mean, new_running_var)`` after one batch; arguments as the exercise's:
``(running_mean, running_var, x, momentum, num_batches_tracked)``, the count including ``x``."""


@RUNNING_STATS.add(TF_MOMENTUM)
def tf_style_momentum(running_mean, running_var, x, momentum, num_batches_tracked):
    return _updated(running_mean, running_var, x, 1 - _factor(momentum, num_batches_tracked))


@RUNNING_STATS.add(BIASED_RUNNING_VAR)
def biased_running_var(running_mean, running_var, x, momentum, num_batches_tracked):
    m = values_per_channel(x.shape)
    biased = numpy_bn.batch_stats(x)[1] * (m - 1) / m  # the update's m / (m - 1) undoes to biased
    return _updated(running_mean, running_var, x, _factor(momentum, num_batches_tracked), biased)


@RUNNING_STATS.add("running_var fed the standard deviation instead of the variance")
def standard_deviation_as_running_var(running_mean, running_var, x, momentum, num_batches_tracked):
    m = values_per_channel(x.shape)
    std = np.sqrt(numpy_bn.batch_stats(x)[1] * m / (m - 1)) * (m - 1) / m
    return _updated(running_mean, running_var, x, _factor(momentum, num_batches_tracked), std)


@RUNNING_STATS.add(UNBIASED_WITH_BATCH_SIZE)
def unbiased_with_the_batch_size(running_mean, running_var, x, momentum, num_batches_tracked):
    n, m = x.shape[0], values_per_channel(x.shape)
    if n == m:
        return None  # (N, C): the batch size is m, the mistake cannot show
    var = numpy_bn.batch_stats(x)[1] * n / (n - 1) * (m - 1) / m
    return _updated(running_mean, running_var, x, _factor(momentum, num_batches_tracked), var)


@RUNNING_STATS.add(NONE_AS_DEFAULT)
def none_as_the_default(running_mean, running_var, x, momentum, num_batches_tracked):
    return _updated(running_mean, running_var, x, 0.1) if momentum is None else None


@RUNNING_STATS.add(NONE_COUNT_TWICE)
def none_counting_this_batch_twice(running_mean, running_var, x, momentum, num_batches_tracked):
    if momentum is not None:
        return None
    return _updated(running_mean, running_var, x, 1.0 / (num_batches_tracked + 1))


@RUNNING_STATS.add(NONE_NO_UPDATE)
def none_as_no_update(running_mean, running_var, x, momentum, num_batches_tracked):
    return (running_mean.copy(), running_var.copy()) if momentum is None else None


def part(mistakes: dict[str, tuple[Any, ...]], index: int) -> dict[str, Any]:
    """``{cause: answer[index]}`` for mistakes whose answers are tuples of several outputs."""
    return {cause: answer[index] for cause, answer in mistakes.items()}


@exercise(
    "running-stats-update",
    chapter=CHAPTER,
    title="One update of the running statistics",
    signature="update_running_stats(running_mean, running_var, x, momentum, "
    "num_batches_tracked) -> (new_mean, new_var), float64 tensors",
)
def check_running_stats_update(update_running_stats: Callable[..., Any]) -> str:
    for case in running_stats_cases():
        x, rm, rv = case["x"], case["running_mean"], case["running_var"]
        momentum, tracked = case["momentum"], case["num_batches_tracked"]
        name = (
            f"update_running_stats for x of shape {tuple_text(x.shape)}, momentum={momentum}, "
            f"num_batches_tracked={tracked}"
        )
        result = update_running_stats(tensor(rm), tensor(rv), tensor(x), momentum, tracked)
        got_mean, got_var = unpack(name, result, ("new_mean", "new_var"))
        right_mean, right_var = _updated(rm, rv, x, _factor(momentum, tracked))
        wrong = RUNNING_STATS.answers(rm, rv, x, momentum, tracked)
        compare(
            f"the running mean from {name}",
            float64("new_mean", got_mean),
            right_mean,
            mistakes=part(wrong, 0),
        )
        compare(
            f"the running variance from {name}",
            float64("new_var", got_var),
            right_var,
            mistakes=part(wrong, 1),
        )
    return (
        "running = (1 - momentum) * running + momentum * batch, unbiased variance, "
        "momentum=None as a cumulative average"
    )


# --------------------------------------------------------------------------------------------
# batch_norm: training and evaluation mode in one function
# --------------------------------------------------------------------------------------------
EVALUATION = Mistakes()
"""Wrong evaluation-mode outputs: ``(x, running_mean, running_var, gamma, beta, eps)``."""


@EVALUATION.add(BATCH_STATS_IN_EVAL)
def batch_statistics_in_evaluation(x, running_mean, running_var, gamma, beta, eps):
    return numpy_bn.forward_train(x, gamma, beta, eps)[0]


@EVALUATION.add("eps outside the square root: use (x - running_mean) / sqrt(running_var + eps)")
def eps_outside_the_root_in_evaluation(x, running_mean, running_var, gamma, beta, eps):
    shape = channel_shape(x.ndim)
    xhat = (x - running_mean.reshape(shape)) / (np.sqrt(running_var.reshape(shape)) + eps)
    return affine(xhat, gamma, beta)


@EVALUATION.add("running_var used as a standard deviation: divide by sqrt(running_var + eps)")
def running_var_as_a_standard_deviation(x, running_mean, running_var, gamma, beta, eps):
    return numpy_bn.forward_eval(x, running_mean, running_var**2, gamma, beta, eps)


@exercise(
    "batchnorm-modes",
    chapter=CHAPTER,
    title="BatchNorm in training and in evaluation mode",
    signature="batch_norm(x, running_mean, running_var, weight, bias, training, "
    "momentum=0.1, eps=1e-5) -> out, updating the running statistics in place",
)
def check_batchnorm_modes(batch_norm: Callable[..., Any]) -> str:
    for case in running_stats_cases()[:2]:
        x, rm, rv, momentum = case["x"], case["running_mean"], case["running_var"], case["momentum"]
        generator = rng(44)
        c = x.shape[1]
        # a low-variance channel, in the batch and in the running statistics: eps matters
        x[:, -1] = 0.5 + 0.01 * generator.normal(size=x[:, -1].shape)
        rm[-1], rv[-1] = 0.5, 1e-4
        gamma, beta = generator.uniform(0.5, 2.0, size=c), generator.uniform(-1.0, 1.0, size=c)
        trained, _ = numpy_bn.forward_train(x, gamma, beta, 1e-5)
        evaluated = numpy_bn.forward_eval(x, rm, rv, gamma, beta, 1e-5)
        new_mean, new_var = _updated(rm, rv, x, momentum)
        for training in (True, False):
            mode = "training" if training else "evaluation"
            name = f"batch_norm in {mode} mode for x of shape {tuple_text(x.shape)}"
            rm_t, rv_t = tensor(rm), tensor(rv)
            out = batch_norm(
                tensor(x),
                rm_t,
                rv_t,
                tensor(gamma),
                tensor(beta),
                training,
                momentum=momentum,
                eps=1e-5,
            )
            if not training:
                compare(
                    f"the output of {name}",
                    float64("out", out),
                    evaluated,
                    mistakes=EVALUATION.answers(x, rm, rv, gamma, beta, 1e-5),
                )
                if not (np.array_equal(rm_t.numpy(), rm) and np.array_equal(rv_t.numpy(), rv)):
                    raise CheckFailed(
                        f"{name} changed running_mean or running_var: in evaluation mode they "
                        f"are read, never updated. Likely cause: {BATCH_STATS_IN_EVAL}.",
                        cause=BATCH_STATS_IN_EVAL,
                    )
                continue
            mistakes = {
                RUNNING_STATS_IN_TRAINING: evaluated,
                RUNNING_STATS_IN_TRAINING
                + " (here the freshly updated ones)": numpy_bn.forward_eval(
                    x, new_mean, new_var, gamma, beta, 1e-5
                ),
                **FORWARD.answers(x, gamma, beta, 1e-5),
            }
            compare(f"the output of {name}", float64("out", out), trained, mistakes=mistakes)
            if np.array_equal(rm_t.numpy(), rm) and np.array_equal(rv_t.numpy(), rv):
                raise CheckFailed(
                    f"{name} left running_mean and running_var unchanged: update them in place "
                    f"(running_mean.mul_(1 - momentum).add_(momentum * mean), or "
                    f"running_mean.copy_(...)); `running_mean = ...` only rebinds a local name, "
                    f"the caller's tensor stays as it was"
                )
            wrong = RUNNING_STATS.answers(rm, rv, x, momentum, 1)
            compare(f"running_mean after {name}", rm_t, new_mean, mistakes=part(wrong, 0))
            compare(f"running_var after {name}", rv_t, new_var, mistakes=part(wrong, 1))
    return "batch statistics and an in-place update in training, running statistics in evaluation"


# --------------------------------------------------------------------------------------------
# Feedback: "which BatchNorm did you write?"
# --------------------------------------------------------------------------------------------
PROBE_X = np.array([[0.0], [2.0], [4.0]])  # one channel: mean 2, variance 8/3 (4 unbiased)
CONVENTIONS = {
    ("new", "unbiased"): "PyTorch's own convention",
    ("new", "biased"): "PyTorch's direction, but with the biased variance",
    ("old", "biased"): (
        "the Keras/TensorFlow and CS231n convention: momentum is the weight of the *old* value, "
        "new = momentum * old + (1 - momentum) * batch (Keras's default momentum 0.99, "
        "CS231n's 0.9), with the biased variance"
    ),
    ("old", "unbiased"): (
        "the Keras/TensorFlow direction (momentum weighs the old value) with the unbiased variance"
    ),
}


def describe_convention(new_mean: float, new_var: float, momentum: float) -> str | None:
    """What an update from running_mean=0, running_var=1 on :data:`PROBE_X` reveals."""
    weight = new_mean / 2.0  # the weight given to the batch's mean (running_mean was 0)
    if weight <= 1e-9 or not np.isfinite(weight):
        return None
    batch_var = (new_var - (1 - weight) * 1.0) / weight
    direction = (
        "new"
        if np.isclose(weight, momentum)
        else "old"
        if np.isclose(weight, 1 - momentum)
        else None
    )
    variance = (
        "unbiased"
        if np.isclose(batch_var, 4.0)
        else "biased"
        if np.isclose(batch_var, 8 / 3)
        else None
    )
    lines = [
        "Which BatchNorm did you write? Probed with running_mean=0, running_var=1, the batch "
        f"x = [0, 2, 4] (mean 2, variance 8/3 biased or 4 unbiased) and momentum={momentum}: "
        f"your update gives new_mean={new_mean:.4g}, new_var={new_var:.4g}, so it weighs the "
        f"batch by {weight:.4g} and feeds it a variance of {batch_var:.4g}."
    ]
    if direction and variance:
        lines.append(f"That is {CONVENTIONS[(direction, variance)]}.")
    if (direction, variance) != ("new", "unbiased"):
        lines.append(
            "PyTorch (this exercise): new = (1 - momentum) * old + momentum * batch, with the "
            "unbiased variance (divide by m - 1). To convert a Keras/CS231n momentum: "
            "momentum_pytorch = 1 - momentum_keras; and var_unbiased = var_biased * m / (m - 1)."
        )
    return " ".join(lines)


@feedback("running-stats-update")
def probe_running_stats_update(update_running_stats: Callable[..., Any]) -> str | None:
    new_mean, new_var = update_running_stats(
        tensor(np.zeros(1)), tensor(np.ones(1)), tensor(PROBE_X), 0.1, 1
    )
    return describe_convention(
        float(float64("new_mean", new_mean)[0]), float(float64("new_var", new_var)[0]), 0.1
    )


@feedback("batchnorm-modes")
def probe_batchnorm_modes(batch_norm: Callable[..., Any]) -> str | None:
    running_mean, running_var = tensor(np.zeros(1)), tensor(np.ones(1))
    batch_norm(
        tensor(PROBE_X),
        running_mean,
        running_var,
        tensor(np.ones(1)),
        tensor(np.zeros(1)),
        True,
        momentum=0.1,
        eps=1e-5,
    )
    text = describe_convention(float(running_mean[0]), float(running_var[0]), 0.1) or ""
    # eps: in evaluation mode with a tiny running variance, inside or outside the root?
    x, small = np.array([[1.0], [-1.0]]), np.full(1, 1e-4)
    out = float64(
        "out",
        batch_norm(
            tensor(x),
            tensor(np.zeros(1)),
            tensor(small),
            tensor(np.ones(1)),
            tensor(np.zeros(1)),
            False,
            momentum=0.1,
            eps=1e-2,
        ),
    )
    if np.isclose(out[0, 0], 1 / (np.sqrt(1e-4) + 1e-2)):
        text += (
            " In evaluation mode your eps is outside the square root (x / (sqrt(var) + eps), "
            "as some hand-written versions do); PyTorch, Keras and CS231n all divide by "
            "sqrt(var + eps)."
        )
    return text.strip() or None


# --------------------------------------------------------------------------------------------
# predict-running-var: before one update is printed
# --------------------------------------------------------------------------------------------
PAIR_VAR = 10.0 / 3.0  # the unbiased variance of 1, 2, 4, 5 (the biased one is 2.5)


@prediction(
    "predict-running-var",
    chapter=CHAPTER,
    title="Predict running_var after one batch",
    signature="predicted_running_var: a number, running_var of the feature 1, 2, 4, 5",
)
def check_predict_running_var(predicted_running_var: Any) -> str:
    # Tolerance 1e-3: 0.9 + 0.1 * 10/3 = 1.2333 worked out by hand to four digits passes; the
    # nearest mistake, the biased variance (1.15), is 0.08 away.
    got = compare_prediction(
        "predicted_running_var",
        predicted_running_var,
        0.9 * 1.0 + 0.1 * PAIR_VAR,
        tolerance=1e-3,
        mistakes={
            "running_var takes the unbiased variance (divide by m - 1 = 3), although the "
            "batch is normalized with the biased one": 0.9 * 1.0 + 0.1 * 2.5,
            "PyTorch's momentum is the weight of the new batch, not of the old value "
            "(Keras' convention)": 0.1 * 1.0 + 0.9 * PAIR_VAR,
            "PyTorch's momentum weights the new batch, and running_var takes the unbiased "
            "variance": 0.1 * 1.0 + 0.9 * 2.5,
            "one batch moves running_var a tenth of the way, it does not replace it": PAIR_VAR,
            "running_var starts at 1, not 0": 0.1 * PAIR_VAR,
            "a forward pass in training mode updates the running statistics": 1.0,
        },
        otherwise="Apply running = 0.9 * running + 0.1 * batch, from 1, with the unbiased variance",
    )
    return f"you predicted {got}: 0.9 * 1 + 0.1 * 10/3, the unbiased variance"


# --------------------------------------------------------------------------------------------
# predict-batch-of-one: which runs with one sample fail
# --------------------------------------------------------------------------------------------
ONE_SAMPLE_RUNS = {
    "a": "nn.BatchNorm2d(3) in training mode on one 2x2 image, shape (1, 3, 2, 2)",
    "b": "nn.BatchNorm1d(3) in eval mode on one sample, shape (1, 3)",
    "c": "nn.BatchNorm1d(3, track_running_stats=False) in eval mode on one sample",
}
ONE_SAMPLE_WHY = {
    "a": "one 2x2 image has 4 values per channel: what counts is m, not the batch size",
    "b": "in eval mode a layer that tracks running statistics normalizes with them, so one "
    "sample is fine",
    "c": "without running statistics eval mode normalizes with the batch's, as training "
    "does, so one sample fails there too",
}


@prediction(
    "predict-batch-of-one",
    chapter=CHAPTER,
    title="Predict which runs with one sample fail",
    signature='predicted_failures: the letters of the runs that raise, such as "ab"',
)
def check_predict_batch_of_one(predicted_failures: Any) -> str:
    # Exact: a set of letters. The first wrong letter names its misconception.
    compare_letters(
        "predicted_failures",
        predicted_failures,
        ONE_SAMPLE_RUNS,
        {"c"},
        ONE_SAMPLE_WHY,
        ("fails", "runs"),
    )
    return "only c fails: eval mode without running statistics computes as in training"
