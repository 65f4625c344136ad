"""Known mistakes, implemented on purpose: what a wrong BatchNorm answer looks like.

Each function returns a dict that maps a learner-facing description of a misconception to the
answer that misconception produces on the given input (an array, or a shape tuple when the
mistake shows as a wrong shape).  :func:`bncourse.checks.compare` names the misconception whose
answer matches the learner's.  The tests do not reuse these: tests/test_checks.py writes each
mistake again the way a learner would, so a mistake described wrongly here is caught there.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from .numpy_bn import (
    batch_stats,
    channel_shape,
    forward_eval,
    forward_train,
    num_per_channel,
    reduce_axes,
    update_running_stats,
)

__all__ = [
    "tuple_text",
    "output_range",
    "axes_subsets",
    "normalize_over",
    "standardize_mistakes",
    "stats_axes_mistakes",
    "variance_mistakes",
    "forward_mistakes",
    "backward_mistakes",
    "sum_over_batch_only",
    "one_sided_difference",
    "identity_params_mistakes",
    "identity_beta_mistakes",
    "samuelson_bound_mistakes",
    "output_range_mistakes",
    "values_per_statistic_mistakes",
    "running_stats_mistakes",
    "eval_mistakes",
    "module_forward_mistakes",
    "merge_stats_mistakes",
    "fold_mistakes",
    "group_norm_mistakes",
    "bn_bytes_mistakes",
    "welford_mistakes",
    "tile_partials_mistakes",
]


def axes_subsets(ndim: int) -> list[tuple[int, ...]]:
    """Every non-empty set of axes of an ``ndim`` array except BatchNorm's own."""
    right = reduce_axes(ndim)
    subsets = []
    for k in range(1, ndim + 1):
        for axes in itertools.combinations(range(ndim), k):
            if axes != right:
                subsets.append(axes)
    return subsets


def tuple_text(values: tuple[int, ...]) -> str:
    """``(2, 3)`` for a shape, axes or an index (NumPy integers included)."""
    return "(" + ", ".join(str(int(v)) for v in values) + ")"


def _wrong_axes_cause(ndim: int, axes: tuple[int, ...]) -> str:
    right = reduce_axes(ndim)
    hint = ""
    if 1 in axes:
        hint = "; axis 1 holds the channels, and each channel gets its own statistics"
    elif ndim > 2:
        hint = "; images and sequences share one mean per channel over N and every spatial axis"
    return (f"wrong reduction axes: statistics over axes {tuple_text(axes)} instead of "
            f"{tuple_text(right)}{hint}")


def normalize_over(x: np.ndarray, axes: tuple[int, ...], eps: float, ddof: int = 0) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` with statistics over ``axes`` (any axes, kept dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    return (x - mean) / np.sqrt(var + eps)


def _affine(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    shape = channel_shape(xhat.ndim)
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


def standardize_mistakes(x: np.ndarray) -> dict[str, Any]:
    """Mistakes in z-scoring the columns of a ``(N, C)`` batch."""
    mean = x.mean(axis=0)
    return {
        "unbiased standard deviation (ddof=1); BatchNorm divides by N, not N - 1":
            (x - mean) / x.std(axis=0, ddof=1),
        "statistics per row (axis=1, one per sample, like LayerNorm) instead of per "
        "feature (axis=0)": (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),
        "one mean and std for the whole array instead of one per feature (axis=0)":
            (x - x.mean()) / x.std(),
        "min-max scaling to [0, 1] instead of a z-score":
            (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0)),
        "subtracting the mean without dividing by the standard deviation": x - mean,
    }


def stats_axes_mistakes(x: np.ndarray, statistic: Callable[..., np.ndarray]) -> dict[str, Any]:
    """Per-channel statistics computed over the wrong axes, or returned with kept dims."""
    mistakes: dict[str, Any] = {}
    right = reduce_axes(x.ndim)
    mistakes["the statistics keep the reduced dimensions (keepdims=True); return one value "
              "per channel, shape (C,)"] = statistic(x, axis=right, keepdims=True)
    for axes in axes_subsets(x.ndim):
        mistakes[_wrong_axes_cause(x.ndim, axes)] = statistic(x, axis=axes)
    return mistakes


def variance_mistakes(x: np.ndarray) -> dict[str, Any]:
    """Mistakes in the per-channel variance used for normalization."""
    axes = reduce_axes(x.ndim)
    return {
        "unbiased variance (divide by m - 1); BatchNorm normalizes with the biased variance "
        "(divide by m)": x.var(axis=axes, ddof=1),
        "standard deviation instead of variance": x.std(axis=axes),
    }


def forward_mistakes(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong training-mode forward passes, on input ``x`` with parameters ``(C,)``."""
    axes = reduce_axes(x.ndim)
    m = num_per_channel(x.shape)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    xc = x - mean
    mistakes: dict[str, Any] = {
        f"unbiased variance (divide by m - 1 = {m - 1}); BatchNorm normalizes with the biased "
        f"variance (divide by m = {m})": _affine(normalize_over(x, axes, eps, ddof=1), gamma, beta),
        "eps outside the square root: use (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)":
            _affine(xc / (np.sqrt(var) + eps), gamma, beta),
        "eps missing: divide by sqrt(var + eps), not sqrt(var)": _affine(xc / np.sqrt(var), gamma, beta),
        "gamma and beta swapped: y = gamma * xhat + beta":
            _affine(normalize_over(x, axes, eps), beta, gamma),
        "gamma and beta not applied: return gamma * xhat + beta, not xhat":
            normalize_over(x, axes, eps),
    }
    if eps != 1e-5:
        mistakes[f"the eps argument is ignored (1e-5 used instead of eps={eps:g})"] = _affine(
            normalize_over(x, axes, 1e-5), gamma, beta)
    for wrong in axes_subsets(x.ndim):
        mistakes[_wrong_axes_cause(x.ndim, wrong)] = _affine(normalize_over(x, wrong, eps), gamma, beta)
    return mistakes


def backward_mistakes(
    dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong ``dx`` from the closed form with one of its paths or factors missing."""
    _, cache = forward_train(x, gamma, None, eps)
    shape = channel_shape(x.ndim)
    axes = reduce_axes(x.ndim)
    inv_std = cache.inv_std.reshape(shape)
    g = dout * gamma.reshape(shape)
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_gx = (g * cache.xhat).mean(axis=axes, keepdims=True)
    dout_mean = dout.mean(axis=axes, keepdims=True)
    dout_x = (dout * cache.xhat).mean(axis=axes, keepdims=True)
    return {
        "the mean path is missing (the gradient through mu): the per-channel sum of dx "
        "should be 0": inv_std * (g - cache.xhat * mean_gx),
        "the variance path is missing (the gradient through var): the per-channel sum of "
        "dx * xhat should be 0": inv_std * (g - mean_g),
        "both the mean and the variance paths are missing: dx is not just gamma * dout / "
        "sqrt(var + eps)": inv_std * g,
        "gamma is missing from dx: the gradient reaching xhat is gamma * dout":
            inv_std * (dout - dout_mean - cache.xhat * dout_x),
    }


def sum_over_batch_only(a: np.ndarray) -> np.ndarray:
    """A per-channel sum taken over axis 0 only (shape ``(C, *spatial)``)."""
    return a.sum(axis=0)


def one_sided_difference(f: Callable[[np.ndarray], float], x: np.ndarray, h: float) -> np.ndarray:
    """``(f(x + h e_i) - f(x)) / h`` for every entry ``i``: the forward difference."""
    x = x.astype(np.float64).copy()
    base = f(x)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        grad[index] = (f(x) - base) / h
        x[index] = old
    return grad


# --------------------------------------------------------------------------------------------
# Chapters 4 and 5: running statistics, training and evaluation, the module's forward
# --------------------------------------------------------------------------------------------
# The descriptions are shared by several exercises, so that one mistake has one name.
TF_MOMENTUM = (
    "TF/Keras-style momentum: PyTorch computes running = (1 - momentum) * running + "
    "momentum * batch, so momentum=0.1 is the weight of the NEW batch (Keras' momentum=0.99 and "
    "CS231n's 0.9 weigh the OLD value: the opposite convention)")
BIASED_RUNNING_VAR = (
    "running_var fed the biased batch variance (divide by m); PyTorch normalizes with the "
    "biased one but stores the unbiased one, var * m / (m - 1), in running_var")
UNBIASED_WITH_BATCH_SIZE = (
    "the unbiased correction m / (m - 1) uses m = N, the batch size; m counts every value of "
    "a channel, N * prod(spatial)")
NONE_AS_DEFAULT = (
    "momentum=None treated as the default 0.1; None means a cumulative average: "
    "momentum = 1 / num_batches_tracked")
NONE_COUNT_BEFORE_BATCH = (
    "momentum=None: 1 / num_batches_tracked must count this batch too (add 1 first), so the "
    "first batch gets weight 1 and batch k gets weight 1/k")
NONE_COUNT_TWICE = (
    "momentum=None: num_batches_tracked already counts this batch, so the factor is "
    "1 / num_batches_tracked, not 1 / (num_batches_tracked + 1)")
NONE_NO_UPDATE = (
    "momentum=None treated as 'no update'; None means a cumulative average: "
    "momentum = 1 / num_batches_tracked")
BATCH_STATS_IN_EVAL = (
    "batch statistics used in eval mode: after model.eval() BatchNorm normalizes with "
    "running_mean and running_var (and leaves them alone)")
RUNNING_STATS_IN_TRAINING = (
    "running statistics used in training mode: training normalizes with the batch's own "
    "mean and biased variance (the running statistics are only updated)")


def running_stats_mistakes(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    x: np.ndarray,
    momentum: float | None,
    num_batches_tracked: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Wrong ``(new_running_mean, new_running_var)`` after one batch ``x`` (``(N, C, *)``).

    ``num_batches_tracked`` counts the batches including ``x`` (as the module has it when it
    calls ``batch_norm``).  Mistakes that do not apply to ``momentum`` are left out.
    """
    mean, var = batch_stats(x)
    m = num_per_channel(x.shape)

    def update(factor: float, batch_var: np.ndarray = var) -> tuple[np.ndarray, np.ndarray]:
        return update_running_stats(running_mean, running_var, mean, batch_var, m, factor, 1)

    factor = 1.0 / num_batches_tracked if momentum is None else momentum
    mistakes = {
        TF_MOMENTUM: update(1 - factor),
        BIASED_RUNNING_VAR: update(factor, batch_var=var * (m - 1) / m),
        "running_var fed the standard deviation instead of the variance":
            update(factor, batch_var=np.sqrt(var * m / (m - 1)) * (m - 1) / m),
    }
    if x.shape[0] != m:
        n = x.shape[0]  # the learner's unbiased value is var * n / (n - 1)
        mistakes[UNBIASED_WITH_BATCH_SIZE] = update(factor, batch_var=var * n / (n - 1) * (m - 1) / m)
    if momentum is None:
        mistakes[NONE_AS_DEFAULT] = update(0.1)
        mistakes[NONE_COUNT_TWICE] = update(1.0 / (num_batches_tracked + 1))
        mistakes[NONE_NO_UPDATE] = (running_mean.copy(), running_var.copy())
    return mistakes


def eval_mistakes(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                  gamma: np.ndarray, beta: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Wrong evaluation-mode outputs for ``x`` ``(N, C, *spatial)`` and ``(C,)`` running
    statistics and affine parameters."""
    shape = channel_shape(x.ndim)
    eps_outside = (x - running_mean.reshape(shape)) / (np.sqrt(running_var.reshape(shape)) + eps)
    return {
        BATCH_STATS_IN_EVAL: forward_train(x, gamma, beta, eps)[0],
        "eps outside the square root: use (x - running_mean) / sqrt(running_var + eps)":
            _affine(eps_outside, gamma, beta),
        "running_var used as a standard deviation: divide by sqrt(running_var + eps)":
            forward_eval(x, running_mean, running_var**2, gamma, beta, eps),
    }


def module_forward_mistakes(module: Any, x: Any) -> dict[str, tuple[Any, ...]]:
    """What a wrong ``nn.BatchNorm*d.forward`` leaves behind after one call on ``x``.

    ``module`` is a :class:`bncourse.torch_bn.BatchNormNd`; each mistake runs on a deep copy
    (the module is not touched).  Answers are ``(output, running_mean, running_var,
    num_batches_tracked)`` as NumPy arrays and an int (``None`` where there is no buffer).
    A wrong logic that raises on this input is left out: the checker names those from the
    exception.
    """
    import copy

    import torch

    from .torch_bn import batch_norm

    def run(*, factor: Any = "right", count: bool = True, count_in_eval: bool = False,
            use_batch_stats: Any = "right") -> tuple[Any, ...]:
        m = copy.deepcopy(module)
        tracking = m.training and m.track_running_stats
        if tracking and count or (count_in_eval and not m.training and m.track_running_stats):
            m.num_batches_tracked.add_(1)
        if factor == "right":
            factor = m.momentum
            if m.momentum is None:
                factor = 1.0 / float(m.num_batches_tracked) if tracking else 0.0
        if use_batch_stats == "right":
            use_batch_stats = m.training or m.running_mean is None
        passing = not m.training or m.track_running_stats
        with torch.no_grad():
            out = batch_norm(x, m.running_mean if passing else None,
                             m.running_var if passing else None, m.weight, m.bias,
                             use_batch_stats, factor, m.eps)

        def arr(t: Any) -> Any:
            return None if t is None else t.detach().cpu().numpy()

        tracked = None if m.num_batches_tracked is None else int(m.num_batches_tracked)
        return arr(out), arr(m.running_mean), arr(m.running_var), tracked

    attempts: dict[str, dict[str, Any]] = {}
    if module.training and module.track_running_stats:
        # (first the momentum mistakes: "not incremented" gives the same running statistics
        # as "1 / count before this batch", and the checker compares the count before them)
        if module.momentum is None:
            n = int(module.num_batches_tracked)
            attempts[NONE_AS_DEFAULT] = dict(factor=0.1)
            attempts[NONE_NO_UPDATE] = dict(factor=0.0)
            if n > 0:
                attempts[NONE_COUNT_BEFORE_BATCH] = dict(factor=1.0 / n)
        else:
            attempts[TF_MOMENTUM] = dict(factor=1.0 - module.momentum)
        attempts["num_batches_tracked not incremented: the module counts every training "
                 "batch (and momentum=None divides by that count)"] = dict(count=False)
        attempts[RUNNING_STATS_IN_TRAINING] = dict(use_batch_stats=False)
    if not module.training and module.running_mean is not None:
        attempts[BATCH_STATS_IN_EVAL] = dict(use_batch_stats=True)
        attempts["num_batches_tracked incremented in eval mode: it counts training batches "
                 "only"] = dict(count_in_eval=True)
    mistakes = {}
    for cause, options in attempts.items():
        try:
            mistakes[cause] = run(**options)
        except (RuntimeError, ValueError, TypeError, ZeroDivisionError):
            continue
    return mistakes


# --------------------------------------------------------------------------------------------
# Chapter 6: the identity-recovery argument
# --------------------------------------------------------------------------------------------
def identity_params_mistakes(
    running_mean: np.ndarray, running_var: np.ndarray, eps: float
) -> dict[str, Any]:
    """Wrong ``gamma`` for eval-mode identity parameters (``beta`` has its own, see below)."""
    mistakes: dict[str, Any] = {
        "eps missing: gamma = sqrt(running_var) only shrinks the output by "
        "sqrt(var / (var + eps)); eval mode divides by sqrt(running_var + eps), so gamma must "
        "be exactly that": np.sqrt(running_var),
        "gamma and beta swapped: gamma scales (a standard deviation), beta shifts (a mean)":
            running_mean,
        "gamma should be a standard deviation, sqrt(running_var + eps), not a variance":
            running_var + eps,
        "gamma is the inverse of what it should be: BatchNorm divides by sqrt(running_var + eps), "
        "so gamma multiplies by it": 1.0 / np.sqrt(running_var + eps),
    }
    if eps != 1e-5:
        mistakes[f"the eps argument is ignored (1e-5 used instead of eps={eps:g})"] = np.sqrt(
            running_var + 1e-5)
    return mistakes


def identity_beta_mistakes(running_mean: np.ndarray, running_var: np.ndarray, eps: float) -> dict[str, Any]:
    """Wrong ``beta`` for eval-mode identity parameters."""
    return {
        "gamma and beta swapped: beta shifts back by the mean, gamma scales by the standard "
        "deviation": np.sqrt(running_var + eps),
        "beta has the wrong sign: BatchNorm subtracts running_mean, and y = gamma * xhat + beta "
        "adds beta, so beta = +running_mean": -running_mean,
        "beta = 0 does not put the mean back": np.zeros_like(running_mean),
    }


def samuelson_bound_mistakes(m: int, ddof: int) -> dict[str, float]:
    """Wrong answers for the largest ``|x_i - mean| / x.std(ddof=ddof)`` over batches of ``m``."""
    biased, unbiased = np.sqrt(m - 1), (m - 1) / np.sqrt(m)
    mistakes: dict[str, float] = {}
    if ddof == 1:
        mistakes["ddof is ignored: the unbiased std (ddof=1) is larger than the biased one by "
                 "sqrt(m / (m - 1)), so the bound is smaller, (m - 1) / sqrt(m)"] = float(biased)
        mistakes["the correction goes the other way: the unbiased std is the larger one, so "
                 "divide by sqrt(m / (m - 1)), do not multiply"] = float(np.sqrt(m))
    else:
        mistakes["ddof=0 is the biased std (divide by m), whose bound is sqrt(m - 1); "
                 "(m - 1) / sqrt(m) belongs to the unbiased std"] = float(unbiased)
        mistakes["sqrt(m) is never reached: the other m - 1 values must balance the extreme "
                 "one, which gives sqrt(m - 1) for the biased std"] = float(np.sqrt(m))
    mistakes["m - 1 bounds the squared value, (x_i - mean)^2 / var <= m - 1; take the square "
             "root"] = float(m - 1)
    return mistakes


def output_range(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Per-channel ``(min, max)`` of training-mode BatchNorm's output, shape ``(2, C)``."""
    out, _ = forward_train(x, gamma, beta, eps)
    axes = reduce_axes(x.ndim)
    return np.stack([out.min(axis=axes), out.max(axis=axes)])


def output_range_mistakes(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, eps: float
) -> dict[str, Any]:
    """The output range ``(2, C)`` that each wrong ``(gamma, beta)`` gives for ``range_params``."""
    axes = reduce_axes(x.ndim)

    def params(xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        smallest, largest = xhat.min(axis=axes), xhat.max(axis=axes)
        gamma = (high - low) / (largest - smallest)
        return gamma, low - gamma * smallest

    mean = x.mean(axis=axes, keepdims=True)
    wrong = {
        "gamma and beta were computed from the range of x, not of the normalized xhat; "
        "BatchNorm applies them to xhat": params(x),
        "xhat computed with the unbiased variance (ddof=1); BatchNorm normalizes with the "
        "biased one": params((x - mean) / np.sqrt(x.var(axis=axes, keepdims=True, ddof=1) + eps)),
        "eps missing from xhat: BatchNorm divides by sqrt(var + eps)":
            params((x - mean) / np.sqrt(x.var(axis=axes, keepdims=True))),
    }
    mistakes = {cause: output_range(x, g, b, eps) for cause, (g, b) in wrong.items()}
    right_gamma, right_beta = params(normalize_over(x, axes, eps))
    mistakes["gamma and beta swapped"] = output_range(x, right_beta, right_gamma, eps)
    return mistakes


# --------------------------------------------------------------------------------------------
# Chapter 7: BatchNorm in training
# --------------------------------------------------------------------------------------------
def values_per_statistic_mistakes(norm: str, shape: tuple[int, ...], groups: int) -> dict[str, int]:
    """Wrong counts of the values behind one mean and variance, for ``norm`` on ``shape``."""
    n, c = shape[0], shape[1]
    positions = int(np.prod(shape[2:]))
    if norm == "batch":
        return {
            "BatchNorm also reduces over every spatial position: m = N * H * W (times any "
            "other spatial axes), not N": n,
            "BatchNorm keeps one statistic per channel: the channels are not pooled, "
            "m = N * H * W, not N * C * H * W": n * c * positions,
        }
    if norm == "layer":
        return {
            "LayerNorm over (C, H, W) also reduces over the spatial positions: m = C * H * W": c,
            "LayerNorm keeps one statistic per sample: the batch is not pooled": n * c * positions,
        }
    return {
        "groups is the number of groups, not the channels per group: a group holds "
        "C // groups channels": groups * positions,
        "the groups were ignored: GroupNorm(groups, C) reduces over C // groups channels": c * positions,
        "GroupNorm keeps statistics per sample: the batch is not pooled": n * (c // groups) * positions,
    }


# --------------------------------------------------------------------------------------------
# Chapter 9: SyncBatchNorm's merge, folding BatchNorm, GroupNorm
# --------------------------------------------------------------------------------------------
def merge_stats_mistakes(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> dict[str, dict[str, Any]]:
    """Wrong merges of per-process ``(count, mean, M2)``, keyed by the output they spoil."""
    total = counts.sum()
    mean = (counts[:, None] * means).sum(0) / total
    between = (counts[:, None] * (means - mean) ** 2).sum(0)
    return {
        "count": {
            "the merged count is the number of processes; it is the number of values, sum(counts)":
                float(len(counts)),
        },
        "mean": {
            "the means are averaged without weights: a process with more values must weigh "
            "more, mean = sum(n_k * mean_k) / N": means.mean(0),
        },
        "m2": {
            "M2 misses the between-process term sum(n_k * (mean_k - mean)^2): the parts' "
            "means differ from the global mean": m2s.sum(0),
            "M2 is the merged sum of squared deviations, not the variance M2 / N":
                (m2s.sum(0) + between) / total,
            "the between-process term needs the weights n_k: sum(n_k * (mean_k - mean)^2)":
                m2s.sum(0) + ((means - mean) ** 2).sum(0),
        },
    }


def fold_mistakes(weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray,
                  running_var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                  eps: float) -> dict[str, dict[str, Any]]:
    """Wrong folded ``(weight, bias)`` of a Linear/Conv followed by an eval-mode BatchNorm."""
    a = gamma / np.sqrt(running_var + eps)
    out_axis = (-1,) + (1,) * (weight.ndim - 1)
    in_axis = (1, -1) + (1,) * (weight.ndim - 2)
    no_eps = gamma / np.sqrt(running_var)
    weight_mistakes: dict[str, Any] = {}
    if weight.shape[1] == a.shape[0]:  # a square weight: scaling the wrong axis raises no error
        weight_mistakes["the weights are scaled along the input channels (axis 1); BatchNorm "
                        "scales each output channel, the rows of the weight (axis 0)"] = weight * a.reshape(in_axis)
    return {
        "weight": {
            **weight_mistakes,
            "eps missing: the scale is gamma / sqrt(running_var + eps)": weight * no_eps.reshape(out_axis),
            "the scale divides by the variance; it is gamma / sqrt(running_var + eps)":
                weight * (gamma / (running_var + eps)).reshape(out_axis),
        },
        "bias": {
            "the layer's own bias is not scaled: b' = a * (b - running_mean) + beta":
                bias - a * running_mean + beta,
            "running_mean is not subtracted: b' = a * (b - running_mean) + beta": a * bias + beta,
            "eps missing: the scale is gamma / sqrt(running_var + eps)":
                no_eps * (bias - running_mean) + beta,
            "beta is missing: b' = a * (b - running_mean) + beta": a * (bias - running_mean),
        },
    }


def group_norm_mistakes(x: np.ndarray, groups: int, eps: float) -> dict[str, Any]:
    """Wrong GroupNorm outputs for ``x`` of shape ``(N, C, *spatial)``."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]

    def grouped(view_shape, axes, ddof=0):
        return normalize_over(x.reshape(view_shape), axes, eps, ddof).reshape(x.shape)

    rest = tuple(range(3, 3 + len(spatial)))
    return {
        "the groups interleave the channels: reshape to (N, G, C // G, ...) so that a group is "
        "C // G neighbouring channels": grouped((n, c // groups, groups, *spatial), (1, *rest)),
        "the batch axis is reduced too: GroupNorm's statistics are per sample":
            grouped((n, groups, c // groups, *spatial), (0, 2, *rest)),
        "statistics per channel (InstanceNorm): a group holds C // G channels":
            grouped(x.shape, tuple(range(2, x.ndim))),
        "the groups are ignored (LayerNorm): reduce over each group of C // G channels, not all C":
            grouped(x.shape, tuple(range(1, x.ndim))),
        "unbiased variance (ddof=1); normalization uses the biased variance":
            grouped((n, groups, c // groups, *spatial), (2, *rest), ddof=1),
    }


# --------------------------------------------------------------------------------------------
# Chapter 8: BatchNorm on the GPU
# --------------------------------------------------------------------------------------------
def bn_bytes_mistakes(shape: tuple[int, ...], itemsize: int) -> dict[str, dict[str, float]]:
    """Wrong counts of the bytes a training BatchNorm moves, keyed by ``forward``/``backward``."""
    numel = int(np.prod(shape))
    size = numel * itemsize
    per_sample = shape[0] * shape[1] * itemsize  # spatial positions forgotten
    forward = {
        "the forward reads the input twice (once for the statistics, once to normalize) and "
        "writes the output once: 3 passes over the tensor": 2 * size,
        "a count of values, not of bytes: multiply by the itemsize (4 for float32, 2 for "
        "bfloat16)": 3 * numel,
        "bits, not bytes: the itemsize is already in bytes": 3 * size * 8,
    }
    backward = {
        "dx is written too: the backward reads x and dy twice each and writes dx, 5 passes":
            4 * size,
        "x and dy are each read twice: once for the two per-channel sums, and again for dx, "
        "which needs the finished sums": 3 * size,
        "that counts the forward too: the backward alone is 4 reads and 1 write": 8 * size,
        "a count of values, not of bytes: multiply by the itemsize (4 for float32, 2 for "
        "bfloat16)": 5 * numel,
        "bits, not bytes: the itemsize is already in bytes": 5 * size * 8,
    }
    if per_sample != size:
        cause = ("every value of the tensor moves, all N * C * H * W of them, not one per "
                 "sample and channel")
        forward[cause], backward[cause] = 3 * per_sample, 5 * per_sample
    return {"forward": forward, "backward": backward}


def welford_mistakes(count: int, mean: np.ndarray, m2: np.ndarray,
                     x: np.ndarray) -> dict[str, dict[str, Any]]:
    """Wrong one-value updates of a running ``(count, mean, M2)``, keyed by the output they spoil."""
    new_count = count + 1
    delta = x - mean
    new_mean = mean + delta / new_count
    right_m2 = m2 + delta * (x - new_mean)
    mean_mistakes: dict[str, Any] = {
        "the new mean is not the average of the old mean and x: it moves by "
        "(x - mean) / count with the new count": (mean + x) / 2,
    }
    if count > 0:
        mean_mistakes["the step divides by the new count (count + 1), the number of values "
                      "including x"] = mean + delta / count
    return {
        "count": {"the count must grow by one with every value": float(count)},
        "mean": mean_mistakes,
        "m2": {
            "M2 grows by (x - old mean) * (x - new mean), one factor from before the update "
            "and one from after, not (x - old mean)^2": m2 + delta ** 2,
            "M2 grows by (x - old mean) * (x - new mean), not (x - new mean)^2":
                m2 + (x - new_mean) ** 2,
            "M2 is a sum of squared deviations from the mean, not a sum of squares "
            "(E[x^2] - E[x]^2 is what Welford's update avoids)": m2 + x ** 2,
            "M2 is the sum, not the variance: M2 / count is the variance": right_m2 / new_count,
        },
    }


def tile_partials_mistakes(values: np.ndarray, tile: int) -> dict[str, dict[str, Any]]:
    """Wrong per-tile ``(counts, means, m2s)`` of a 1-d array cut into tiles of ``tile``
    values, keyed by the output they spoil."""
    tiles = [values[i:i + tile] for i in range(0, len(values), tile)]
    full = len(values) // tile
    means = np.array([t.mean() for t in tiles])
    whole = values.mean()
    mistakes: dict[str, dict[str, Any]] = {"counts": {}, "means": {}, "m2s": {}}
    if full != len(tiles):  # a ragged last tile
        dropped = "the last, shorter tile was dropped: it holds the len(values) % tile values that are left"
        for key in mistakes:
            mistakes[key][dropped] = (full,)
        mistakes["counts"]["the last tile is shorter: count the values it really holds"] = \
            np.full(len(tiles), float(tile))
        mistakes["means"]["the last tile's sum was divided by the tile size, not by its count"] = \
            np.r_[means[:-1], tiles[-1].sum() / tile]
    mistakes["means"]["every tile got the mean of all values: each tile has its own"] = \
        np.full(len(tiles), whole)
    mistakes["m2s"].update({
        "M2 is the sum of squared deviations, not the variance (do not divide by the count)":
            np.array([t.var() for t in tiles]),
        "the deviations are from the mean of all values; M2 of a tile uses the tile's own mean":
            np.array([((t - whole) ** 2).sum() for t in tiles]),
    })
    return {key: value for key, value in mistakes.items()}

