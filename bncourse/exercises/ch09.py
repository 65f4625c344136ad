"""Chapter 9, beyond one device and beyond BatchNorm: Chan's merge, folding, GroupNorm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..conventions import merge_stats, normalize_over, reduced_axes
from .base import (
    Mistakes,
    Parts,
    compare,
    compare_number,
    compare_prediction,
    exercise,
    prediction,
    rng,
    tuple_text,
    unpack,
)

CHAPTER = "09_beyond_one_device"


# --------------------------------------------------------------------------------------------
# merge_stats: Chan's formula over the processes' (count, mean, M2)
# --------------------------------------------------------------------------------------------
def merge_cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-process ``(counts, means, m2s)`` made from real data, one case with an empty process."""
    cases = []
    for seed, counts in [(70, [2, 5, 3]), (71, [4, 0, 6, 1])]:
        generator = rng(seed)
        parts = [
            generator.normal(
                loc=generator.uniform(-5, 5), scale=generator.uniform(0.5, 2), size=(n, 3)
            )
            for n in counts
        ]
        means = np.array([p.mean(0) if len(p) else np.zeros(3) for p in parts])
        m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(3) for p in parts])
        cases.append((np.array(counts, dtype=np.float64), means, m2s))
    return cases


COUNT, MEAN, M2 = Mistakes(), Mistakes(), Mistakes()  # arguments: (counts, means, m2s)


@COUNT.add("the merged count is the number of processes; it is the number of values, sum(counts)")
def count_of_processes(counts, means, m2s):
    return float(len(counts))


@MEAN.add(
    "the means are averaged without weights: a process with more values must weigh more, "
    "mean = sum(n_k * mean_k) / N"
)
def unweighted_mean(counts, means, m2s):
    return means.mean(0)


@M2.add(
    "M2 misses the between-process term sum(n_k * (mean_k - mean)^2): the parts' means "
    "differ from the global mean"
)
def m2_without_the_between_term(counts, means, m2s):
    return m2s.sum(0)


@M2.add("M2 is the merged sum of squared deviations, not the variance M2 / N")
def m2_as_the_variance(counts, means, m2s):
    total, _, m2 = merge_stats(counts, means, m2s)
    return m2 / total


@M2.add("the between-process term needs the weights n_k: sum(n_k * (mean_k - mean)^2)")
def m2_with_an_unweighted_between_term(counts, means, m2s):
    _, mean, _ = merge_stats(counts, means, m2s)
    return m2s.sum(0) + ((means - mean) ** 2).sum(0)


@exercise(
    "chan-merge",
    chapter=CHAPTER,
    title="Merge per-process statistics with Chan's formula",
    signature="merge_stats(counts, means, m2s) -> (count, mean, m2); counts (P,), means and "
    "m2s (P, C)",
)
def check_chan_merge(candidate: Callable[..., Any]) -> str:
    for counts, means, m2s in merge_cases():
        name = f"merge_stats for counts {counts.astype(int).tolist()}"
        count, mean, m2 = unpack(
            name, candidate(counts.copy(), means.copy(), m2s.copy()), ("count", "mean", "m2")
        )
        right_count, right_mean, right_m2 = merge_stats(counts, means, m2s)
        compare_number(
            f"the count from {name}",
            count,
            float(right_count),
            rtol=0,
            mistakes=COUNT.answers(counts, means, m2s),
        )
        compare(
            f"the mean from {name}", mean, right_mean, mistakes=MEAN.answers(counts, means, m2s)
        )
        compare(f"M2 from {name}", m2, right_m2, mistakes=M2.answers(counts, means, m2s))
    return "count, mean and M2 of the union, also with a process that holds no values"


# --------------------------------------------------------------------------------------------
# fold_bn: an eval-mode BatchNorm folded into the Linear or Conv before it
# --------------------------------------------------------------------------------------------
def fold_cases() -> list[dict[str, np.ndarray]]:
    """A square Linear (so a wrong axis does not fail by shape alone) and a Conv2d weight."""
    cases = []
    for seed, shape in [(72, (4, 4)), (73, (4, 3, 3, 3))]:
        generator = rng(seed)
        out = shape[0]
        cases.append(
            dict(
                weight=generator.normal(size=shape),
                bias=generator.normal(size=out),
                running_mean=generator.normal(size=out) * 2,
                running_var=np.array([4.0, 0.25, 1e-4, 1.0]),  # 1e-4: eps matters
                gamma=generator.uniform(0.5, 2.0, size=out),
                beta=generator.normal(size=out),
            )
        )
    return cases


def folded(weight, bias, running_mean, running_var, gamma, beta, eps, *, scale=None):
    """The right fold, ``(a W, a (b - running_mean) + beta)`` with ``a = gamma / sqrt(running_var
    + eps)`` per output channel (axis 0 of the weight); ``scale`` replaces ``a`` for a mistake."""
    a = gamma / np.sqrt(running_var + eps) if scale is None else scale
    return weight * a.reshape((-1,) + (1,) * (weight.ndim - 1)), a * (bias - running_mean) + beta


def folded_without_eps(weight, bias, running_mean, running_var, gamma, beta):
    """The fold with eps forgotten: ``a = gamma / sqrt(running_var)``."""
    scale = gamma / np.sqrt(running_var)
    return folded(weight, bias, running_mean, running_var, gamma, beta, 0.0, scale=scale)


WEIGHT, BIAS = Mistakes(), Mistakes()  # arguments: the exercise's, (weight, ..., beta, eps)
NO_EPS = "eps missing: the scale is gamma / sqrt(running_var + eps)"


@WEIGHT.add(
    "the weights are scaled along the input channels (axis 1); BatchNorm scales each output "
    "channel, the rows of the weight (axis 0)"
)
def weight_scaled_along_the_inputs(weight, bias, running_mean, running_var, gamma, beta, eps):
    if weight.shape[1] != gamma.shape[0]:
        return None  # only a square weight takes the wrong axis without a shape error
    a = gamma / np.sqrt(running_var + eps)
    return weight * a.reshape((1, -1) + (1,) * (weight.ndim - 2))


@WEIGHT.add(NO_EPS)
def weight_without_eps(weight, bias, running_mean, running_var, gamma, beta, eps):
    return folded_without_eps(weight, bias, running_mean, running_var, gamma, beta)[0]


@WEIGHT.add("the scale divides by the variance; it is gamma / sqrt(running_var + eps)")
def weight_over_the_variance(weight, bias, running_mean, running_var, gamma, beta, eps):
    return folded(
        weight, bias, running_mean, running_var, gamma, beta, eps, scale=gamma / (running_var + eps)
    )[0]


@BIAS.add("the layer's own bias is not scaled: b' = a * (b - running_mean) + beta")
def bias_not_scaled(weight, bias, running_mean, running_var, gamma, beta, eps):
    return bias - gamma / np.sqrt(running_var + eps) * running_mean + beta


@BIAS.add("running_mean is not subtracted: b' = a * (b - running_mean) + beta")
def bias_without_the_mean(weight, bias, running_mean, running_var, gamma, beta, eps):
    return folded(weight, bias, 0 * running_mean, running_var, gamma, beta, eps)[1]


@BIAS.add(NO_EPS)
def bias_without_eps(weight, bias, running_mean, running_var, gamma, beta, eps):
    return folded_without_eps(weight, bias, running_mean, running_var, gamma, beta)[1]


@BIAS.add("beta is missing: b' = a * (b - running_mean) + beta")
def bias_without_beta(weight, bias, running_mean, running_var, gamma, beta, eps):
    return folded(weight, bias, running_mean, running_var, gamma, 0 * beta, eps)[1]


@exercise(
    "fold-batchnorm",
    chapter=CHAPTER,
    title="Fold BatchNorm into the layer before it",
    signature="fold_bn(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5) -> "
    "(weight, bias)",
)
def check_fold_batchnorm(fold_bn: Callable[..., Any]) -> str:
    parts = Parts("weight", "bias")  # independent: each earns half of the points
    for case in fold_cases():
        with parts.case():
            name = f"fold_bn for a weight of shape {tuple_text(case['weight'].shape)}"
            copies = {k: v.copy() for k, v in case.items()}
            weight, bias = unpack(name, fold_bn(**copies, eps=1e-5), ("weight", "bias"))
            right_weight, right_bias = folded(**case, eps=1e-5)
            with parts.judging("weight"):
                compare(
                    f"the weight from {name}",
                    weight,
                    right_weight,
                    mistakes=WEIGHT.answers(**case, eps=1e-5),
                )
            with parts.judging("bias"):
                compare(
                    f"the bias from {name}",
                    bias,
                    right_bias,
                    mistakes=BIAS.answers(**case, eps=1e-5),
                )
    parts.verdict()
    return (
        "one scale per output channel, bias a * (b - running_mean) + beta, for Linear and "
        "Conv2d weights"
    )


# --------------------------------------------------------------------------------------------
# group_norm: statistics per sample and group of C // G neighbouring channels
# --------------------------------------------------------------------------------------------
def grouped(
    x: np.ndarray, view: tuple[int, ...], axes: tuple[int, ...], eps: float, ddof: int = 0
) -> np.ndarray:
    """``x`` normalized over ``axes`` of the view ``view`` of it, back in ``x``'s shape."""
    return normalize_over(x.reshape(view), axes, eps, ddof).reshape(x.shape)


GROUP = Mistakes()  # arguments: (x, groups, eps)


def _view(x: np.ndarray, groups: int) -> tuple[int, ...]:
    n, c, *spatial = x.shape
    return (n, groups, c // groups, *spatial)


def _spatial(x: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of the ``(N, G, C // G, *spatial)`` view."""
    return tuple(range(3, x.ndim + 1))


@GROUP.add(
    "the groups interleave the channels: reshape to (N, G, C // G, ...) so that a group is "
    "C // G neighbouring channels"
)
def interleaved_groups(x, groups, eps):
    n, c, *spatial = x.shape
    return grouped(x, (n, c // groups, groups, *spatial), (1, *_spatial(x)), eps)


@GROUP.add("the batch axis is reduced too: GroupNorm's statistics are per sample")
def groups_across_the_batch(x, groups, eps):
    return grouped(x, _view(x, groups), (0, 2, *_spatial(x)), eps)


@GROUP.add("statistics per channel (InstanceNorm): a group holds C // G channels")
def instance_norm_instead(x, groups, eps):
    return grouped(x, x.shape, tuple(range(2, x.ndim)), eps)


@GROUP.add(
    "the groups are ignored (LayerNorm): reduce over each group of C // G channels, not all C"
)
def layer_norm_instead(x, groups, eps):
    return grouped(x, x.shape, tuple(range(1, x.ndim)), eps)


@GROUP.add("unbiased variance (ddof=1); normalization uses the biased variance")
def group_norm_with_unbiased_variance(x, groups, eps):
    return grouped(x, _view(x, groups), reduced_axes("group", x.ndim), eps, ddof=1)


@exercise(
    "group-norm",
    chapter=CHAPTER,
    title="GroupNorm in NumPy",
    signature="group_norm(x, groups, eps=1e-5) -> array shaped like x, for x of shape "
    "(N, C, *spatial)",
)
def check_group_norm(group_norm: Callable[..., Any]) -> str:
    cases = [
        (74, (3, 6, 4), 2),
        (75, (2, 4, 3, 3), 2),
        (76, (2, 6, 5), 3),
        (77, (2, 4, 3), 1),
        (78, (2, 4, 3), 4),
    ]
    for seed, shape, groups in cases:
        generator = rng(seed)
        per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
        x = generator.normal(size=shape) * generator.uniform(0.5, 3, size=per_channel)
        x += generator.uniform(-3, 3, size=per_channel)
        name = f"group_norm(x, groups={groups}) for x of shape {tuple_text(shape)}"
        got = group_norm(x.copy(), groups, eps=1e-5)
        expected = grouped(x, _view(x, groups), reduced_axes("group", x.ndim), 1e-5)
        compare(name, got, expected, mistakes=GROUP.answers(x, groups, 1e-5))
    return (
        "statistics per sample and group of C // G neighbouring channels; 1 group = "
        "LayerNorm, C groups = InstanceNorm"
    )


# --------------------------------------------------------------------------------------------
# predict-group-norm-means: before the family's statistics are counted
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-group-norm-means",
    chapter=CHAPTER,
    title="Predict how many means GroupNorm computes",
    signature="predicted_means: an integer, for GroupNorm(3, 6) on a (4, 6, 5, 5) input",
)
def check_predict_group_norm_means(predicted_means: Any) -> str:
    # A count: exact (tolerance 0).
    got = compare_prediction(
        "predicted_means",
        predicted_means,
        4 * 3,
        tolerance=0.0,
        mistakes={
            "one mean per group for the whole batch: GroupNorm never mixes samples, each "
            "sample has its own 3 means": 3,
            "one mean per channel: that is BatchNorm": 6,
            "one mean per sample: that is LayerNorm (GroupNorm with one group)": 4,
            "one mean per sample and channel: that is InstanceNorm (one channel a group)": 24,
        },
        otherwise="GroupNorm reduces over each sample's groups: N * G means",
    )
    return f"you predicted {got}: N * G = 4 * 3 means, one per sample and group"
