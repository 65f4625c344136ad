"""bncourse.torch_bn against torch.nn.BatchNorm1d/2d/3d, F.batch_norm and autograd.

Tolerances (stated once, used below), comparing ours with PyTorch on the same input:

* float64: outputs and gradients within ``rtol=1e-9, atol=1e-10``, buffers within
  ``rtol=1e-10, atol=1e-12``: the same formulas in a different order differ by a few ulps
  (1e-16) times the sizes involved.
* float32: outputs within ``rtol=1e-5, atol=2e-5`` (normalized values are O(1) to O(sqrt(m)),
  float32 resolves 1.2e-7 relative, and the statistics carry an error of O(m * 1e-7));
  gradients within ``rtol=1e-4, atol=2e-4`` (the backward pass sums m products, twice);
  buffers within ``rtol=1e-5, atol=1e-6`` (PyTorch updates them in float64 on the CPU, we in
  float32: one rounding apart per step, not compounding since each step shrinks the old value).
* float16 / bfloat16 inputs: both implementations compute in float32 and round the result to
  the input's dtype, so they may differ by one unit in the last place of that dtype: 2^-10
  relative for float16, 2^-7 for bfloat16 (tolerances of twice that, plus an absolute term of
  the same size for values near 0).  float32 parameters and buffers get the float32 tolerances.

Hypothesis runs derandomized (tests/conftest.py).  Checks that need a CUDA device are skipped,
with the reason printed in pytest's summary, where there is none.
"""
from __future__ import annotations

import functools
import inspect
import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bncourse import numpy_bn, torch_bn
from bncourse.__main__ import main as cli
from bn_testing import (F32, F64, FUNCTIONAL_ERRORS, HALF, RV, TOL, X, assert_close,
                        assert_same_state, compare_step, half_tol, make_input, module_pair,
                        randomize, raised)

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: torch_bn uses only device-generic torch operations, which "
           "every other test runs on the CPU")


modules = functools.partial(module_pair, torch_bn)  # (ours, torch.nn's) for ndim, *args


# --------------------------------------------------------------------------------------------
# The autograd.Function: gradcheck, gradgradcheck, a single hand-written node
# --------------------------------------------------------------------------------------------
SHAPES = [(5, 3), (3, 2, 4), (2, 3, 2, 2), (2, 2, 2, 1, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("params", ["affine", "none", "weight-only"])
def test_gradcheck_and_gradgradcheck_float64(shape, training, params):
    """First and second derivatives of our batch_norm match finite differences (float64)."""
    g = torch.Generator().manual_seed(len(shape))
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    weight = torch.randn(c, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(c, generator=g, dtype=torch.float64).requires_grad_()
    running_mean = torch.randn(c, generator=g, dtype=torch.float64)
    running_var = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    inputs = {"affine": (x, weight, bias), "none": (x,), "weight-only": (x, weight)}[params]

    def f(x, weight=None, bias=None):
        rm, rv = (None, None) if training else (running_mean, running_var)
        return torch_bn.batch_norm(x, rm, rv, weight, bias, training=training, eps=1e-3)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_second_derivatives_equal_pytorchs():
    """Not only consistent with finite differences: equal to PyTorch's double backward."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    dy, v = torch.randn(2, *x.shape, generator=g, dtype=torch.float64)
    results = []
    for fn in (torch_bn.batch_norm, nn.functional.batch_norm):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, None, None, ws, bs, training=True)
        dx, dw = torch.autograd.grad(y, (xs, ws), dy, create_graph=True)
        results.append(torch.autograd.grad((dx * v).sum() + dw.sum(), (xs, ws)))  # bias: none
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_backward_is_one_hand_written_node():
    """Autograd records a single BatchNormFunction node: nothing of the forward's operations."""
    x = torch.randn(4, 3, 2, requires_grad=True)
    module = torch_bn.BatchNorm1d(3)
    y = module(x)
    assert type(y.grad_fn).__name__ == "BatchNormFunctionBackward"
    nexts = [type(fn).__name__ if fn is not None else None for fn, _ in y.grad_fn.next_functions]
    assert nexts[:3] == ["AccumulateGrad"] * 3  # straight to x, weight and bias
    assert all(name is None for name in nexts[3:])  # running stats, flags: not differentiable


def test_backward_closed_form_matches_numpy_reference():
    """batch_norm_backward is chapter 3's closed form: compare with numpy_bn.backward."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3, 4)) * 2 + 1
    gamma, dout = rng.normal(size=3), rng.normal(size=(6, 3, 4))
    _, cache = numpy_bn.forward_train(x, gamma, None, 1e-5)
    expected = numpy_bn.backward(dout, cache)
    mean, var = torch_bn.batch_stats(torch.from_numpy(x))
    got = torch_bn.batch_norm_backward(torch.from_numpy(dout), torch.from_numpy(x),
                                       torch.from_numpy(gamma), mean, torch.rsqrt(var + 1e-5),
                                       training=True)
    for ours, reference in zip(got, expected):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Property tests: the modules against torch.nn over many steps
# --------------------------------------------------------------------------------------------
@st.composite
def configurations(draw, dtypes=(torch.float64, torch.float32)):
    ndim = draw(st.integers(2, 5))
    layouts = ["contiguous", "strided"] + (["channels_last"] if ndim >= 4 else [])
    return dict(
        ndim=ndim,
        channels=draw(st.integers(1, 4)),
        spatial=tuple(draw(st.lists(st.integers(1, 3), min_size=ndim - 2, max_size=ndim - 2))),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        momentum=draw(st.sampled_from([None, 0.1, 0.5, 1.0, 0.0])),
        affine=draw(st.booleans()),
        bias=draw(st.booleans()),
        track_running_stats=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        layout=draw(st.sampled_from(layouts)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def run_steps(cfg, ours, theirs, steps, input_dtype, tol, reference=False):
    """``steps`` forward/backward passes through both modules, switching train/eval, with
    batch sizes changing from step to step; compare everything after every step.  ``tol``:
    tolerances for "out", "grad" (of the input), "param" (gradients of weight and bias) and
    "stats".  ``reference=True``: ``theirs`` is a float64 module fed the same numbers."""
    g = torch.Generator().manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    c = cfg["channels"]
    for step in range(steps):
        training = step < 3 or rng.random() < 0.7
        ours.train(training)
        theirs.train(training)
        shape = (int(rng.integers(2, 6)), c, *cfg["spatial"])
        x = make_input(shape, input_dtype, cfg["layout"], g, loc=float(rng.uniform(-3, 3)),
                       scale=float(rng.uniform(0.1, 3)))
        dy = make_input(shape, input_dtype, cfg["layout"], g)
        compare_step(ours, theirs, x, dy, tol, cfg["layout"], widen=reference)


@given(configurations())
def test_modules_match_torch_nn_over_many_steps(cfg):
    """Outputs, the gradients of input, weight and bias, and every buffer agree with
    nn.BatchNorm1d/2d/3d over 24 steps switching between training and evaluation, for every
    option, in float32 and float64, for contiguous, channels_last and strided inputs."""
    kwargs = dict(eps=cfg["eps"], momentum=cfg["momentum"], affine=cfg["affine"],
                  track_running_stats=cfg["track_running_stats"], dtype=cfg["dtype"],
                  bias=cfg["bias"])
    ours, theirs = modules(cfg["ndim"], cfg["channels"], **kwargs)
    randomize(theirs, torch.Generator().manual_seed(cfg["seed"]))
    ours.load_state_dict(theirs.state_dict())
    tol = TOL[cfg["dtype"]]
    run_steps(cfg, ours, theirs, 24, cfg["dtype"], tol)


@given(configurations(dtypes=(torch.float16, torch.bfloat16)), st.booleans())
def test_half_precision_inputs_match_float64_torch_nn(cfg, half_module):
    """float16/bfloat16 inputs, with float32 parameters and buffers (mixed precision) or with
    the whole module converted (``module.half()``), against torch.nn in float64 fed the same
    numbers: outputs and input gradients within one or two units in the last place of the
    input's dtype (we compute in float32 and round once), float32 parameter gradients and
    buffers within float32 tolerances.  (PyTorch's own CPU half-precision kernel computes
    ``x * alpha + beta`` and is several units off for batches whose mean is large compared
    with their spread, so it is not the reference here.)"""
    kwargs = dict(eps=cfg["eps"], momentum=cfg["momentum"], affine=cfg["affine"],
                  track_running_stats=cfg["track_running_stats"], bias=cfg["bias"])
    ours, reference = modules(cfg["ndim"], cfg["channels"], **kwargs)
    randomize(ours, torch.Generator().manual_seed(cfg["seed"]))
    if half_module:
        ours.to(cfg["dtype"])
    reference.load_state_dict(ours.state_dict())
    reference.double()
    run_steps(cfg, ours, reference, 12, cfg["dtype"], half_tol(cfg["dtype"], half_module), reference=True)


def test_half_precision_statistics_accumulate_in_float32():
    """A float16 batch with a large mean: the result equals the float32 computation on the same
    numbers, rounded to float16 (a float16 sum of 4096 values near 100 would be off by ~1%)."""
    g = torch.Generator().manual_seed(4)
    x16 = (100 + torch.randn(64, 2, 8, 8, generator=g)).half()
    y16 = torch_bn.batch_norm(x16, None, None, training=True)
    y32 = torch_bn.batch_norm(x16.float(), None, None, training=True)
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16, y32.half(), **HALF[torch.float16])


def test_large_mean_in_float32_matches_float64():
    """Mean 1e4, std 1: the float32 forward and backward stay within 1e-3 of float64 on the
    same input, and at least as close as PyTorch's.  Float32 numbers near 1e4 are 9.8e-4
    apart, so the mean itself can only be rounded to within 4.9e-4: that is the floor, which
    the corrected two-pass statistics reach (a plain float32 mean is off by several units)."""
    g = torch.Generator().manual_seed(5)
    x = (1e4 + torch.randn(256, 4, 8, generator=g)).float()
    dy = torch.randn(x.shape, generator=g)
    results = {}
    for dtype in (torch.float32, torch.float64):
        xs = x.to(dtype).detach().requires_grad_()
        y = torch_bn.batch_norm(xs, None, None, training=True)
        y.backward(dy.to(dtype))
        results[dtype] = (y.detach().double(), xs.grad.double())
    xs = x.clone().requires_grad_()
    y = nn.functional.batch_norm(xs, None, None, training=True)
    y.backward(dy)
    for ours, theirs, exact in zip(results[torch.float32], (y.detach().double(), xs.grad.double()),
                                   results[torch.float64]):
        torch.testing.assert_close(ours, exact, rtol=0, atol=1e-3)
        assert (ours - exact).abs().max() <= (theirs - exact).abs().max() * 1.01


def test_momentum_none_is_a_cumulative_average():
    g = torch.Generator().manual_seed(6)
    module = torch_bn.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    batches = [torch.randn(4, 2, generator=g, dtype=torch.float64) + i for i in range(25)]
    for x in batches:
        module(x)
    torch.testing.assert_close(module.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    torch.testing.assert_close(module.running_var, torch.stack([x.var(0) for x in batches]).mean(0))
    assert int(module.num_batches_tracked) == 25


def test_turning_tracking_off_after_construction_is_handled_like_torch():
    """``track_running_stats = False`` on a module that has buffers: training leaves them
    alone (and uses batch statistics), evaluation still normalizes with them."""
    g = torch.Generator().manual_seed(14)
    ours, theirs = modules(4, 3)
    randomize(theirs, g)
    ours.load_state_dict(theirs.state_dict())
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    for module in (ours, theirs):
        module.track_running_stats = False
    for training in (True, False, True):
        x = torch.randn(4, 3, 2, 2, generator=g) * 2 + 1
        ours.train(training)
        theirs.train(training)
        torch.testing.assert_close(ours(x), theirs(x), **F32["out"])
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert_same_state(ours, theirs, F32["stats"])


@pytest.mark.parametrize("with_stats", [True, False])
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_functional_training_with_any_subset_of_tensors(with_stats, with_weight, with_bias):
    """F.batch_norm in training, with or without running statistics (both or neither),
    weight and bias: the same output, and the same in-place update."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    tensors = {"running_mean": torch.randn(3, generator=g, dtype=torch.float64) if with_stats else None,
               "running_var": torch.rand(3, generator=g, dtype=torch.float64) if with_stats else None,
               "weight": torch.randn(3, generator=g, dtype=torch.float64) if with_weight else None,
               "bias": torch.randn(3, generator=g, dtype=torch.float64) if with_bias else None}
    copies = [{k: None if v is None else v.clone() for k, v in tensors.items()} for _ in range(2)]
    y_ours = torch_bn.batch_norm(x, training=True, momentum=0.3, **copies[0])
    y_theirs = nn.functional.batch_norm(x, training=True, momentum=0.3, **copies[1])
    torch.testing.assert_close(y_ours, y_theirs, **F64["out"])
    for name in tensors:
        assert_close(copies[0][name], copies[1][name], **F64["stats"])
    if with_stats:
        assert not torch.equal(copies[0]["running_mean"], tensors["running_mean"])


# --------------------------------------------------------------------------------------------
# The module's interface: constructor, parameters, buffers, repr, state_dict
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_constructor_signature_is_torch_nns(name):
    def described(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert described(getattr(torch_bn, name)) == described(getattr(nn, name))


OPTIONS = [dict(affine=a, track_running_stats=t, bias=b)
           for a in (True, False) for t in (True, False) for b in (True, False)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("ndim", [2, 4, 5])
def test_parameters_buffers_state_dict_and_repr_are_torch_nns(options, ndim):
    ours, theirs = modules(ndim, 6, eps=1e-3, momentum=None, dtype=torch.float64, **options)
    assert repr(ours) == repr(theirs)
    for method in ("named_parameters", "named_buffers"):
        described = [[(n, t.shape, t.dtype, t.requires_grad) for n, t in getattr(m, method)()]
                     for m in (ours, theirs)]
        assert described[0] == described[1]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats",
                 "weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert (getattr(ours, attr) is None) == (getattr(theirs, attr) is None), attr
    learnable = sum(p.numel() for p in ours.parameters())
    assert learnable == sum(p.numel() for p in theirs.parameters())


def test_reset_running_stats_and_parameters():
    ours = torch_bn.BatchNorm2d(3)
    with torch.no_grad():
        ours.weight.fill_(2.0)
        ours.bias.fill_(-1.0)
    for _ in range(3):
        ours(torch.randn(4, 3, 2, 2) * 3 + 1)
    ours.reset_running_stats()
    fresh = torch_bn.BatchNorm2d(3)
    assert_same_state(ours, fresh, F32["stats"])
    assert torch.equal(ours.weight, torch.full((3,), 2.0))  # parameters untouched
    ours.reset_parameters()
    for a, b in zip(ours.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("direction", ["torch.nn -> ours", "ours -> torch.nn"])
def test_state_dict_round_trip_gives_identical_outputs(direction):
    """Train one for a few steps, load its state_dict into a fresh other: from then on both
    give the same outputs in eval and in training, and their buffers stay equal."""
    g = torch.Generator().manual_seed(9)
    if direction == "torch.nn -> ours":
        source, target = nn.BatchNorm2d(5, momentum=0.2), torch_bn.BatchNorm2d(5, momentum=0.2)
    else:
        source, target = torch_bn.BatchNorm2d(5, momentum=0.2), nn.BatchNorm2d(5, momentum=0.2)
    randomize(source, g)
    for _ in range(4):
        source(torch.randn(6, 5, 3, 3, generator=g) * 2 + 1)
    target.load_state_dict(source.state_dict())
    assert int(target.num_batches_tracked) == 4
    for mode in ("eval", "train", "eval"):
        source.train(mode == "train")
        target.train(mode == "train")
        x = torch.randn(6, 5, 3, 3, generator=g) * 2 + 1
        torch.testing.assert_close(target(x), source(x), **F32["out"])
        assert_same_state(target, source, F32["stats"])


def test_old_state_dict_without_num_batches_tracked_loads_like_torch():
    """A state_dict saved before num_batches_tracked existed (metadata version 1) loads into
    both, inside a Sequential (so the key has a prefix); with version 2 it is a missing key
    for both, with the same message."""
    results = {}
    for name, module in [("ours", torch_bn.BatchNorm2d(3)), ("theirs", nn.BatchNorm2d(3))]:
        model = nn.Sequential(module)
        state = nn.Sequential(nn.BatchNorm2d(3)).state_dict()
        del state["0.num_batches_tracked"]
        state._metadata["0"]["version"] = 1
        model.load_state_dict(state)
        assert int(module.num_batches_tracked) == 0
        state._metadata["0"]["version"] = 2
        with pytest.raises(RuntimeError) as error:
            model.load_state_dict(state)
        results[name] = str(error.value)
    assert 'Missing key(s) in state_dict: "0.num_batches_tracked"' in results["ours"]
    assert results["ours"] == results["theirs"]


def test_factory_kwargs_pickle_and_conversion():
    module = torch_bn.BatchNorm3d(4, dtype=torch.float64, device="cpu")
    assert module.weight.dtype == module.running_mean.dtype == torch.float64
    assert module.num_batches_tracked.dtype == torch.long
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert repr(loaded) == repr(module) and type(loaded) is torch_bn.BatchNorm3d
    module.float()
    assert module.weight.dtype == torch.float32 and module.num_batches_tracked.dtype == torch.long


def test_drop_in_inside_a_small_network_trains_identically():
    """The same conv net with either BatchNorm2d, the same SGD steps: the same weights."""
    torch.manual_seed(10)
    nets = []
    for bn in (nn.BatchNorm2d, torch_bn.BatchNorm2d):
        torch.manual_seed(10)
        nets.append(nn.Sequential(nn.Conv2d(2, 4, 3), bn(4), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(4 * 4 * 4, 3)).double())
    g = torch.Generator().manual_seed(11)
    data = [(torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (8,), generator=g)) for _ in range(5)]
    for net in nets:
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for x, target in data:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), target).backward()
            optimizer.step()
        net.eval()
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(nets[0](data[0][0]), nets[1](data[0][0]), **F64["out"])


# --------------------------------------------------------------------------------------------
# Errors: PyTorch's types and words
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(FUNCTIONAL_ERRORS))
def test_functional_errors_are_pytorchs(case):
    args, kwargs = FUNCTIONAL_ERRORS[case]
    copies = [[a.clone() if isinstance(a, torch.Tensor) else a for a in args] for _ in range(2)]
    theirs = raised(lambda: nn.functional.batch_norm(*copies[1], **kwargs))
    assert theirs is not None, "PyTorch accepts this: not an error case"
    assert raised(lambda: torch_bn.batch_norm(*copies[0], **kwargs)) == theirs


def test_the_exact_words_of_the_most_common_errors():
    assert raised(lambda: torch_bn.batch_norm(torch.randn(1, 3), None, None, training=True)) == (
        ValueError, "Expected more than 1 value per channel when training, got input size "
                    "torch.Size([1, 3])")
    assert raised(lambda: torch_bn.batch_norm(X, torch.zeros(4), RV)) == (
        RuntimeError, "running_mean should contain 3 elements not 4")
    assert raised(lambda: torch_bn.batch_norm(X, None, None, training=True, eps=0.0)) == (
        ValueError, "batch_norm eps must be positive during training, but got 0.0")
    assert raised(lambda: torch_bn.BatchNorm2d(3)(torch.randn(2, 3, 4))) == (
        ValueError, "expected 4D input (got 3D input)")


def test_deliberate_differences_are_clearer_errors():
    """Where PyTorch's message is an accident of its implementation, ours says what is wrong
    (both raise)."""
    one_d = raised(lambda: torch_bn.batch_norm(torch.randn(3), None, None, training=True))
    assert one_d == (ValueError, "batch_norm: expected an input of shape (N, C) or "
                                 "(N, C, *spatial), got 1D input of shape (3,)")
    assert raised(lambda: nn.functional.batch_norm(torch.randn(3), None, None, training=True))
    mixed = raised(lambda: torch_bn.batch_norm(X.double(), None, None, torch.ones(3), training=True))
    assert mixed[0] is RuntimeError and mixed[1].startswith(
        "mixed dtype: weight has dtype torch.float32 but the input has dtype torch.float64")
    assert raised(lambda: nn.functional.batch_norm(X.double(), None, None, torch.ones(3), training=True))
    graded = torch.zeros(3, requires_grad=True)
    ours = raised(lambda: torch_bn.batch_norm(X, graded, RV))
    theirs = raised(lambda: nn.functional.batch_norm(X, graded, RV))
    assert ours == (theirs[0], theirs[1].replace("native_batch_norm", "batch_norm"))


@pytest.mark.parametrize("name, bad_ndims", [("BatchNorm1d", [1, 4]), ("BatchNorm2d", [2, 3, 5]),
                                             ("BatchNorm3d", [3, 4, 6])])
def test_module_errors_for_the_number_of_dimensions(name, bad_ndims):
    for ndim in bad_ndims:
        x = torch.randn((2, 3, 2, 2, 2, 2)[:ndim])
        theirs = raised(lambda: getattr(nn, name)(3)(x))
        assert theirs is not None and raised(lambda: getattr(torch_bn, name)(3)(x)) == theirs


def test_module_batch_of_one_in_training_counts_the_batch_like_torch():
    """PyTorch counts the batch before batch_norm rejects it: num_batches_tracked is 1 after
    the error; ours does the same, so buffers agree after any sequence of calls."""
    pair = modules(2, 3)
    for module in pair:
        assert raised(lambda: module(torch.randn(1, 3)))[0] is ValueError
    assert int(pair[0].num_batches_tracked) == int(pair[1].num_batches_tracked) == 1
    for module in pair:  # one sample is fine in evaluation, and in training with spatial size
        module.eval()
        module(torch.randn(1, 3))
    torch_bn.BatchNorm1d(3)(torch.randn(1, 3, 2))


@pytest.mark.parametrize("shape", [(0, 3), (0, 5, 2, 2), (4, 3, 0)])
def test_empty_batch_behaves_like_torch(shape):
    weight, bias = torch.full((shape[1],), 2.0), torch.full((shape[1],), 5.0)
    results = []
    for fn in (torch_bn.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
        x, w, b = (t.clone().requires_grad_() for t in (torch.randn(shape), weight, bias))
        y = fn(x, rm, rv, w, b, training=True)
        y.sum().backward()
        results.append((y.detach(), x.grad, w.grad, b.grad, rm, rv))
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------------------------
# PyTorch's own module test inputs (torch.testing._internal.common_modules)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def module_infos():
    from torch.testing._internal.common_modules import module_db

    return {info.module_cls.__name__: info for info in module_db
            if info.module_cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)}


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_pytorch_module_inputs(module_infos, name, training, dtype):
    """Every input of ``module_inputs_torch_nn_<name>``: the same outputs, gradients and
    buffers as torch.nn's module, over three steps from the same (randomized) state."""
    info = module_infos[name]
    cases = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                    training=training)
    assert len(cases) >= 7
    tol = TOL[dtype]
    for case in cases:
        args, kwargs = case.constructor_input.args, case.constructor_input.kwargs
        theirs = getattr(nn, name)(*args, **kwargs).to(dtype)
        ours = getattr(torch_bn, name)(*args, **kwargs).to(dtype)
        randomize(theirs, torch.Generator().manual_seed(12))
        ours.load_state_dict(theirs.state_dict())
        ours.train(training)
        theirs.train(training)
        (x,) = case.forward_input.args
        for step in range(3):
            xs = [x.detach().clone().requires_grad_() for _ in range(2)]
            out_ours, out_theirs = ours(xs[0]), theirs(xs[1])
            assert_close(out_ours, out_theirs, **tol["out"])
            dy = torch.randn(out_theirs.shape, generator=torch.Generator().manual_seed(step),
                             dtype=torch.float64).to(dtype)
            out_ours.backward(dy)
            out_theirs.backward(dy)
            assert_close(xs[0].grad, xs[1].grad, **tol["grad"])
            for p_ours, p_theirs in zip(ours.parameters(), theirs.parameters()):
                assert_close(p_ours.grad, p_theirs.grad, **tol["grad"])
            assert_same_state(ours, theirs, tol["stats"])


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_pytorch_module_error_inputs(module_infos, name):
    info = module_infos[name]
    cases = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                          requires_grad=False, training=True)
    assert cases
    for case in cases:
        module_input = case.module_error_input
        ours = getattr(torch_bn, name)(*module_input.constructor_input.args,
                                       **module_input.constructor_input.kwargs)
        with pytest.raises(case.error_type, match=case.error_regex):
            ours(*module_input.forward_input.args)


# --------------------------------------------------------------------------------------------
# CUDA, where there is a device
# --------------------------------------------------------------------------------------------
@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_matches_torch_nn(dtype, layout):
    """On the GPU torch.nn uses cuDNN or its own CUDA kernels; ours the same torch operations
    as on the CPU.  Six steps, training and evaluation."""
    g = torch.Generator().manual_seed(13)
    ours, theirs = modules(4, 8)
    randomize(theirs, g)
    ours.load_state_dict(theirs.state_dict())
    ours.cuda()
    theirs.cuda()
    # cuDNN's half-precision kernels also compute in float32: compared directly, not to
    # float64. The weight and bias gradients to the input dtype's precision: PyTorch's kernels
    # may round them through it (its CPU kernel does for bfloat16 channels_last).
    tol = F32 if dtype == torch.float32 else dict(half_tol(dtype, half_module=False), param=HALF[dtype])
    for step in range(6):
        ours.train(step % 3 != 2)
        theirs.train(step % 3 != 2)
        x = make_input((16, 8, 5, 7), dtype, layout, g, loc=1.0, scale=2.0).cuda()
        dy = torch.randn(x.shape, generator=g).to(dtype).cuda()
        compare_step(ours, theirs, x, dy, tol, layout)


# --------------------------------------------------------------------------------------------
# The benchmark command (it must run and report; speed itself is not tested)
# --------------------------------------------------------------------------------------------
def test_bench_runs_on_tiny_shapes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = cli(["bench", "--shape", "4x3x2x2", "--shape", "6x5", "--repeats", "2",
                  "--warmup", "1", "--json", str(path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "ours/native" in printed and "(4, 3, 2, 2)" in printed and "BatchNorm1d" in printed
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["repeats"] == 2
    assert [r["shape"] for r in report["results"]] == [[4, 3, 2, 2], [6, 5]]
    assert [r["module"] for r in report["results"]] == ["BatchNorm2d", "BatchNorm1d"]
    for r in report["results"]:
        for key in ("ours_ms", "native_ms", "copy_ms", "ours_median_ms", "native_median_ms",
                    "copy_median_ms", "ours_over_native", "native_over_copy"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["ours_over_native"] == pytest.approx(r["ours_ms"] / r["native_ms"])
        assert r["native_over_copy"] == pytest.approx(r["native_ms"] / r["copy_ms"])


@pytest.mark.parametrize("argv, message", [
    (["--shape", "64x"], "a shape is sizes joined by 'x'"),
    (["--shape", "64"], "2 to 5 positive sizes"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--shape", "0x3"],
     "CUDA is not available" if not torch.cuda.is_available() else "2 to 5 positive sizes"),
])
def test_bench_rejects_bad_arguments(argv, message, capsys):
    assert cli(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
