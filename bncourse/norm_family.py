"""The normalization family as one function: which axes are reduced.

BatchNorm, LayerNorm, InstanceNorm and GroupNorm all compute ``(x - mean) / sqrt(var + eps)``
with the biased variance; they differ only in which values share a mean and a variance. For an
input of shape ``(N, C, *spatial)``:

========  =====================================  ==========================================
name      statistics over                        kept for evaluation
========  =====================================  ==========================================
batch     ``N`` and the spatial axes, per channel  running mean and variance (buffers)
layer     ``C`` and the spatial axes, per sample   nothing: the same computation at test time
instance  the spatial axes, per sample and channel nothing by default
group     ``C/G`` channels and the spatial axes,   nothing
          per sample and group of channels
========  =====================================  ==========================================

:func:`normalize` takes the reduced axes explicitly; GroupNorm first views the channels as
``(G, C/G)`` so that a group is one more axis to reduce. The learnable per-channel affine
(gamma, beta) is left out: it is the same in all four.
"""

from __future__ import annotations

import torch

from .conventions import normalize_over, reduced_axes

__all__ = ["normalize", "reduced_axes", "batch_norm", "layer_norm", "instance_norm", "group_norm"]


def normalize(x: torch.Tensor, axes: tuple[int, ...], eps: float = 1e-5) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean and biased variance over ``axes``: the one
    computation all four share (:func:`bncourse.conventions.normalize_over`)."""
    return normalize_over(x, axes, eps)


def batch_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per channel, over the batch and every spatial position (training mode)."""
    return normalize(x, reduced_axes("batch", x.dim()), eps)


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per sample, over all channels and positions (``nn.LayerNorm(x.shape[1:])``)."""
    return normalize(x, reduced_axes("layer", x.dim()), eps)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per sample and channel, over the positions (``nn.InstanceNorm2d`` for images)."""
    if x.dim() < 3:
        raise ValueError(
            f"instance norm needs spatial axes: expected (N, C, *spatial), got {x.dim()}D input"
        )
    return normalize(x, reduced_axes("instance", x.dim()), eps)


def group_norm(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """Per sample and group of ``C / groups`` channels, over those channels and the positions."""
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(
            f"num_channels must be divisible by num_groups: {c} channels, {groups} groups"
        )
    grouped = x.reshape(n, groups, c // groups, *x.shape[2:])
    return normalize(grouped, reduced_axes("group", x.dim()), eps).reshape(x.shape)
