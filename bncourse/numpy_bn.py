"""Batch Normalization in NumPy: the reference implementation of the course.

Conventions used throughout the course (the same as ``torch.nn.BatchNorm1d/2d/3d``):

* An input ``x`` has shape ``(N, C)`` or ``(N, C, *spatial)``: ``N`` samples, ``C`` channels
  (features), then any number of spatial axes, e.g. ``(N, C, L)``, ``(N, C, H, W)``,
  ``(N, C, D, H, W)``.
* Statistics are per channel, over every axis except axis 1: for ``(N, C, H, W)`` that is
  ``(0, 2, 3)``.  ``m`` is the number of values that share one channel's statistics,
  ``m = N * prod(spatial)``.
* ``gamma`` (PyTorch's ``weight``) and ``beta`` (``bias``) have shape ``(C,)``; ``None`` means
  ``affine=False`` (gamma = 1, beta = 0).
* Normalization uses the *biased* batch variance (divide by ``m``) with ``eps`` inside the
  square root: ``xhat = (x - mean) / sqrt(var + eps)``.
* Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum * batch``,
  where ``running_var`` is fed the *unbiased* batch variance (divide by ``m - 1``), and
  ``momentum=None`` means a cumulative average (``momentum = 1 / num_batches_tracked``).
* Arrays are float32 or float64 and every result has the input's dtype; per-channel sums
  accumulate in float64 (see :func:`channel_mean`), elementwise work is in the input's dtype.

Functions:

* :func:`batch_stats` -- per-channel mean and biased variance.
* :func:`forward_train` / :func:`forward_eval` -- the two forward passes.
* :func:`update_running_stats` -- one step of the running-statistics update.
* :func:`backward_staged` -- the backward pass, node by node through the graph.
* :func:`backward` -- the same gradients from the compact closed form.
* :class:`BatchNorm` -- a stateful layer with ``train()``/``eval()``, like ``nn.BatchNorm*d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conventions import (
    channel_shape,
    eps_negative,
    eps_not_positive,
    one_value_per_channel,
    reduce_axes,
    too_few_dimensions,
    values_per_channel,
    wrong_length,
)

__all__ = [
    "Cache",
    "BatchNorm",
    "validate",
    "check_array",
    "check_dout",
    "channel_mean",
    "channel_sum",
    "batch_stats",
    "forward_train",
    "forward_eval",
    "update_running_stats",
    "backward_staged",
    "backward",
]


# --------------------------------------------------------------------------------------------
# Shapes and input validation
# --------------------------------------------------------------------------------------------
def _check_channel_vector(name: str, value: np.ndarray | None, num_channels: int) -> None:
    """A per-channel vector must have shape ``(C,)``; PyTorch's wording for a wrong length."""
    if value is None:
        return
    value = np.asarray(value)
    if value.ndim != 1:
        raise ValueError(
            f"{name} should be a vector of shape ({num_channels},), got shape {tuple(value.shape)}"
        )
    if value.shape[0] != num_channels:
        raise ValueError(wrong_length(name, num_channels, value.shape[0]))


def validate(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    eps: float | None = None,
) -> None:
    """Raise a clear error for input BatchNorm cannot handle.

    * ``TypeError`` for anything but a NumPy array (a list too), and for a non-floating
      input (integers would silently truncate);
    * ``ValueError`` for fewer than 2 dimensions, for per-channel vectors of the wrong shape,
      in training for a single value per channel (its variance is undefined) with PyTorch's
      wording "Expected more than 1 value per channel when training, ...", and for a
      negative ``eps`` (when given), in PyTorch's words. An empty batch is fine, as in
      PyTorch: its output is empty.

    One deliberate difference: ``eps = 0`` in training, which PyTorch refuses, is allowed
    here, because chapters 3 and 6 use it to show what holds exactly only without ``eps``
    (``sum(dx * xhat) = 0``, scale invariance); a channel of equal values then divides 0 by
    0, as the formula says.
    """
    check_array(x)
    if x.ndim < 2:
        raise ValueError(too_few_dimensions(x.shape))
    num_channels = x.shape[1]
    _check_channel_vector("gamma", gamma, num_channels)
    _check_channel_vector("beta", beta, num_channels)
    _check_channel_vector("running_mean", running_mean, num_channels)
    _check_channel_vector("running_var", running_var, num_channels)
    if training and values_per_channel(x.shape) == 1:
        raise ValueError(one_value_per_channel(tuple(x.shape)))
    if eps is not None and eps < 0:
        raise ValueError(eps_not_positive(eps) if training else eps_negative(eps))


def check_array(x: object) -> None:
    """A ``TypeError`` unless ``x`` is a float32 or float64 NumPy array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"batch_norm: expected a NumPy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"batch_norm: expected a floating-point input (float32 or float64), got {x.dtype}"
        )


def check_dout(dout: object, cache: Cache) -> None:
    """``dout`` is a float32 or float64 array of the output's shape: a ``TypeError`` or a
    ``ValueError`` (PyTorch's wording for the shape) otherwise. A shape that only broadcasts
    against the output would give a gradient of the wrong shape or a wrong sum, silently."""
    if not isinstance(dout, np.ndarray):
        raise TypeError(f"backward: expected dout to be a NumPy array, got {type(dout).__name__}")
    if dout.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"backward: expected a floating-point dout (float32 or float64), got {dout.dtype}"
        )
    if dout.shape != cache.x.shape:
        raise ValueError(
            f"Mismatch in shape: dout has a shape of {tuple(dout.shape)} and the output has a "
            f"shape of {tuple(cache.x.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
def channel_mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean of ``a`` (shape ``(N, C, *spatial)``), shape ``(C,)``, dtype of ``a``.

    The sum accumulates in float64 whatever the input's dtype: NumPy adds up a non-contiguous
    axis one value at a time, and in float32 that error grows like ``m * 1e-7`` (a mean of
    1e4 over a few thousand values would already be off by 1e-3).
    """
    return a.mean(axis=reduce_axes(a.ndim), dtype=np.float64).astype(a.dtype)


def channel_sum(a: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``a``, shape ``(C,)``, accumulated in float64 (see
    :func:`channel_mean`)."""
    return a.sum(axis=reduce_axes(a.ndim), dtype=np.float64).astype(a.dtype)


def batch_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and *biased* variance of ``x`` (shape ``(N, C, *spatial)``).

    Two passes (mean first, then the mean of squared deviations): unlike
    ``E[x^2] - E[x]^2`` this stays accurate when the mean is large compared with the spread.
    Returns two arrays of shape ``(C,)`` in the dtype of ``x``.
    """
    mean = channel_mean(x)
    centered = x - mean.reshape(channel_shape(x.ndim))
    var = channel_mean(centered * centered)
    return mean, var


@dataclass
class Cache:
    """What the training forward pass keeps for the backward pass.

    ``xhat`` has the input's shape; ``mean``, ``var``, ``inv_std`` and ``gamma`` are ``(C,)``
    (``gamma`` is all ones when the layer has no affine parameters).
    """

    x: np.ndarray
    xhat: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray


def _affine(xhat: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    shape = channel_shape(xhat.ndim)
    out = xhat
    if gamma is not None:
        out = out * np.asarray(gamma, dtype=xhat.dtype).reshape(shape)
    if beta is not None:
        out = out + np.asarray(beta, dtype=xhat.dtype).reshape(shape)
    return out


def forward_train(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, Cache]:
    """Training-mode BatchNorm: normalize with the statistics of this batch.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel, with the biased batch
    variance.  Returns ``(y, cache)``; ``y`` has the shape and dtype of ``x``. An empty batch
    (``m = 0``) has no statistics (NaN in the cache) and gives an empty ``y``, as in PyTorch.
    """
    validate(x, gamma, beta, training=True, eps=eps)
    if x.size == 0:
        nan = np.full(x.shape[1], np.nan, x.dtype)
        g = np.ones_like(nan) if gamma is None else np.asarray(gamma, dtype=x.dtype)
        return x.copy(), Cache(x=x, xhat=x.copy(), mean=nan, var=nan, inv_std=nan, gamma=g)
    mean, var = batch_stats(x)
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    shape = channel_shape(x.ndim)
    xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    out = _affine(xhat, gamma, beta)
    g = np.ones_like(mean) if gamma is None else np.asarray(gamma, dtype=x.dtype)
    return out, Cache(x=x, xhat=xhat, mean=mean, var=var, inv_std=inv_std, gamma=g)


def forward_eval(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Eval-mode BatchNorm: normalize with stored statistics, not the batch's.

    Each sample is transformed independently, so a batch of one is fine.  ``running_mean``
    and ``running_var`` have shape ``(C,)``.
    """
    validate(
        x,
        gamma,
        beta,
        training=False,
        running_mean=running_mean,
        running_var=running_var,
        eps=eps,
    )
    shape = channel_shape(x.ndim)
    mean = np.asarray(running_mean, dtype=x.dtype).reshape(shape)
    var = np.asarray(running_var, dtype=x.dtype).reshape(shape)
    xhat = (x - mean) / np.sqrt(var + x.dtype.type(eps))
    return _affine(xhat, gamma, beta)


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    batch_mean: np.ndarray,
    batch_var: np.ndarray,
    m: int,
    momentum: float | None,
    num_batches_tracked: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One PyTorch-style update of the running statistics; returns the new ``(mean, var)``.

    ``batch_var`` is the *biased* batch variance used for normalization; the running variance
    is fed the unbiased one, ``batch_var * m / (m - 1)``.  ``num_batches_tracked`` counts the
    batches seen *including this one*; with ``momentum=None`` the factor is its inverse, which
    makes the running values plain averages over all batches so far (a cumulative average).
    """
    factor = 1.0 / num_batches_tracked if momentum is None else momentum
    unbiased = batch_var * (m / (m - 1))
    new_mean = (1 - factor) * running_mean + factor * batch_mean
    new_var = (1 - factor) * running_var + factor * unbiased
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------
def backward_staged(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` by walking the computational graph backwards.

    The forward pass as a chain of small nodes (per channel, ``m`` values each)::

        mu = mean(x)            xc = x - mu          var = mean(xc**2)
        inv_std = (var+eps)**-1/2                    xhat = xc * inv_std
        y = gamma * xhat + beta

    Each line below is the chain rule for one node, in reverse order.
    """
    check_dout(dout, cache)
    shape = channel_shape(dout.ndim)
    m = values_per_channel(dout.shape)
    if m == 0:  # an empty batch: nothing to differentiate, zero sums
        return dout.copy(), channel_sum(dout), channel_sum(dout)
    xc = cache.x - cache.mean.reshape(shape)

    dbeta = channel_sum(dout)  # y = ... + beta
    dgamma = channel_sum(dout * cache.xhat)  # y = gamma * xhat + ...
    dxhat = dout * cache.gamma.reshape(shape)
    dinv_std = channel_sum(dxhat * xc)  # xhat = xc * inv_std
    dxc = dxhat * cache.inv_std.reshape(shape)
    dvar = dinv_std * -0.5 * cache.inv_std**3  # inv_std = (var + eps)**-1/2
    dxc = dxc + (2.0 / m) * xc * dvar.reshape(shape)  # var = mean(xc**2)
    dmu = -channel_sum(dxc)  # xc = x - mu
    dx = dxc + dmu.reshape(shape) / m  # mu = mean(x)
    return dx.astype(dout.dtype), dgamma, dbeta


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` from the closed form.

    With ``g = gamma * dout`` (the gradient reaching ``xhat``), per channel::

        dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))

    The two subtracted terms are the mean path and the variance path. They make
    ``sum(dx) = 0`` for every channel, and ``sum(dx * xhat) = 0`` up to a term proportional to
    ``eps / (var + eps)`` (exactly 0 when ``eps = 0``).
    """
    check_dout(dout, cache)
    shape = channel_shape(dout.ndim)
    m = values_per_channel(dout.shape)
    dbeta = channel_sum(dout)
    dgamma = channel_sum(dout * cache.xhat)
    if m == 0:  # an empty batch: nothing to differentiate, zero sums
        return dout.copy(), dgamma, dbeta
    g = dout * cache.gamma.reshape(shape)
    mean_g = (cache.gamma * dbeta / m).reshape(shape)
    mean_g_xhat = (cache.gamma * dgamma / m).reshape(shape)
    dx = cache.inv_std.reshape(shape) * (g - mean_g - cache.xhat * mean_g_xhat)
    return dx.astype(dout.dtype), dgamma, dbeta


# --------------------------------------------------------------------------------------------
# A stateful layer
# --------------------------------------------------------------------------------------------
class BatchNorm:
    """A NumPy BatchNorm layer with the state and modes of ``torch.nn.BatchNorm*d``.

    Parameters: ``gamma``/``beta`` of shape ``(C,)`` (``None`` when ``affine=False``).
    Buffers: ``running_mean`` (zeros), ``running_var`` (ones), ``num_batches_tracked``
    (``None`` when ``track_running_stats=False``).  In training mode the layer normalizes with
    batch statistics and updates the buffers; in eval mode it uses the buffers if it tracks
    them, else batch statistics (exactly what PyTorch does).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: type = np.float32,
    ) -> None:
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.gamma = np.ones(num_features, dtype) if affine else None
        self.beta = np.zeros(num_features, dtype) if affine else None
        if track_running_stats:
            self.running_mean: np.ndarray | None = np.zeros(num_features, dtype)
            self.running_var: np.ndarray | None = np.ones(num_features, dtype)
            self.num_batches_tracked: int | None = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.training = True
        self.cache: Cache | None = None

    def train(self, mode: bool = True) -> "BatchNorm":
        self.training = mode
        return self

    def eval(self) -> "BatchNorm":
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        check_array(x)
        if x.ndim < 2 or x.shape[1] != self.num_features:
            got = x.shape[1] if x.ndim >= 2 else None
            raise ValueError(
                f"BatchNorm: expected input of shape (N, {self.num_features}, *), "
                f"got shape {tuple(x.shape)} (channels: {got})"
            )
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats:
            self.cache = None
            return forward_eval(
                x, self.running_mean, self.running_var, self.gamma, self.beta, self.eps
            )
        out, self.cache = forward_train(x, self.gamma, self.beta, self.eps)
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1  # (an empty batch is counted, as PyTorch counts it)
        if self.training and self.track_running_stats and x.size > 0:
            self.running_mean, self.running_var = update_running_stats(
                self.running_mean,
                self.running_var,
                self.cache.mean,
                self.cache.var,
                values_per_channel(x.shape),
                self.momentum,
                self.num_batches_tracked,
            )
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last input; stores ``dgamma``/``dbeta`` on the layer."""
        if self.cache is None:
            raise RuntimeError("backward() needs a forward pass with batch statistics first")
        dx, self.dgamma, self.dbeta = backward(dout, self.cache)
        return dx

    def __repr__(self) -> str:
        return (
            f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats})"
        )
