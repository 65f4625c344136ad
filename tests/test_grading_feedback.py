"""Issue 15's feedback for learners: the smallest failing batch, the convention probe, two
newly named misconceptions, and answers that reach the judge as plain data only.

Each wrong answer is written the way a learner would write it (never taken from
bncourse.exercises) and checked in this process with ``check`` (the judge runs the same
``judge``)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from bncourse.checks import CheckFailed, check
from bncourse.grading.protocol import ProtocolError, decode, encode


def failure(exercise_id: str, candidate) -> str:
    with pytest.raises(CheckFailed) as raised:
        check(exercise_id, candidate)
    return str(raised.value)


def test_statistics_over_all_values_are_named_and_shrunk_to_two_channels():
    def batch_stats(x):
        return x.mean(), x.var()

    message = failure("numpy-batch-stats", batch_stats)
    assert "statistics over all values instead of per channel" in message
    assert "Smallest failing batch: x of shape (2, 1) =" in message
    assert "your mean: 0.5 (shape ())   expected: [0.5] (shape (1))" in message


def test_a_wrong_forward_is_shown_on_the_smallest_batch():
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
            x.var(axis=axes, ddof=1, keepdims=True) + eps
        )
        return gamma.reshape(shape) * xhat + beta.reshape(shape)

    message = failure("numpy-forward", batchnorm_forward)
    assert "Likely cause: unbiased variance" in message
    assert "Smallest failing batch: x of shape (2, 1) =" in message
    assert "your output =" in message and "expected =" in message


def test_gamma_and_beta_not_reshaped_for_sequences_is_named():
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
            x.var(axis=axes, keepdims=True) + eps
        )
        return gamma * xhat + beta

    message = failure("numpy-forward", batchnorm_forward)
    assert "gamma and beta are not reshaped for (N, C, L)" in message
    assert "(1, C, 1, ...)" in message


def test_the_probe_says_which_convention_a_running_update_follows():
    def update_running_stats(running_mean, running_var, x, momentum, num_batches_tracked):
        dims = [0] + list(range(2, x.ndim))  # Keras/CS231n: momentum weighs the old value
        return (
            momentum * running_mean + (1 - momentum) * x.mean(dim=dims),
            momentum * running_var + (1 - momentum) * x.var(dim=dims, correction=0),
        )

    message = failure("running-stats-update", update_running_stats)
    assert "Which BatchNorm did you write?" in message
    assert "weighs the batch by 0.9" in message and "variance of 2.667" in message
    assert "the Keras/TensorFlow and CS231n convention" in message
    assert "momentum_pytorch = 1 - momentum_keras" in message


def test_the_probe_finds_eps_outside_the_root_in_evaluation_mode():
    def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
        dims = [0] + list(range(2, x.ndim))
        shape = [1, -1] + [1] * (x.ndim - 2)
        if training:
            mean, var = x.mean(dim=dims), x.var(dim=dims, correction=0)
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * x.var(dim=dims, correction=1))
        else:
            mean, var = running_mean, running_var
        xhat = (x - mean.view(shape)) / (torch.sqrt(var.view(shape)) + eps)
        return weight.view(shape) * xhat + bias.view(shape)

    message = failure("batchnorm-modes", batch_norm)
    assert "That is PyTorch's own convention." in message
    assert "your eps is outside the square root" in message


def test_answers_reach_the_judge_as_plain_data_only():
    """What the sandbox sends is rebuilt from numbers: an array subclass that always agrees
    arrives as a plain ndarray, a tensor subclass as a plain tensor; an object (a pickle) or
    an array of objects is refused, and nothing is unpickled on the judge's side."""

    class Agree(np.ndarray):
        def __eq__(self, other):
            return np.ones(np.shape(self), dtype=bool)

        def __array_function__(self, func, types, args, kwargs):
            return True

    class Sneaky(torch.Tensor):
        pass

    lying = np.zeros(3).view(Agree)
    assert np.allclose(lying, np.ones(3)) is True  # what a checker holding it would believe
    blobs: list[bytes] = []
    tree = encode((lying, [np.float64(2.0)], {"k": 3}, torch.zeros(2).as_subclass(Sneaky)), blobs)
    answer = decode(tree, blobs, trusted=True)
    assert type(answer[0]) is np.ndarray and not np.allclose(answer[0], np.ones(3))
    assert answer[1] == [2.0] and answer[2] == {"k": 3} and type(answer[3]) is torch.Tensor
    stats = collections.namedtuple("Stats", "mean var")(np.zeros(2), np.ones(2))
    mean, var = decode(encode(stats, blobs), blobs, trusted=True)  # a right answer's shape
    assert type(mean) is np.ndarray and var.tolist() == [1.0, 1.0]
    with pytest.raises(TypeError):
        encode(np.array([object()]), [])
    pickled: list[bytes] = []
    with pytest.raises(ProtocolError):  # a pickle from the sandbox is never loaded
        decode(encode(object(), pickled, pickle_object=True), pickled, trusted=True)
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([object()]), allow_pickle=True)
    with pytest.raises(ProtocolError):
        decode({"$": "ndarray", "blob": 0}, [buffer.getvalue()], trusted=True)
