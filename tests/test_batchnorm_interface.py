"""Every BatchNorm of the course is a drop-in for torch.nn.BatchNorm1d/2d/3d and F.batch_norm.

One parity suite, run on every implementation in :data:`IMPLEMENTATIONS` (chapter 5's
``torch_bn`` and ``compiled_bn``, its passes compiled by ``torch.compile``; chapter 8's
``triton_bn``, here in Triton's interpreter on CPU tensors): the modules against torch.nn
over many steps, PyTorch's own module test inputs, the constructor,
state, ``repr`` and ``state_dict``, the errors PyTorch raises, and the inputs a hostile user
tries. A new implementation gets all of it by adding one line to :data:`IMPLEMENTATIONS`.
What is particular to one backend (gradcheck and double backward, accumulation precision,
kernel tiles) is in its own file: test_torch_bn.py, test_triton_bn.py.

Tolerances (stated once, in tests/bn_testing.py), comparing ours with PyTorch on the same input:

* float64: outputs and gradients within ``rtol=1e-9, atol=1e-10``, buffers within
  ``rtol=1e-10, atol=1e-12``: the same formulas in a different order differ by a few ulps
  (1e-16) times the sizes involved.
* float32: outputs within ``rtol=1e-5, atol=2e-5`` (normalized values are O(1) to O(sqrt(m)),
  float32 resolves 1.2e-7 relative, and the statistics carry an error of O(m * 1e-7));
  gradients within ``rtol=1e-4, atol=2e-4`` (the backward pass sums m products, twice);
  buffers within ``rtol=1e-5, atol=1e-6`` (PyTorch updates them in float64 on the CPU, we in
  float32: one rounding apart per step, not compounding since each step shrinks the old value).
* float16 / bfloat16 inputs: both compute in float32 and round the result to the input's
  dtype, so they may differ by one unit in the last place of that dtype: 2^-10 relative for
  float16, 2^-7 for bfloat16 (tolerances of twice that, plus an absolute term of the same size
  for values near 0). float32 parameters and buffers get the float32 tolerances.

Hypothesis runs derandomized (tests/conftest.py); the interpreted Triton kernels run fewer
examples and steps (:class:`Implementation`), on the same small shapes.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bn_testing import (
    F32,
    F64,
    FUNCTIONAL_ERRORS,
    LAYOUTS,
    LAYOUTS_4D,
    RM,
    RV,
    TOL,
    X,
    assert_close,
    assert_same_state,
    compare_step,
    half_tol,
    make_input,
    module_pair,
    raised,
    randomize,
)
from bncourse import compiled_bn, fold, torch_bn, training


@dataclass(frozen=True)
class Implementation:
    """A BatchNorm of the course: a module with ``batch_norm`` and ``BatchNorm1d/2d/3d``, and
    how many hypothesis examples and steps per example its property tests can afford."""

    module: ModuleType
    examples: int = 60
    steps: int = 24

    def __getattr__(self, name: str):  # batch_norm, BatchNorm1d, ...: the module's
        return getattr(self.module, name)


def _triton() -> list:
    try:
        from bncourse import triton_bn
    except ImportError as error:  # Triton publishes Linux wheels only
        return [pytest.param(None, id="triton_bn", marks=pytest.mark.skip(reason=str(error)))]
    return [pytest.param(Implementation(triton_bn, examples=8, steps=6), id="triton_bn")]


IMPLEMENTATIONS = [
    pytest.param(Implementation(torch_bn), id="torch_bn"),
    # torch.compile'd: every new number of dimensions, dtype, layout or option compiles (seconds
    # each), so fewer examples; one xdist worker shares the compilations
    pytest.param(
        Implementation(compiled_bn, examples=4, steps=20),
        id="compiled_bn",
        marks=pytest.mark.xdist_group("compiled_bn"),
    ),
    *_triton(),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request, monkeypatch) -> Implementation:
    if request.param.module is not compiled_bn:
        yield request.param
        return
    # compiled_bn through TorchDynamo and AOTAutograd (guards, dynamic shapes, the autograd
    # node) without TorchInductor's code generation, seconds per graph for every configuration
    # drawn here: tests/test_compiled_bn.py compares the generated code's results with
    # torch.nn's on the main configurations
    monkeypatch.setattr(compiled_bn, "BACKEND", "aot_eager")
    yield request.param
    reason = compiled_bn.compile_disabled()
    assert reason is None, f"compiled_bn fell back to eager: {reason}"


# --------------------------------------------------------------------------------------------
# Property tests: the modules against torch.nn over many steps
# --------------------------------------------------------------------------------------------
@st.composite
def configurations(draw, dtypes=(torch.float64, torch.float32)):
    ndim = draw(st.integers(2, 5))
    layouts = [*LAYOUTS, *(LAYOUTS_4D if ndim >= 4 else ())]
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
    batch sizes changing from step to step; compare everything after every step. ``tol``:
    tolerances for "out", "grad" (of the input), "param" (gradients of weight and bias) and
    "stats". ``reference=True``: ``theirs`` is a float64 module fed the same numbers."""
    g = torch.Generator().manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    c = cfg["channels"]
    for step in range(steps):
        training_ = step < 3 or rng.random() < 0.7
        ours.train(training_)
        theirs.train(training_)
        shape = (int(rng.integers(2, 6)), c, *cfg["spatial"])
        x = make_input(
            shape,
            input_dtype,
            cfg["layout"],
            g,
            loc=float(rng.uniform(-3, 3)),
            scale=float(rng.uniform(0.1, 3)),
        )
        dy = make_input(shape, input_dtype, cfg["layout"], g)
        compare_step(ours, theirs, x, dy, tol, cfg["layout"], widen=reference)


def test_modules_match_torch_nn_over_many_steps(impl):
    """Outputs, the gradients of input, weight and bias, and every buffer agree with
    nn.BatchNorm1d/2d/3d over many steps switching between training and evaluation, for every
    option, in float32 and float64, for inputs in every layout a user's views give
    (``bn_testing.make_input``: transposes, slices with steps, expands, channels-last slices),
    with the outputs' and input gradients' strides torch.nn gives."""

    @settings(max_examples=impl.examples)
    @given(configurations())
    def check(cfg):
        kwargs = dict(
            eps=cfg["eps"],
            momentum=cfg["momentum"],
            affine=cfg["affine"],
            track_running_stats=cfg["track_running_stats"],
            dtype=cfg["dtype"],
            bias=cfg["bias"],
        )
        ours, theirs = module_pair(impl, cfg["ndim"], cfg["channels"], **kwargs)
        randomize(theirs, torch.Generator().manual_seed(cfg["seed"]))
        ours.load_state_dict(theirs.state_dict())
        run_steps(cfg, ours, theirs, impl.steps, cfg["dtype"], TOL[cfg["dtype"]])

    check()


@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("layout", ["strided", "transposed", "expanded", "channels_last_slice"])
def test_every_layout_of_view_matches_torch_nn_with_its_strides(impl, layout, ndim):
    """Each kind of view a user hands over (``make_input``; the dense layouts are in every
    other test), not only those hypothesis draws: values and strides of outputs and input
    gradients as torch.nn's, in training and evaluation. After ``bn(x.transpose(1, 2))``,
    ``y.view(N, -1)`` works, as with torch.nn."""
    if layout in LAYOUTS_4D and ndim < 4:
        pytest.skip("channels last is for 4 and 5 dimensions")
    spatial = (3, 2)[: ndim - 2]
    cfg = dict(channels=3, spatial=spatial, layout=layout, seed=ndim)
    ours, theirs = module_pair(impl, ndim, 3, momentum=0.3)
    run_steps(cfg, ours, theirs, 4, torch.float32, F32)
    if layout == "transposed":
        assert (
            ours(make_input((4, 3, *spatial), torch.float32, layout, None)).view(4, -1) is not None
        )


def test_half_precision_inputs_match_float64_torch_nn(impl):
    """float16/bfloat16 inputs, with float32 parameters and buffers (mixed precision) or with
    the whole module converted (``module.half()``), against torch.nn in float64 fed the same
    numbers: outputs and input gradients within one or two units in the last place of the
    input's dtype (we compute in float32 and round once), float32 parameter gradients and
    buffers within float32 tolerances. (PyTorch's own CPU half-precision kernel computes
    ``x * alpha + beta`` and is several units off for batches whose mean is large compared
    with their spread, so it is not the reference here.)"""

    @settings(max_examples=max(4, impl.examples // 2))
    @given(configurations(dtypes=(torch.float16, torch.bfloat16)), st.booleans())
    def check(cfg, half_module):
        kwargs = dict(
            eps=cfg["eps"],
            momentum=cfg["momentum"],
            affine=cfg["affine"],
            track_running_stats=cfg["track_running_stats"],
            bias=cfg["bias"],
        )
        ours, reference = module_pair(impl, cfg["ndim"], cfg["channels"], **kwargs)
        randomize(ours, torch.Generator().manual_seed(cfg["seed"]))
        if half_module:
            ours.to(cfg["dtype"])
        reference.load_state_dict(ours.state_dict())
        reference.double()
        run_steps(
            cfg,
            ours,
            reference,
            max(2, impl.steps // 2),
            cfg["dtype"],
            half_tol(cfg["dtype"], half_module),
            reference=True,
        )

    check()


def test_momentum_none_is_a_cumulative_average(impl):
    g = torch.Generator().manual_seed(6)
    module = impl.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    batches = [torch.randn(4, 2, generator=g, dtype=torch.float64) + i for i in range(25)]
    for x in batches:
        module(x)
    # (float64 for the Triton kernels too, whose scalar arguments are float32: 1e-7 relative)
    tol = dict(rtol=1e-6, atol=1e-6) if impl.module is not torch_bn else {}
    torch.testing.assert_close(
        module.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0), **tol
    )
    torch.testing.assert_close(
        module.running_var, torch.stack([x.var(0) for x in batches]).mean(0), **tol
    )
    assert int(module.num_batches_tracked) == 25


def test_turning_tracking_off_after_construction_is_handled_like_torch(impl):
    """``track_running_stats = False`` on a module that has buffers: training leaves them
    alone (and uses batch statistics), evaluation still normalizes with them."""
    g = torch.Generator().manual_seed(14)
    ours, theirs = module_pair(impl, 4, 3)
    randomize(theirs, g)
    ours.load_state_dict(theirs.state_dict())
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    for module in (ours, theirs):
        module.track_running_stats = False
    for training_ in (True, False, True):
        x = torch.randn(4, 3, 2, 2, generator=g) * 2 + 1
        ours.train(training_)
        theirs.train(training_)
        torch.testing.assert_close(ours(x), theirs(x), **F32["out"])
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert_same_state(ours, theirs, F32["stats"])


@pytest.mark.parametrize("with_stats", [True, False])
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_functional_training_with_any_subset_of_tensors(impl, with_stats, with_weight, with_bias):
    """F.batch_norm in training, with or without running statistics (both or neither),
    weight and bias: the same output, and the same in-place update."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    tensors = {
        "running_mean": torch.randn(3, generator=g, dtype=torch.float64) if with_stats else None,
        "running_var": torch.rand(3, generator=g, dtype=torch.float64) if with_stats else None,
        "weight": torch.randn(3, generator=g, dtype=torch.float64) if with_weight else None,
        "bias": torch.randn(3, generator=g, dtype=torch.float64) if with_bias else None,
    }
    copies = [{k: None if v is None else v.clone() for k, v in tensors.items()} for _ in range(2)]
    y_ours = impl.batch_norm(x, training=True, momentum=0.3, **copies[0])
    y_theirs = nn.functional.batch_norm(x, training=True, momentum=0.3, **copies[1])
    tol = F64 if impl.module is torch_bn else F32  # (Triton's scalar arguments are float32)
    torch.testing.assert_close(y_ours, y_theirs, **tol["out"])
    for name in tensors:
        assert_close(copies[0][name], copies[1][name], **tol["stats"])
    if with_stats:
        assert not torch.equal(copies[0]["running_mean"], tensors["running_mean"])


# --------------------------------------------------------------------------------------------
# The module's interface: constructor, parameters, buffers, repr, state_dict
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_constructor_signature_is_torch_nns(impl, name):
    def described(cls):
        return [
            (p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()
        ]

    assert described(getattr(impl, name)) == described(getattr(nn, name))


OPTIONS = [
    dict(affine=a, track_running_stats=t, bias=b)
    for a in (True, False)
    for t in (True, False)
    for b in (True, False)
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("ndim", [2, 4, 5])
def test_parameters_buffers_state_dict_and_repr_are_torch_nns(impl, options, ndim):
    ours, theirs = module_pair(
        impl, ndim, 6, eps=1e-3, momentum=None, dtype=torch.float64, **options
    )
    assert repr(ours) == repr(theirs)
    for method in ("named_parameters", "named_buffers"):
        described = [
            [(n, t.shape, t.dtype, t.requires_grad) for n, t in getattr(m, method)()]
            for m in (ours, theirs)
        ]
        assert described[0] == described[1]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for attr in (
        "num_features",
        "eps",
        "momentum",
        "affine",
        "track_running_stats",
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ):
        assert (getattr(ours, attr) is None) == (getattr(theirs, attr) is None), attr
    learnable = sum(p.numel() for p in ours.parameters())
    assert learnable == sum(p.numel() for p in theirs.parameters())


def test_reset_running_stats_and_parameters(impl):
    ours = impl.BatchNorm2d(3)
    with torch.no_grad():
        ours.weight.fill_(2.0)
        ours.bias.fill_(-1.0)
    for _ in range(3):
        ours(torch.randn(4, 3, 2, 2) * 3 + 1)
    ours.reset_running_stats()
    fresh = impl.BatchNorm2d(3)
    assert_same_state(ours, fresh, F32["stats"])
    assert torch.equal(ours.weight, torch.full((3,), 2.0))  # parameters untouched
    ours.reset_parameters()
    for a, b in zip(ours.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("direction", ["torch.nn -> ours", "ours -> torch.nn"])
def test_state_dict_round_trip_gives_identical_outputs(impl, direction):
    """Train one for a few steps, load its state_dict into a fresh other: from then on both
    give the same outputs in eval and in training, and their buffers stay equal."""
    g = torch.Generator().manual_seed(9)
    if direction == "torch.nn -> ours":
        source, target = nn.BatchNorm2d(5, momentum=0.2), impl.BatchNorm2d(5, momentum=0.2)
    else:
        source, target = impl.BatchNorm2d(5, momentum=0.2), nn.BatchNorm2d(5, momentum=0.2)
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


def test_old_state_dict_without_num_batches_tracked_loads_like_torch(impl):
    """A state_dict saved before num_batches_tracked existed (metadata version 1) loads into
    both, inside a Sequential (so the key has a prefix); with version 2 it is a missing key
    for both, with the same message."""
    results = {}
    for name, module in [("ours", impl.BatchNorm2d(3)), ("theirs", nn.BatchNorm2d(3))]:
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


def test_factory_kwargs_pickle_and_conversion(impl):
    module = impl.BatchNorm3d(4, dtype=torch.float64, device="cpu")
    assert module.weight.dtype == module.running_mean.dtype == torch.float64
    assert module.num_batches_tracked.dtype == torch.long
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert repr(loaded) == repr(module) and type(loaded) is impl.BatchNorm3d
    module.float()
    assert module.weight.dtype == torch.float32 and module.num_batches_tracked.dtype == torch.long


def test_drop_in_inside_a_small_network_trains_identically(impl):
    """The same conv net with either BatchNorm2d, the same SGD steps: the same weights."""
    nets = []
    for bn in (nn.BatchNorm2d, impl.BatchNorm2d):
        torch.manual_seed(10)
        nets.append(
            nn.Sequential(
                nn.Conv2d(2, 4, 3), bn(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
            ).double()
        )
    g = torch.Generator().manual_seed(11)
    data = [
        (
            torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=g),
        )
        for _ in range(5)
    ]
    for net in nets:
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for x, target in data:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), target).backward()
            optimizer.step()
        net.eval()
    tol = dict(rtol=1e-9, atol=1e-10) if impl.module is torch_bn else dict(rtol=1e-6, atol=1e-6)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(nets[0](data[0][0]), nets[1](data[0][0]), **tol)


def test_the_tools_that_look_for_batchnorm_layers_find_ours(impl):
    """Ours are ``_BatchNorm`` modules: torch's own SyncBatchNorm conversion takes them, and
    so do the course's freezing (chapter 7) and folding (chapter 9)."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), impl.BatchNorm2d(3), nn.ReLU())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert isinstance(converted[1], nn.SyncBatchNorm)
    assert training.batchnorm_layers(model) == [model[1]]
    randomize(model[1], torch.Generator().manual_seed(15))
    model.eval()
    x = torch.randn(2, 1, 5, 5)
    folded = fold.fold_sequential(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), **F32["out"])


# --------------------------------------------------------------------------------------------
# Errors: PyTorch's types and words
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(FUNCTIONAL_ERRORS))
def test_functional_errors_are_pytorchs(impl, case):
    args, kwargs = FUNCTIONAL_ERRORS[case]
    copies = [[a.clone() if isinstance(a, torch.Tensor) else a for a in args] for _ in range(2)]
    theirs = raised(lambda: nn.functional.batch_norm(*copies[1], **kwargs))
    assert theirs is not None, "PyTorch accepts this: not an error case"
    assert raised(lambda: impl.batch_norm(*copies[0], **kwargs)) == theirs


def test_the_exact_words_of_the_most_common_errors(impl):
    assert raised(lambda: impl.batch_norm(torch.randn(1, 3), None, None, training=True)) == (
        ValueError,
        "Expected more than 1 value per channel when training, got input size torch.Size([1, 3])",
    )
    assert raised(lambda: impl.batch_norm(X, torch.zeros(4), RV)) == (
        RuntimeError,
        "running_mean should contain 3 elements not 4",
    )
    assert raised(lambda: impl.batch_norm(X, None, None, training=True, eps=0.0)) == (
        ValueError,
        "batch_norm eps must be positive during training, but got 0.0",
    )
    assert raised(lambda: impl.BatchNorm2d(3)(torch.randn(2, 3, 4))) == (
        ValueError,
        "expected 4D input (got 3D input)",
    )


def test_deliberate_differences_are_clearer_errors(impl):
    """Where PyTorch's message is an accident of its implementation, ours says what is wrong
    (both raise)."""
    one_d = raised(lambda: impl.batch_norm(torch.randn(3), None, None, training=True))
    assert one_d == (
        ValueError,
        "batch_norm: expected an input of shape (N, C) or "
        "(N, C, *spatial), got 1D input of shape (3,)",
    )
    assert raised(lambda: nn.functional.batch_norm(torch.randn(3), None, None, training=True))
    mixed = raised(lambda: impl.batch_norm(X.double(), None, None, torch.ones(3), training=True))
    assert mixed[0] is RuntimeError and mixed[1].startswith(
        "mixed dtype: weight has dtype torch.float32 but the input has dtype torch.float64"
    )
    assert raised(
        lambda: nn.functional.batch_norm(X.double(), None, None, torch.ones(3), training=True)
    )
    graded = torch.zeros(3, requires_grad=True)
    ours = raised(lambda: impl.batch_norm(X, graded, RV))
    theirs = raised(lambda: nn.functional.batch_norm(X, graded, RV))
    assert ours == (theirs[0], theirs[1].replace("native_batch_norm", "batch_norm"))


@pytest.mark.parametrize(
    "name, bad_ndims",
    [("BatchNorm1d", [1, 4]), ("BatchNorm2d", [2, 3, 5]), ("BatchNorm3d", [3, 4, 6])],
)
def test_module_errors_for_the_number_of_dimensions(impl, name, bad_ndims):
    for ndim in bad_ndims:
        x = torch.randn((2, 3, 2, 2, 2, 2)[:ndim])
        theirs = raised(lambda: getattr(nn, name)(3)(x))  # noqa: B023 - called right away
        assert theirs is not None and raised(lambda: getattr(impl, name)(3)(x)) == theirs  # noqa: B023


def test_module_batch_of_one_in_training_counts_the_batch_like_torch(impl):
    """PyTorch counts the batch before batch_norm rejects it: num_batches_tracked is 1 after
    the error; ours does the same, so buffers agree after any sequence of calls."""
    pair = module_pair(impl, 2, 3)
    for module in pair:
        assert raised(lambda: module(torch.randn(1, 3)))[0] is ValueError  # noqa: B023
    assert int(pair[0].num_batches_tracked) == int(pair[1].num_batches_tracked) == 1
    for module in pair:  # one sample is fine in evaluation, and in training with spatial size
        module.eval()
        module(torch.randn(1, 3))
    impl.BatchNorm1d(3)(torch.randn(1, 3, 2))


@pytest.mark.parametrize("shape", [(0, 3), (0, 5, 2, 2), (4, 3, 0)])
def test_empty_batch_behaves_like_torch(impl, shape):
    weight, bias = torch.full((shape[1],), 2.0), torch.full((shape[1],), 5.0)
    results = []
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
        x, w, b = (t.clone().requires_grad_() for t in (torch.randn(shape), weight, bias))
        y = fn(x, rm, rv, w, b, training=True)
        y.sum().backward()
        results.append((y.detach(), x.grad, w.grad, b.grad, rm, rv))
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------------------------
# What a hostile user tries: PyTorch's answer, or its error
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [torch.tensor(0.1), torch.tensor(1), True])
def test_momentum_as_pytorch_accepts_it(impl, momentum):
    """A 0-d tensor, or a bool, is a float to PyTorch's argument parser (a tensor of one
    element that is not 0-d is not: see FUNCTIONAL_ERRORS)."""
    results = []
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(3), torch.ones(3)
        results.append((fn(X, rm, rv, training=True, momentum=momentum), rm, rv))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **F32["out"])
    pair = module_pair(impl, 2, 3, momentum=torch.tensor(0.2))
    torch.testing.assert_close(pair[0](X), pair[1](X), **F32["out"])
    assert_same_state(*pair, F32["stats"])


def test_strided_running_statistics_are_updated_in_place_like_torchs(impl):
    """Running statistics that are strided vectors (every other element of a buffer) are
    updated where they are, as ATen updates them; a 2-d one is refused
    (``FUNCTIONAL_ERRORS``), never updated as a reshaped copy the caller does not see."""
    results = []
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(6), torch.ones(6)
        y = fn(X, rm[::2], rv[::2], training=True, momentum=0.5)
        results.append((y, rm, rv))
    assert not torch.equal(results[1][1], torch.zeros(6))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **F32["out"])


@pytest.mark.parametrize("training_", [np.bool_(True), np.float64(1.0), 1])
def test_a_training_flag_that_is_not_a_bool_is_named_as_pytorch_names_it(impl, training_):
    """PyTorch names a NumPy type by its full name ("must be bool, not numpy.bool")."""
    theirs = raised(lambda: nn.functional.batch_norm(X, RM, RV, training=training_))
    assert theirs[0] is TypeError
    assert raised(lambda: impl.batch_norm(X, RM, RV, training=training_)) == theirs


@pytest.mark.parametrize("training_", [True, False])
def test_no_channels_at_all_is_pytorchs_index_error(impl, training_):
    """``BatchNorm2d(0)`` on an input of 0 channels: an empty batch with no weight to pick."""
    pair = module_pair(impl, 4, 0)
    errors = [raised(lambda: m.train(training_)(torch.randn(2, 0, 3, 3))) for m in pair]  # noqa: B023
    assert errors[1][0] is IndexError
    assert errors[0] == errors[1]


def test_eps_zero_in_evaluation_with_a_zero_running_variance_is_pytorchs_nan(impl):
    rm, rv = torch.tensor([1.0, 0.0, 2.0]), torch.zeros(3)
    weight, bias = torch.tensor([1.0, 2.0, 0.0]), torch.ones(3)
    ours = impl.batch_norm(X, rm, rv, weight, bias, training=False, eps=0.0)
    theirs = nn.functional.batch_norm(X, rm, rv, weight, bias, training=False, eps=0.0)
    assert torch.isnan(theirs).any()
    torch.testing.assert_close(ours, theirs, equal_nan=True)


def test_an_infinite_input_gives_pytorchs_buffers(impl):
    x = X.clone()
    x[0, 0] = math.inf
    results = []
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(3), torch.ones(3)
        results.append((fn(x, rm, rv, training=True), rm, rv))
    assert results[1][1][0] == math.inf and math.isnan(results[1][2][0])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, equal_nan=True, **F32["out"])


def _xfail_on_triton(impl, request, reason):
    if impl.module.__name__ == "bncourse.triton_bn":
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def _train_both(impl, x, dy, eps=1e-5):
    """F.batch_norm in training, ours and PyTorch's, on the same ``x`` (parameters and
    buffers in float32, or float64 for a float64 ``x``): ``(output, grad_input, grad_weight,
    grad_bias, running_mean, running_var)`` of each."""
    results = []
    c, dtype = x.shape[1], torch.float64 if x.dtype == torch.float64 else torch.float32
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
        w = torch.ones(c, dtype=dtype, requires_grad=True)
        b = torch.zeros(c, dtype=dtype, requires_grad=True)
        xx = x.clone().requires_grad_()
        y = fn(xx, rm, rv, w, b, training=True, eps=eps)
        y.backward(dy)
        results.append((y, xx.grad, w.grad, b.grad, rm, rv))
    return results


@pytest.mark.parametrize(
    "dtype, scale", [(torch.float32, 1e30), (torch.bfloat16, 1e30), (torch.float64, 1e300)]
)
def test_finite_values_whose_variance_overflows_give_pytorchs_finite_outputs(
    impl, request, dtype, scale
):
    """Squares past the largest float (|x| of 1e30 in float32): PyTorch's variance is inf, so
    its outputs and gradients are finite (0 before the bias) and its running_var is inf; a
    variance computed as ``mean(d**2) - e**2`` would be inf - inf = NaN everywhere."""
    g = torch.Generator().manual_seed(27)
    x = (torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64) * scale).to(dtype)
    dy = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64).to(dtype)
    ours, theirs = _train_both(impl, x, dy)
    assert torch.isinf(theirs[5]).all() and theirs[0].isfinite().all()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=False)


def test_a_tiny_eps_with_tiny_values_gives_pytorchs_finite_gradients(impl, request):
    """``eps=1e-45`` and values near 1e-20 in float32: invstd is about 1e20, its square
    overflows; PyTorch's input gradients (about 1e20) are finite, and so are ours."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 3, 3, generator=g) * 1e-20
    dy = torch.randn(4, 3, 3, 3, generator=g)
    ours, theirs = _train_both(impl, x, dy, eps=1e-45)
    assert theirs[1].isfinite().all() and theirs[1].abs().max() > 1e19
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_weight_and_bias_of_any_shape_with_c_elements(impl):
    """PyTorch takes a weight of shape (C, 1) and a bias of shape (1, C) in the forward pass
    (its own backward then fails; ours returns gradients of their shapes)."""
    weight = torch.tensor([[1.0], [2.0], [0.5]], requires_grad=True)
    bias = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    results = []
    for fn in (impl.batch_norm, nn.functional.batch_norm):
        rm, rv = torch.zeros(3), torch.ones(3)
        results.append((fn(X, rm, rv, weight, bias, training=True), rm, rv))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **F32["out"])
    results[0][0].sum().backward()
    assert weight.grad.shape == (3, 1) and bias.grad.shape == (1, 3)


# --------------------------------------------------------------------------------------------
# PyTorch's own module test inputs (torch.testing._internal.common_modules)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def module_infos():
    from torch.testing._internal.common_modules import module_db

    return {
        info.module_cls.__name__: info
        for info in module_db
        if info.module_cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    }


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
@pytest.mark.parametrize("training_", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_pytorch_module_inputs(impl, module_infos, name, training_, dtype):
    """Every input of ``module_inputs_torch_nn_<name>``: the same outputs, gradients and
    buffers as torch.nn's module, over three steps from the same (randomized) state."""
    info = module_infos[name]
    cases = info.module_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=True, training=training_
    )
    assert len(cases) >= 7
    tol = TOL[dtype] if impl.module is torch_bn else F32
    for case in cases:
        args, kwargs = case.constructor_input.args, case.constructor_input.kwargs
        theirs = getattr(nn, name)(*args, **kwargs).to(dtype)
        ours = getattr(impl, name)(*args, **kwargs).to(dtype)
        randomize(theirs, torch.Generator().manual_seed(12))
        ours.load_state_dict(theirs.state_dict())
        ours.train(training_)
        theirs.train(training_)
        (x,) = case.forward_input.args
        for step in range(3):
            xs = [x.detach().clone().requires_grad_() for _ in range(2)]
            out_ours, out_theirs = ours(xs[0]), theirs(xs[1])
            assert_close(out_ours, out_theirs, **tol["out"])
            dy = torch.randn(
                out_theirs.shape, generator=torch.Generator().manual_seed(step), dtype=torch.float64
            ).to(dtype)
            out_ours.backward(dy)
            out_theirs.backward(dy)
            assert_close(xs[0].grad, xs[1].grad, **tol["grad"])
            for p_ours, p_theirs in zip(ours.parameters(), theirs.parameters()):
                assert_close(p_ours.grad, p_theirs.grad, **tol["grad"])
            assert_same_state(ours, theirs, tol["stats"])


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_pytorch_module_error_inputs(impl, module_infos, name):
    info = module_infos[name]
    cases = info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float32, requires_grad=False, training=True
    )
    assert cases
    for case in cases:
        module_input = case.module_error_input
        ours = getattr(impl, name)(
            *module_input.constructor_input.args, **module_input.constructor_input.kwargs
        )
        with pytest.raises(case.error_type, match=case.error_regex):
            ours(*module_input.forward_input.args)
