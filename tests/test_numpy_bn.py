"""bncourse.numpy_bn against torch.nn.BatchNorm1d/2d/3d, autograd and central differences.

Tolerances (stated once, used below):

* float64: outputs and gradients within ``atol=1e-10, rtol=1e-9`` of PyTorch; both compute the
  same formulas in a different order, so they differ by a few ulps times the sizes involved.
* float32: outputs within ``atol=2e-5`` (normalized values are O(1) to O(sqrt(m)), float32's
  relative precision is 1.2e-7, and the statistics carry an error of O(m * 1e-7)); gradients
  within ``atol=2e-4`` (the backward sums over m terms); running statistics within
  ``rtol=1e-5, atol=1e-6``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bncourse import numpy_bn
from bncourse.gradcheck import numerical_gradient, relative_error

TOL = {
    np.float64: dict(
        out=dict(rtol=1e-9, atol=1e-10),
        grad=dict(rtol=1e-9, atol=1e-10),
        stats=dict(rtol=1e-10, atol=1e-12),
    ),
    np.float32: dict(
        out=dict(rtol=1e-5, atol=2e-5),
        grad=dict(rtol=1e-4, atol=2e-4),
        stats=dict(rtol=1e-5, atol=1e-6),
    ),
}
TORCH_MODULES = {
    2: torch.nn.BatchNorm1d,
    3: torch.nn.BatchNorm1d,
    4: torch.nn.BatchNorm2d,
    5: torch.nn.BatchNorm3d,
}


def torch_dtype(dtype):
    return {np.float32: torch.float32, np.float64: torch.float64}[dtype]


@st.composite
def configurations(draw):
    ndim = draw(st.integers(2, 5))
    channels = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim - 2, max_size=ndim - 2)))
    return dict(
        ndim=ndim,
        channels=channels,
        spatial=spatial,
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        momentum=draw(st.sampled_from([None, 0.1, 0.5, 1.0, 0.0])),
        affine=draw(st.booleans()),
        track_running_stats=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float64, np.float32])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@given(configurations())
def test_matches_torch_module_over_many_steps(cfg):
    """Outputs, all gradients and every buffer agree with nn.BatchNorm*d over 24 steps that
    switch between training and evaluation, with batch sizes changing from step to step."""
    rng = np.random.default_rng(cfg["seed"])
    dtype, c = cfg["dtype"], cfg["channels"]
    tol = TOL[dtype]
    kwargs = dict(
        eps=cfg["eps"],
        momentum=cfg["momentum"],
        affine=cfg["affine"],
        track_running_stats=cfg["track_running_stats"],
    )
    ours = numpy_bn.BatchNorm(c, dtype=dtype, **kwargs)
    ref = TORCH_MODULES[cfg["ndim"]](c, dtype=torch_dtype(dtype), **kwargs)
    if cfg["affine"]:
        gamma = rng.uniform(-2, 2, size=c).astype(dtype)
        beta = rng.uniform(-1, 1, size=c).astype(dtype)
        ours.gamma, ours.beta = gamma.copy(), beta.copy()
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(gamma))
            ref.bias.copy_(torch.from_numpy(beta))

    for step in range(24):
        training = step < 3 or rng.random() < 0.7
        ours.train(training)
        ref.train(training)
        n = int(rng.integers(2, 6))
        shape = (n, c, *cfg["spatial"])
        x = (rng.normal(size=shape) * rng.uniform(0.1, 3) + rng.uniform(-3, 3)).astype(dtype)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        out = ours(x)
        out_ref = ref(xt)
        assert out.dtype == dtype and out.shape == shape
        np.testing.assert_allclose(out, out_ref.detach().numpy(), **tol["out"])

        if ours.cache is not None:  # batch statistics were used: compare the backward pass
            dout = rng.normal(size=shape).astype(dtype)
            out_ref.backward(torch.from_numpy(dout))
            dx = ours.backward(dout)
            np.testing.assert_allclose(dx, xt.grad.numpy(), **tol["grad"])
            if cfg["affine"]:
                np.testing.assert_allclose(ours.dgamma, ref.weight.grad.numpy(), **tol["grad"])
                np.testing.assert_allclose(ours.dbeta, ref.bias.grad.numpy(), **tol["grad"])
                ref.weight.grad = None
                ref.bias.grad = None

    if cfg["track_running_stats"]:
        np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), **tol["stats"])
        np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), **tol["stats"])
        assert ours.num_batches_tracked == int(ref.num_batches_tracked)
        assert ours.running_mean.dtype == dtype
    else:
        assert ref.running_mean is None and ours.running_mean is None


@given(configurations())
def test_functional_forward_and_both_backwards_match_autograd(cfg):
    """forward_train, backward and backward_staged against F.batch_norm + autograd (float64)."""
    rng = np.random.default_rng(cfg["seed"])
    c = cfg["channels"]
    shape = (int(rng.integers(2, 5)), c, *cfg["spatial"])
    x = rng.normal(size=shape) * 2 + 1
    gamma = rng.normal(size=c) if cfg["affine"] else None
    beta = rng.normal(size=c) if cfg["affine"] else None
    dout = rng.normal(size=shape)

    out, cache = numpy_bn.forward_train(x, gamma, beta, cfg["eps"])
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    gt = torch.from_numpy(gamma).requires_grad_(True) if gamma is not None else None
    bt = torch.from_numpy(beta).requires_grad_(True) if beta is not None else None
    ref = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=cfg["eps"])
    ref.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), **TOL[np.float64]["out"])
    for backward in (numpy_bn.backward, numpy_bn.backward_staged):
        dx, dgamma, dbeta = backward(dout, cache)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL[np.float64]["grad"])
        if gamma is not None:
            np.testing.assert_allclose(dgamma, gt.grad.numpy(), **TOL[np.float64]["grad"])
            np.testing.assert_allclose(dbeta, bt.grad.numpy(), **TOL[np.float64]["grad"])


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 3, 2, 2), (2, 2, 2, 1, 3)])
@pytest.mark.parametrize("backward", [numpy_bn.backward, numpy_bn.backward_staged])
def test_backward_matches_central_differences(shape, backward):
    """The hand-derived gradients of L = sum(y * dout) equal central differences (float64).

    With h=1e-5 the central difference is accurate to ~1e-9 relative here; a wrong gradient
    (a missing path) is off by O(1).
    """
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape)
    gamma, beta = rng.normal(size=shape[1]), rng.normal(size=shape[1])
    dout = rng.normal(size=shape)

    def loss(x_=None, gamma_=None, beta_=None):
        out, _ = numpy_bn.forward_train(
            x if x_ is None else x_,
            gamma if gamma_ is None else gamma_,
            beta if beta_ is None else beta_,
            1e-5,
        )
        return float(np.sum(out * dout))

    _, cache = numpy_bn.forward_train(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = backward(dout, cache)
    assert relative_error(dx, numerical_gradient(lambda v: loss(x_=v), x.copy())) < 1e-7
    assert relative_error(dgamma, numerical_gradient(lambda v: loss(gamma_=v), gamma.copy())) < 1e-7
    assert relative_error(dbeta, numerical_gradient(lambda v: loss(beta_=v), beta.copy())) < 1e-7


def test_gradient_identities():
    """Per channel, sum(dx) = 0 and sum(dx * xhat) = s * eps / (var + eps) * sum(g * xhat)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4)) * 3
    gamma, dout = rng.normal(size=3), rng.normal(size=(6, 3, 4))
    _, cache = numpy_bn.forward_train(x, gamma, None, 1e-5)
    dx, _, _ = numpy_bn.backward(dout, cache)
    axes = (0, 2)
    assert np.abs(dx.sum(axis=axes)).max() < 1e-12
    g_xhat = (gamma.reshape(1, -1, 1) * dout * cache.xhat).sum(axis=axes)
    predicted = cache.inv_std * 1e-5 / (cache.var + 1e-5) * g_xhat
    np.testing.assert_allclose((dx * cache.xhat).sum(axis=axes), predicted, rtol=1e-6, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Running statistics
# --------------------------------------------------------------------------------------------
def test_momentum_none_is_a_cumulative_average():
    """With momentum=None the running mean is the plain average of all batch means and the
    running variance the average of the unbiased batch variances."""
    rng = np.random.default_rng(1)
    layer = numpy_bn.BatchNorm(2, momentum=None, dtype=np.float64)
    means, variances = [], []
    for _ in range(25):
        x = rng.normal(size=(4, 2)) + rng.normal()
        means.append(x.mean(axis=0))
        variances.append(x.var(axis=0, ddof=1))
        layer(x)
    np.testing.assert_allclose(layer.running_mean, np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, np.mean(variances, axis=0), rtol=1e-12)
    assert layer.num_batches_tracked == 25


def test_momentum_is_pytorch_convention():
    """running = (1 - momentum) * running + momentum * batch, with the unbiased variance."""
    x = np.array([[1.0], [2.0], [6.0]])  # mean 3, biased var 14/3, unbiased var 7
    mean, var = numpy_bn.update_running_stats(
        np.zeros(1),
        np.ones(1),
        np.array([3.0]),
        np.array([14 / 3]),
        m=3,
        momentum=0.1,
        num_batches_tracked=1,
    )
    np.testing.assert_allclose(mean, [0.3])
    np.testing.assert_allclose(var, [0.9 * 1 + 0.1 * 7])
    assert numpy_bn.batch_stats(x)[1][0] == pytest.approx(14 / 3)


def test_eval_uses_running_statistics_and_accepts_a_batch_of_one():
    layer = numpy_bn.BatchNorm(3, dtype=np.float64)
    layer.running_mean = np.array([1.0, 2.0, 3.0])
    layer.running_var = np.array([4.0, 9.0, 16.0])
    layer.eval()
    out = layer(np.array([[1.0, 5.0, 7.0]]))
    np.testing.assert_allclose(out, [[0.0, 3 / np.sqrt(9 + 1e-5), 4 / np.sqrt(16 + 1e-5)]])
    assert layer.num_batches_tracked == 0


# --------------------------------------------------------------------------------------------
# Edge cases and errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_gives_beta_and_finite_gradients(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3, 2)).astype(dtype)
    x[:, 1] = 0.1  # not exactly representable: the mean of a constant may round
    beta = np.array([0.5, -0.25, 2.0], dtype=dtype)
    out, cache = numpy_bn.forward_train(x, np.full(3, 3.0, dtype), beta)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1], -0.25, atol=1e-5)
    dx, dgamma, dbeta = numpy_bn.backward(rng.normal(size=x.shape).astype(dtype), cache)
    assert np.isfinite(dx).all() and np.isfinite(dgamma).all() and np.isfinite(dbeta).all()
    ref = torch.nn.functional.batch_norm(
        torch.from_numpy(x),
        None,
        None,
        torch.full((3,), 3.0, dtype=torch_dtype(dtype)),
        torch.from_numpy(beta),
        training=True,
    )
    np.testing.assert_allclose(out, ref.numpy(), **TOL[dtype]["out"])


def test_large_mean_in_float32_matches_float64():
    """Mean 1e4, std 1: float32 results within 1e-3 of the float64 computation on the same
    (float32) input. The naive E[x^2] - E[x]^2 would lose every digit here."""
    rng = np.random.default_rng(3)
    x32 = (1e4 + rng.normal(size=(256, 4, 8))).astype(np.float32)
    out32, cache32 = numpy_bn.forward_train(x32)
    out64, cache64 = numpy_bn.forward_train(x32.astype(np.float64))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=1e-3)
    np.testing.assert_allclose(cache32.var, cache64.var, rtol=1e-3)
    dout = rng.normal(size=x32.shape)
    dx32, _, _ = numpy_bn.backward(dout.astype(np.float32), cache32)
    dx64, _, _ = numpy_bn.backward(dout, cache64)
    np.testing.assert_allclose(dx32, dx64, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 2, 1, 1), (1, 1, 1, 1, 1)])
def test_one_value_per_channel_in_training_is_pytorch_error(shape):
    x = np.ones(shape)
    with pytest.raises(ValueError) as ours:
        numpy_bn.forward_train(x)
    with pytest.raises(ValueError) as theirs:
        torch.nn.functional.batch_norm(torch.ones(shape), None, None, training=True)
    assert (
        str(ours.value)
        == f"Expected more than 1 value per channel when training, got input size {shape}"
    )
    assert str(theirs.value).startswith("Expected more than 1 value per channel when training")
    # evaluation mode normalizes each sample on its own: one value is fine
    out = numpy_bn.forward_eval(x, np.zeros(shape[1]), np.ones(shape[1]))
    assert out.shape == shape


@pytest.mark.parametrize("bad", [np.ones(3), np.array(1.0)])
def test_wrong_number_of_dimensions(bad):
    with pytest.raises(
        ValueError, match=r"expected an input of shape \(N, C\) or \(N, C, \*spatial\), got [01]D"
    ):
        numpy_bn.forward_train(bad)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex128, np.float16])
def test_non_floating_input(dtype):
    with pytest.raises(TypeError, match="expected a floating-point input"):
        numpy_bn.forward_train(np.ones((4, 3), dtype=dtype))


def test_not_an_array():
    with pytest.raises(TypeError, match="expected a NumPy array, got list"):
        numpy_bn.forward_train([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "gamma, beta, message",
    [
        (np.ones(4), None, "gamma should contain 3 elements not 4"),
        (None, np.ones(2), "beta should contain 3 elements not 2"),
        (np.ones((1, 3)), None, r"gamma should be a vector of shape \(3,\), got shape \(1, 3\)"),
    ],
)
def test_parameters_of_the_wrong_shape(gamma, beta, message):
    with pytest.raises(ValueError, match=message):
        numpy_bn.forward_train(np.ones((4, 3)), gamma, beta)


def test_running_stats_of_the_wrong_shape():
    with pytest.raises(ValueError, match="running_mean should contain 3 elements not 2"):
        numpy_bn.forward_eval(np.ones((4, 3)), np.zeros(2), np.ones(3))


def test_layer_rejects_wrong_channel_count():
    with pytest.raises(
        ValueError, match=r"expected input of shape \(N, 3, \*\), got shape \(4, 2\)"
    ):
        numpy_bn.BatchNorm(3)(np.ones((4, 2), dtype=np.float32))


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        numpy_bn.BatchNorm(3).backward(np.ones((4, 3)))


@pytest.mark.parametrize(
    "dout, error, says",
    [
        (np.ones((1, 3, 5)), ValueError, r"dout has a shape of \(1, 3, 5\) and the output"),
        (np.ones((4, 3)), ValueError, r"shape of \(4, 3, 5\)"),
        (np.ones((4, 3, 5), dtype=np.int64), TypeError, "floating-point dout .* got int64"),
        ([[1.0]], TypeError, "NumPy array, got list"),
    ],
)
def test_backward_refuses_a_dout_that_is_not_the_outputs_shape_or_float(dout, error, says):
    """A dout that broadcasts, (1, 3, 5) for a (4, 3, 5) output, gave a result (a wrong
    one); one that does not broadcast gave NumPy's broadcast error; an integer one passed."""
    layer = numpy_bn.BatchNorm(3)
    _, cache = numpy_bn.forward_train(np.random.default_rng(0).normal(size=(4, 3, 5)), None, None)
    layer(np.ones((4, 3, 5), dtype=np.float32) + np.arange(5))
    for backward in (layer.backward, lambda d: numpy_bn.backward_staged(d, cache)):
        with pytest.raises(error, match=says):
            backward(dout)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 2), (4, 3, 0)])
def test_empty_batch_gives_an_empty_output_like_torch(shape):
    """PyTorch's answer for an empty batch: an empty output, zero parameter gradients, and
    running statistics left alone (the module still counts the batch)."""
    x = np.ones(shape)
    out, cache = numpy_bn.forward_train(x, np.full(3, 2.0), np.ones(3))
    theirs = torch.nn.functional.batch_norm(torch.ones(shape), None, None, training=True)
    assert out.shape == tuple(theirs.shape) == shape
    for backward in (numpy_bn.backward, numpy_bn.backward_staged):
        dx, dgamma, dbeta = backward(np.ones(shape), cache)
        assert dx.shape == shape
        np.testing.assert_array_equal(dgamma, np.zeros(3))
        np.testing.assert_array_equal(dbeta, np.zeros(3))
    layer, module = numpy_bn.BatchNorm(3, dtype=np.float64), torch.nn.BatchNorm1d(3).double()
    layer(np.ones((0, 3))), module(torch.ones(0, 3, dtype=torch.float64))
    np.testing.assert_array_equal(layer.running_mean, module.running_mean.numpy())
    np.testing.assert_array_equal(layer.running_var, module.running_var.numpy())
    assert layer.num_batches_tracked == int(module.num_batches_tracked) == 1


@pytest.mark.parametrize("eps, training", [(-1.0, True), (-1e-3, False)])
def test_eps_that_is_not_allowed_is_pytorchs_error(eps, training):
    x = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError) as theirs:
        torch.nn.functional.batch_norm(
            torch.from_numpy(x),
            torch.zeros(3).double(),
            torch.ones(3).double(),
            eps=eps,
            training=training,
        )
    with pytest.raises(ValueError) as ours:
        if training:
            numpy_bn.forward_train(x, eps=eps)
        else:
            numpy_bn.forward_eval(x, np.zeros(3), np.ones(3), eps=eps)
    assert str(ours.value) == str(theirs.value)
    # eps = 0 in evaluation is allowed, by both; in training by the reference only (the
    # deliberate difference chapters 3 and 6 need)
    numpy_bn.forward_eval(x, np.zeros(3), np.ones(3), eps=0.0)
    numpy_bn.forward_train(x, eps=0.0)


def test_the_layer_refuses_a_list_with_a_type_error():
    with pytest.raises(TypeError, match="expected a NumPy array, got list"):
        numpy_bn.BatchNorm(2)([[1.0, 2.0], [3.0, 4.0]])
