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


def _check_plain_parameters(layer: nn.Module) -> None:
    """A ``ValueError`` if ``layer``'s weight or bias is computed rather than stored: a
    parametrization (``torch.nn.utils.parametrize``, ``parametrizations.weight_norm``, ...) or
    the older hooks (``torch.nn.utils.weight_norm``, ``spectral_norm``) recompute it from
    other tensors, so writing the folded values into it would change nothing."""
    from torch.nn.utils import parametrize

    for name in ("weight", "bias"):
        value = getattr(layer, name, None)
        computed = parametrize.is_parametrized(layer, name) or (
            value is not None and not isinstance(value, nn.Parameter)
        )
        if computed:
            raise ValueError(
                f"cannot fold into {type(layer).__name__}: its {name} is computed by a "
                "parametrization or a hook (weight_norm, spectral_norm, "
                "torch.nn.utils.parametrize), not stored, so the folded values would not be "
                "used. Remove it first, keeping its current value: "
                f"torch.nn.utils.parametrize.remove_parametrizations(layer, {name!r}) "
                "(or torch.nn.utils.remove_weight_norm for the older weight_norm)"
            )


def _check_dimensions(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """A ``ValueError`` if ``bn`` refuses the output of ``layer`` in eager mode (a Conv2d's
    4-d output into a BatchNorm1d, say): the folded layer would run where the pair fails."""
    spatial = 0 if isinstance(layer, nn.Linear) else len(layer.kernel_size)
    output = torch.empty(2, bn.num_features, *([1] * spatial), device="meta")
    try:
        bn._check_input_dim(output)
    except ValueError as error:
        raise ValueError(
            f"{type(bn).__name__} cannot follow {type(layer).__name__}, whose output is "
            f"{output.dim()}-d: {error}"
        ) from None


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
    _check_plain_parameters(layer)
    out_channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out_channels:
        raise ValueError(
            f"{type(bn).__name__}({bn.num_features}) cannot follow a layer with {out_channels} "
            f"output channels"
        )
    _check_dimensions(layer, bn)
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
    their names (indices, or the keys of an ``OrderedDict``) and their ``state_dict`` keys.
    Nested ``nn.Sequential`` are folded too. A module used at several places stays one
    module in the copy, except where it is folded (each folded layer is its own).

    ``model`` must be an ``nn.Sequential`` that runs its layers in order: a subclass with its
    own ``forward`` is refused (``TypeError``), since the copy could not know what it does.
    """
    memo: dict[int, object] = {}  # one deepcopy memo: shared modules stay shared
    return _fold_sequential(model, memo)


def _fold_sequential(model: nn.Sequential, memo: dict[int, object]) -> nn.Sequential:
    if type(model).forward is not nn.Sequential.forward:
        raise TypeError(
            f"{type(model).__name__} is an nn.Sequential with its own forward: the folded copy "
            "would be a plain nn.Sequential and lose it. Fold its layers with fold_batchnorm "
            "instead"
        )
    # _modules, not children(): children() leaves out a module used a second time
    layers = list(model._modules.items())
    out: list[tuple[str, nn.Module | None]] = []
    for i, (name, layer) in enumerate(layers):
        previous = layers[i - 1][1] if i > 0 else None
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and isinstance(previous, FOLDABLE):
            # out[-1] is the copy of the previous layer: fold_batchnorm copies it once more,
            # so that another use of that layer elsewhere keeps the unfolded one
            out[-1] = (out[-1][0], fold_batchnorm(out[-1][1], layer))
            out.append((name, nn.Identity()))
        elif isinstance(layer, nn.Sequential):
            out.append((name, _fold_sequential(layer, memo)))
        else:
            out.append((name, copy.deepcopy(layer, memo)))
    folded = nn.Sequential()
    for name, layer in out:
        folded.add_module(name, layer)
    return folded.train(model.training)
