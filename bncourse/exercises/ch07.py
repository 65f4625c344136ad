"""Chapter 7, BatchNorm in training: which small-batch runs fail, how many values behind a
statistic, freezing BatchNorm."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .base import CheckFailed, Mistakes, compare_letters, compare_number, exercise, prediction

CHAPTER = "07_bn_in_training"


# --------------------------------------------------------------------------------------------
# predict-small-batch-runs: which runs of the batch-size sweep fail
# --------------------------------------------------------------------------------------------
SMALL_BATCH_RUNS = {
    "a": "BatchNorm, batches of 2",
    "b": "LayerNorm, batches of 2",
    "c": "GroupNorm (4 groups), batches of 2",
    "d": "no normalization, batches of 2",
    "e": "BatchNorm, batches of 8",
}
SMALL_BATCH_WHY = {
    "a": "with 2 values per statistic every normalized value is -1 or +1 (Samuelson's "
    "bound): BatchNorm passes on only which of the two samples is larger",
    "b": "LayerNorm normalizes each sample over its own features: it computes nothing over "
    "the batch, so batches of 2 do not degrade it",
    "c": "GroupNorm normalizes each sample over its own groups of features: it computes "
    "nothing over the batch, so batches of 2 do not degrade it",
    "d": "without normalization nothing is estimated from the batch: small batches make the "
    "gradient noisier (the learning rate is scaled down with them), not the layers' inputs "
    "degenerate",
    "e": "8 values per statistic are enough here: with batches of 8 BatchNorm is the best of "
    "the four normalizations",
}


@prediction(
    "predict-small-batch-runs",
    chapter=CHAPTER,
    title="Predict which small-batch runs fail",
    signature="predicted_failing_runs: the letters of the runs below 0.6, such as "
    '"ab" ("" for none)',
)
def check_predict_small_batch_runs(predicted_failing_runs: Any) -> str:
    # Exact: a set of letters. The first wrong letter names its misconception.
    compare_letters(
        "predicted_failing_runs",
        predicted_failing_runs,
        SMALL_BATCH_RUNS,
        {"a"},
        SMALL_BATCH_WHY,
        ("ends below 0.6", "learns"),
    )
    return "only a fails: 2 values per statistic are degenerate, and only BatchNorm has them"


# --------------------------------------------------------------------------------------------
# values_per_statistic: m for BatchNorm, LayerNorm and GroupNorm
# --------------------------------------------------------------------------------------------
PER_STATISTIC = Mistakes()  # arguments: (norm, shape, groups)


@PER_STATISTIC.add(
    "BatchNorm also reduces over every spatial position: m = N * H * W (times any "
    "other spatial axes), not N"
)
def batch_without_positions(norm, shape, groups):
    return shape[0] if norm == "batch" else None


@PER_STATISTIC.add(
    "BatchNorm keeps one statistic per channel: the channels are not pooled, "
    "m = N * H * W, not N * C * H * W"
)
def batch_pooling_channels(norm, shape, groups):
    return math.prod(shape) if norm == "batch" else None


@PER_STATISTIC.add(
    "LayerNorm over (C, H, W) also reduces over the spatial positions: m = C * H * W"
)
def layer_without_positions(norm, shape, groups):
    return shape[1] if norm == "layer" else None


@PER_STATISTIC.add("LayerNorm keeps one statistic per sample: the batch is not pooled")
def layer_pooling_the_batch(norm, shape, groups):
    return math.prod(shape) if norm == "layer" else None


@PER_STATISTIC.add(
    "groups is the number of groups, not the channels per group: a group holds C // groups channels"
)
def group_size_as_the_count(norm, shape, groups):
    return groups * math.prod(shape[2:]) if norm == "group" else None


@PER_STATISTIC.add(
    "the groups were ignored: GroupNorm(groups, C) reduces over C // groups channels"
)
def group_ignored(norm, shape, groups):
    return shape[1] * math.prod(shape[2:]) if norm == "group" else None


@PER_STATISTIC.add("GroupNorm keeps statistics per sample: the batch is not pooled")
def group_pooling_the_batch(norm, shape, groups):
    return shape[0] * (shape[1] // groups) * math.prod(shape[2:]) if norm == "group" else None


@exercise(
    "values-per-statistic",
    chapter=CHAPTER,
    title="How many values behind each statistic?",
    signature="values_per_statistic(norm, shape, groups=1) -> int, norm in 'batch', 'layer', "
    "'group'",
)
def check_values_per_statistic(values_per_statistic: Callable[..., Any]) -> str:
    cases = [
        ("batch", (2, 64), 1, 2),
        ("batch", (2, 8, 8, 8), 1, 128),
        ("batch", (5, 3, 7), 1, 35),
        ("layer", (2, 64), 1, 64),
        ("layer", (4, 16, 4, 4), 1, 256),
        ("group", (2, 64), 4, 16),
        ("group", (3, 16, 4, 4), 4, 64),
        ("group", (8, 6, 5), 2, 15),
    ]
    for norm, shape, groups, right in cases:
        compare_number(
            f"values_per_statistic({norm!r}, {shape}, groups={groups})",
            values_per_statistic(norm, shape, groups=groups),
            right,
            rtol=0.0,
            mistakes=PER_STATISTIC.answers(norm, shape, groups),
        )
    return "m for BatchNorm, LayerNorm and GroupNorm on (N, C), (N, C, L) and (N, C, H, W) inputs"


# --------------------------------------------------------------------------------------------
# freeze_batchnorm: eval mode and no gradients for the BatchNorm layers only
# --------------------------------------------------------------------------------------------
@exercise(
    "freeze-batchnorm",
    chapter=CHAPTER,
    title="Freeze the BatchNorm layers",
    signature="freeze_batchnorm(model) -> None or model (changes model in place)",
)
def check_freeze_batchnorm(freeze_batchnorm: Callable[..., Any]) -> str:
    import torch

    with torch.random.fork_rng(devices=[]):  # the learner's random state is left as it was
        torch.manual_seed(0)
        return _freeze_batchnorm_checked(freeze_batchnorm)


def _freeze_batchnorm_checked(freeze_batchnorm: Callable[..., Any]) -> str:
    """The checks of ``freeze-batchnorm`` on a small conv + linear model with Dropout."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(6, 2),
    )
    norms = {"BatchNorm2d": model[1], "BatchNorm1d": model[5]}
    others = {"Conv2d": model[0], "Linear": model[4]}
    model.train()
    freeze_batchnorm(model)
    for name, layer in norms.items():
        if layer.training:
            raise CheckFailed(
                f"the {name} layer is still in training mode, so it normalizes with batch "
                f"statistics and keeps updating its running statistics: call .eval() on every "
                f"BatchNorm layer (BatchNorm1d, 2d and 3d)"
            )
        if any(p.requires_grad for p in layer.parameters()):
            raise CheckFailed(
                f"gamma and beta of the {name} layer still get gradients, so fine-tuning "
                f"changes them: eval mode only affects the statistics; also set requires_grad "
                f"to False on its parameters"
            )
    if not model[7].training:
        raise CheckFailed(
            "the Dropout layer is in eval mode too: freeze only the BatchNorm "
            "layers, not the whole model (model.eval() switches every layer)"
        )
    for name, layer in others.items():
        if not all(p.requires_grad for p in layer.parameters()):
            raise CheckFailed(
                f"the {name} layer no longer gets gradients: freeze only the BatchNorm layers"
            )
    # A fine-tuning step: the frozen layers must come out exactly as they went in.
    saved = {
        name: {k: v.clone() for k, v in layer.state_dict().items()} for name, layer in norms.items()
    }
    weight_before = model[4].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 1, 4, 4) * 3 + 1
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, layer in norms.items():
        for key, value in layer.state_dict().items():
            if not torch.equal(value, saved[name][key]):
                raise CheckFailed(f"{name}.{key} changed during a fine-tuning step")
    if torch.equal(model[4].weight, weight_before):
        raise CheckFailed("a fine-tuning step no longer changes the Linear layer's weight")
    return "BatchNorm1d/2d layers in eval mode with frozen gamma and beta; other layers still train"
