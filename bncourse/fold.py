"""Folding BatchNorm into the layer before it, for inference.

In evaluation mode BatchNorm is a fixed affine map per channel,

    y = gamma * (z - running_mean) / sqrt(running_var + eps) + beta = a * z + b,

with ``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a * running_mean``. When ``z`` is
the output of a convolution or a linear layer, ``z = W x + c``, the two maps compose into one
layer of the same kind: ``y = (a W) x + (a c + b)``; each *output channel* ``k`` of the layer
has its weights scaled by ``a[k]``. The folded model computes the same function with one
layer fewer, so inference reads and writes the activations once less.

Only a BatchNorm that normalizes with running statistics can be folded: in training mode (or
with ``track_running_stats=False``) its statistics depend on the batch, so folding refuses it
(call ``model.eval()`` first).

A ``Linear`` followed by ``BatchNorm1d`` folds for ``(N, F)`` inputs. On a 3-d input
``(N, L, F)`` the Linear acts on the last axis but ``BatchNorm1d`` normalizes axis 1 (``L``,
which it then requires to equal ``F``): the pair is not one affine map per feature, and
folding it (as ``torch.nn.utils.fusion.fuse_linear_bn_eval`` does too) would give another
function. So the folded layer, a :class:`FoldedLinear`, refuses inputs of other than 2
dimensions.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["folded_affine", "FoldedLinear", "fold_batchnorm", "fold_sequential"]

FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def folded_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` of shape ``(C,)`` with ``bn(z) == a * z + b`` per channel in eval mode
    (float64); ``bn`` must be in eval mode and track running statistics."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError(
            "only a BatchNorm with running statistics (track_running_stats=True) can be folded: "
            "without them its output depends on the batch"
        )
    if bn.training:
        raise ValueError(
            f"{type(bn).__name__} is in training mode, where it normalizes with each batch's "
            "statistics: no fixed layer computes that. Fold a model in evaluation mode "
            "(model.eval() first)"
        )
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    a = gamma / torch.sqrt(var + bn.eps)
    return a, beta - a * mean


class FoldedLinear(nn.Linear):
    """An ``nn.Linear`` folded from ``Linear`` + ``BatchNorm1d``: the same layer, for ``(N, F)``
    inputs only (see the module's docstring: on ``(N, L, F)`` the BatchNorm normalized axis
    1, which no fold of the Linear reproduces)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 2:
            raise ValueError(
                "this Linear was folded with the BatchNorm1d after it, which is one affine map "
                "per feature only for (N, F) inputs; for a "
                f"{input.dim()}-d input BatchNorm1d normalizes axis 1, not the features: "
                "keep that BatchNorm1d unfolded"
            )
        return super().forward(input)


def fold_batchnorm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new layer equal to ``bn(layer(x))`` with ``bn`` in eval mode (inputs are unchanged).

    ``layer`` is an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` whose output channels are the
    BatchNorm's features. The arithmetic is done in float64 and rounded once to the layer's
    dtype. The result always has a bias (``b`` is generally not zero); a Linear becomes a
    :class:`FoldedLinear`. ``bn`` must be in evaluation mode: in training it normalizes with
    each batch's statistics, which no fixed layer computes.
    """
    if not isinstance(layer, FOLDABLE):
        raise TypeError(
            f"can fold BatchNorm into Linear or Conv1d/2d/3d, not {type(layer).__name__}"
        )
    out_channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out_channels:
        raise ValueError(
            f"{type(bn).__name__}({bn.num_features}) cannot follow a layer with {out_channels} "
            f"output channels"
        )
    a, b = folded_affine(bn)
    weight = layer.weight.detach().double()
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(a)
    scale = a.reshape(-1, *([1] * (weight.dim() - 1)))  # one factor per output channel
    folded = copy.deepcopy(layer)
    if isinstance(layer, nn.Linear):
        folded.__class__ = FoldedLinear  # the same parameters, for (N, F) inputs only
    if folded.bias is None:
        folded.bias = nn.Parameter(
            torch.empty(out_channels, dtype=layer.weight.dtype, device=layer.weight.device)
        )
    with torch.no_grad():
        folded.weight.copy_(weight * scale)
        folded.bias.copy_(a * bias + b)
    return folded


def fold_sequential(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` in which each Linear/Conv followed by a BatchNorm is folded.

    The folded BatchNorm is replaced by ``nn.Identity()`` so that the remaining layers keep
    their indices (and their ``state_dict`` keys). Nested ``nn.Sequential`` are folded too.
    """
    layers = list(model.children())
    out = []
    for i, layer in enumerate(layers):
        if (
            i > 0
            and isinstance(layer, nn.modules.batchnorm._BatchNorm)
            and isinstance(layers[i - 1], FOLDABLE)
        ):
            out[-1] = fold_batchnorm(out[-1], layer)  # out[-1] is the copy of layers[i - 1]
            out.append(nn.Identity())
        elif isinstance(layer, nn.Sequential):
            out.append(fold_sequential(layer))
        else:
            out.append(copy.deepcopy(layer))
    return nn.Sequential(*out).train(model.training)
