"""Folding BN into Linear/Conv for inference, and the normalization family, against torch.

Tolerances: folding changes the order of float32 operations (one multiply-add instead of two
affine maps), so folded and unfused outputs agree to ``atol=1e-5, rtol=1e-5`` in float32 and
``1e-12`` in float64; the normalization family matches torch's modules to ``atol=1e-5`` in
float32 (O(1) outputs, statistics over at most a few hundred values).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from bncourse import norm_family
from bncourse.fold import fold_batchnorm, fold_sequential


def trained_bn(bn: nn.Module, shape, steps=5, seed=0):
    """A BN whose running statistics and parameters are not the defaults."""
    g = torch.Generator().manual_seed(seed)
    bn.train()
    for _ in range(steps):
        bn(torch.randn(shape, generator=g, dtype=bn.running_mean.dtype) * 3 + 1)
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(-2, 2, generator=g)
            bn.bias.uniform_(-1, 1, generator=g)
    return bn.eval()


CASES = [
    (
        lambda bias: nn.Linear(6, 4, bias=bias),
        lambda affine: nn.BatchNorm1d(4, affine=affine),
        (5, 6),
        (5, 4),
    ),
    (
        lambda bias: nn.Conv1d(3, 4, 3, bias=bias),
        lambda affine: nn.BatchNorm1d(4, affine=affine),
        (2, 3, 9),
        (2, 4, 7),
    ),
    (
        lambda bias: nn.Conv2d(3, 4, 3, padding=1, bias=bias),
        lambda affine: nn.BatchNorm2d(4, affine=affine),
        (2, 3, 6, 6),
        (2, 4, 6, 6),
    ),
    (
        lambda bias: nn.Conv3d(2, 4, 2, bias=bias),
        lambda affine: nn.BatchNorm3d(4, affine=affine),
        (2, 2, 4, 4, 4),
        (2, 4, 3, 3, 3),
    ),
]


@pytest.mark.parametrize("make_layer, make_bn, in_shape, out_shape", CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_layer_equals_layer_then_bn_in_eval(
    make_layer, make_bn, in_shape, out_shape, bias, affine, dtype
):
    torch.manual_seed(1)
    layer = make_layer(bias).to(dtype).eval()
    bn = trained_bn(make_bn(affine).to(dtype), out_shape)
    x = torch.randn(in_shape, dtype=dtype)
    before = {key: value.clone() for key, value in layer.state_dict().items()}
    folded = fold_batchnorm(layer, bn)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(layer(x)), **tol)
        if isinstance(layer, nn.Linear):
            # torch 2.13's fuse_linear_bn_eval multiplies by bn.weight without a None check,
            # so it cannot fold a BatchNorm with affine=False; ours can (checked above).
            if affine:
                torch.testing.assert_close(folded(x), fuse_linear_bn_eval(layer, bn)(x), **tol)
        else:
            torch.testing.assert_close(folded(x), fuse_conv_bn_eval(layer, bn)(x), **tol)
    assert folded.weight.dtype == dtype and folded.bias is not None
    after = layer.state_dict()
    assert after.keys() == before.keys() and all(
        torch.equal(after[k], before[k]) for k in before
    ), "the original layer is not modified"
    assert folded is not layer and (layer.bias is None) == (not bias)


def test_fold_sequential_folds_every_pair_and_keeps_the_rest():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 10),
        nn.BatchNorm1d(10),
    )
    model.train()
    for _ in range(4):
        model(torch.randn(16, 1, 8, 8))
    model.eval()
    folded = fold_sequential(model)
    kinds = [type(m).__name__ for m in folded.modules()]
    assert "BatchNorm2d" not in kinds and "BatchNorm1d" not in kinds
    assert kinds.count("Identity") == 3
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original is unchanged"


def test_fold_refuses_what_cannot_be_folded():
    with pytest.raises(ValueError, match="track_running_stats=True"):
        fold_batchnorm(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(
        ValueError, match=r"BatchNorm2d\(5\) cannot follow a layer with 4 output channels"
    ):
        fold_batchnorm(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="not ConvTranspose2d"):
        fold_batchnorm(nn.ConvTranspose2d(3, 4, 1), nn.BatchNorm2d(4))


def eval_bn(channels: int, cls=nn.BatchNorm2d) -> nn.Module:
    """An eval-mode BatchNorm whose fold is not the identity (running_var 4: a = 0.5)."""
    bn = cls(channels).eval()
    bn.running_var.fill_(4.0)
    bn.running_mean.fill_(0.5)
    return bn


def test_fold_refuses_a_layer_whose_weight_is_computed():
    """weight_norm (a parametrization, or the older hook) recomputes the weight from other
    tensors: writing the folded weight into it changed nothing (an error of 0.58, silently).
    Refused, naming how to remove it; once removed, the fold is right."""
    torch.manual_seed(8)
    for conv in (
        nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 3)),
        nn.utils.parametrize.register_parametrization(nn.Conv2d(4, 4, 3), "bias", nn.Identity()),
    ):
        model = nn.Sequential(conv, eval_bn(4)).eval()
        with pytest.raises(ValueError, match="computed by a parametrization.*remove_param"):
            fold_sequential(model)
        with pytest.raises(ValueError, match="parametrization"):
            fold_batchnorm(model[0], model[1])
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm is deprecated
        warnings.simplefilter("ignore")
        old_style = nn.utils.weight_norm(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="weight is computed"):
        fold_batchnorm(old_style, eval_bn(4))
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 3))
    model = nn.Sequential(conv, eval_bn(4)).eval()
    x = torch.randn(2, 4, 5, 5)
    expected = model(x).detach()
    nn.utils.parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    with torch.no_grad():
        torch.testing.assert_close(fold_sequential(model)(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_sequential_keeps_names_and_modules_used_twice():
    """A named Sequential keeps its names (and state_dict keys, as documented); a module
    used twice is not dropped (children() skips the second use)."""
    torch.manual_seed(9)
    named = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=eval_bn(4), act=nn.ReLU(), head=nn.Flatten())
    ).eval()
    folded = fold_sequential(named)
    assert list(folded.state_dict()) == ["conv.weight", "conv.bias"]
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.head, nn.Flatten)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), named(x), atol=1e-5, rtol=1e-5)
    conv, act = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
    twice = nn.Sequential(conv, eval_bn(4), act, conv, act).eval()
    folded = fold_sequential(twice)
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "Conv2d", "ReLU"]
    assert folded[2] is folded[4], "a module used twice stays one module"
    assert folded[0] is not folded[3], "only the first use is followed by the BatchNorm"
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), twice(x), atol=1e-5, rtol=1e-5)
    assert list(folded.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]


class Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


class Plain(nn.Sequential):
    pass


def test_fold_sequential_refuses_a_subclass_with_its_own_forward():
    """The copy is a plain nn.Sequential: a subclass's forward (a residual here) would be
    lost silently. One that keeps Sequential's forward folds."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), Residual(nn.Conv2d(4, 4, 1), eval_bn(4)))
    with pytest.raises(TypeError, match="Residual is an nn.Sequential with its own forward"):
        fold_sequential(model.eval())
    plain = Plain(nn.Conv2d(4, 4, 1), eval_bn(4)).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(fold_sequential(plain)(x), plain(x), atol=1e-5, rtol=1e-5)


def test_fold_refuses_a_batchnorm_of_another_dimension():
    """Conv2d then BatchNorm1d fails in eager mode (4-d input); the fold must not make it run."""
    with pytest.raises(ValueError, match="BatchNorm1d cannot follow Conv2d.*expected 2D or 3D"):
        fold_batchnorm(nn.Conv2d(4, 4, 3), eval_bn(4, nn.BatchNorm1d))


def test_fold_refuses_a_batchnorm_in_training_mode():
    """In training a BatchNorm normalizes with the batch's statistics; folding its running
    statistics would silently give another function (an error of 2.6 on this example)."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    model(torch.randn(8, 1, 5, 5) * 3 + 2)  # training mode: running statistics differ
    with pytest.raises(ValueError, match=r"BatchNorm2d is in training mode.*model.eval\(\)"):
        fold_sequential(model)
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(model[0], model[1])
    model.eval()
    fold_sequential(model)


def test_a_folded_linear_refuses_the_3d_input_its_batchnorm1d_normalized_along_another_axis():
    """Linear then BatchNorm1d(F) on (N, L, F) with L == F: BatchNorm1d normalizes axis 1 (L),
    not the Linear's features; a fold would compute another function, so the folded layer
    refuses 3-d inputs (and keeps (N, F) ones)."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model(torch.randn(8, 4))
    model.eval()
    folded = fold_sequential(model)
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
        sequences = torch.randn(2, 4, 4)  # (N, L, F) with L == F: the original runs
        model(sequences)
        with pytest.raises(ValueError, match="normalizes axis 1, not the features"):
            folded(sequences)


# --------------------------------------------------------------------------------------------
# The normalization family
# --------------------------------------------------------------------------------------------
@st.composite
def inputs(draw, min_spatial=0):
    ndim = draw(st.integers(2 + min_spatial, 5))
    n = draw(st.integers(2, 4))
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(2, 4), min_size=ndim - 2, max_size=ndim - 2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.randn((n, c, *spatial), generator=g) * 2 + 1, groups


TOL = dict(atol=1e-5, rtol=1e-5)


@given(inputs())
def test_batch_norm_is_bn_in_training(case):
    x, _ = case
    module = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[x.dim()]
    torch.testing.assert_close(
        norm_family.batch_norm(x), module(x.shape[1], affine=False)(x), **TOL
    )


@given(inputs())
def test_layer_norm(case):
    x, _ = case
    ref = nn.LayerNorm(x.shape[1:], elementwise_affine=False)(x)
    torch.testing.assert_close(norm_family.layer_norm(x), ref, **TOL)


@given(inputs(min_spatial=1))
def test_instance_norm(case):
    x, _ = case
    module = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[x.dim()]
    torch.testing.assert_close(norm_family.instance_norm(x), module(x.shape[1])(x), **TOL)


@given(inputs())
def test_group_norm(case):
    x, groups = case
    ref = nn.GroupNorm(groups, x.shape[1], affine=False)(x)
    torch.testing.assert_close(norm_family.group_norm(x, groups), ref, **TOL)


def test_group_norm_extremes_are_layer_and_instance_norm():
    x = torch.randn(3, 6, 4, 4)
    torch.testing.assert_close(norm_family.group_norm(x, 1), norm_family.layer_norm(x), **TOL)
    torch.testing.assert_close(norm_family.group_norm(x, 6), norm_family.instance_norm(x), **TOL)


def test_family_errors():
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        norm_family.group_norm(torch.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="instance norm needs spatial axes"):
        norm_family.instance_norm(torch.randn(2, 6))
    with pytest.raises(ValueError, match="unknown normalization 'weight'"):
        norm_family.reduced_axes("weight", 4)
