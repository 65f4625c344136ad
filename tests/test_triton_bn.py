"""bncourse.triton_bn against torch.nn.BatchNorm1d/2d/3d, bncourse.torch_bn and float64.

Two backends, one set of tests (the ``backend`` parameter); ``bncourse.triton_bn`` picks
one per call, by the input's device:

* ``interpreter``: CPU tensors, on which the kernels run in Triton's interpreter.  Every line
  of every kernel runs, one program after another, so the inputs are small ragged shapes of
  about 10^4 values, and some tests shrink the tiles so that a program handles several tiles,
  some tiles are padding and the reductions take several chunks.  Runs everywhere.
* ``cuda`` (marked ``cuda``): the compiled kernels on CUDA tensors at full size.  Skipped,
  with the reason printed, where there is no GPU.

Without a GPU, the kernels are also compiled for one (Triton's compiler and ptxas need no
device): every launch triton_bn makes, for an H100, by tests/triton_compile_check.py, which
first interprets a forward and backward in the same process (the interpreter must leave
``triton.language`` as it found it).

Its interface (errors, state, modules, hostile inputs) is tested with every other
implementation's in tests/test_batchnorm_interface.py; here are the kernels' own numerics.

Tolerances: those of tests/test_batchnorm_interface.py (``bn_testing``), with one addition: float64
running statistics agree to float32's relative precision (``rtol=1e-6``), because Triton
passes Python floats (momentum) to a kernel as float32.  Half-precision inputs are compared
with float64 torch.nn fed the same numbers: within two units in the last place of the
input's dtype, since the kernels compute in float32 and round once (to nearest on a GPU; the
interpreter rounds float32 to bfloat16 by truncation, one unit at most).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton.language as tl
from torch import nn
from triton.runtime.jit import JITFunction

from bn_testing import (
    F32,
    F64,
    NAMES,
    assert_close,
    compare_step,
    half_tol,
    make_input,
    module_pair,
    raised,
    randomize,
)
from bncourse import conventions, torch_bn, triton_bn
from bncourse.triton_bn import backends, tiles

INTERPRETER = pytest.param("interpreter")
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="no CUDA GPU here: the compiled kernels are tested by the "
            "cuda cases on a GPU; the interpreter cases run the same "
            "kernels on CPU tensors",
        ),
    ],
)
BACKENDS = [INTERPRETER, CUDA]
DEVICE = {"interpreter": "cpu", "cuda": "cuda"}

# Shapes for each backend: (shape, layout). Ragged sizes, about 10^4 values in the interpreter.
SHAPES = {
    "interpreter": [
        ((700, 14), "contiguous"),
        ((9, 7, 131), "contiguous"),
        ((5, 6, 17, 19), "contiguous"),
        ((5, 6, 17, 19), "channels_last"),
        ((3, 4, 7, 9, 11), "contiguous"),
    ],
    "cuda": [
        ((65536, 96), "contiguous"),
        ((100000, 32), "contiguous"),
        ((64, 48, 333), "contiguous"),
        ((32, 64, 28, 28), "contiguous"),
        ((32, 64, 28, 28), "channels_last"),
        ((16, 512, 7, 7), "channels_last"),
        ((8, 16, 9, 17, 19), "contiguous"),
        ((8, 16, 9, 17, 19), "channels_last"),
    ],
}
# float64 buffers: the momentum reaches the kernel as float32 (see the module docstring).
F64_TRITON = dict(F64, stats=dict(rtol=1e-6, atol=1e-9))


def shape_id(case):
    shape, layout = case
    return "x".join(map(str, shape)) + ("-cl" if layout == "channels_last" else "")


triton_pair = functools.partial(module_pair, triton_bn)  # (ours, torch.nn's) for ndim, *args


def steps(ours, reference, shape, layout, device, dtype, tol, schedule, seed, widen=False):
    """Run both modules over ``schedule`` (a string of 't' train / 'e' eval steps) and compare
    outputs, every gradient and the buffers after each step.  ``widen``: the reference is a
    float64 module fed the same numbers."""
    g = torch.Generator().manual_seed(seed)
    for step, mode in enumerate(schedule):
        if widen and mode == "e":
            # Evaluate with ours' buffers, rounded to their dtype by the updates: this checks
            # the normalization; the updates were checked after each training step.
            reference.load_state_dict(ours.state_dict())
        ours.train(mode == "t")
        reference.train(mode == "t")
        x = make_input(shape, dtype, layout, g, loc=1.0 + step, scale=2.0).to(device)
        dy = make_input(shape, dtype, layout, g).to(device)
        compare_step(ours, reference, x, dy, tol, layout, widen=widen)


# --------------------------------------------------------------------------------------------
# Parity with torch.nn: outputs, all gradients, buffers; every layout and option
# --------------------------------------------------------------------------------------------
OPTIONS = {
    "affine-momentum": dict(momentum=0.1),
    "momentum-None": dict(momentum=None),
    "no-affine-no-stats": dict(affine=False, track_running_stats=False),
}


# Every option on the first shape, one option each (in turn) on the others.
CASES_WITH_OPTIONS = [
    pytest.param(
        b.values[0], case, option, marks=b.marks, id=f"{b.values[0]}-{shape_id(case)}-{option}"
    )
    for b in BACKENDS
    for i, case in enumerate(SHAPES[b.values[0]])
    for option in (list(OPTIONS) if i == 0 else [list(OPTIONS)[i % len(OPTIONS)]])
]


@pytest.mark.parametrize("backend, case, options", CASES_WITH_OPTIONS)
def test_modules_match_torch_nn(backend, case, options):
    """Four steps (train, train, eval, train) from a randomized state: float32 outputs, the
    gradients of input, weight and bias, and the buffers agree with torch.nn's module."""
    shape, layout = case
    device = DEVICE[backend]
    ours, theirs = triton_pair(len(shape), shape[1], device=device, **OPTIONS[options])
    randomize(theirs, torch.Generator().manual_seed(1))
    ours.load_state_dict(theirs.state_dict())
    tol = F32
    steps(ours, theirs, shape, layout, device, torch.float32, tol, "ttet", seed=2)


HALF_CASES = [
    pytest.param(b.values[0], case, id=f"{b.values[0]}-{shape_id(case)}", marks=b.marks)
    for b in BACKENDS
    for case in SHAPES[b.values[0]]
    if len(case[0]) in (2, 4)
]  # (N, C), NCHW and channels last


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("half_module", [False, True], ids=["float32-params", "half-params"])
@pytest.mark.parametrize("backend, case", HALF_CASES)
def test_half_precision_inputs_match_float64(backend, case, dtype, half_module):
    """float16/bfloat16 inputs with float32 parameters and buffers (mixed precision) or with
    the module converted (``module.to(dtype)``), against float64 torch.nn on the same numbers."""
    shape, layout = case
    device = DEVICE[backend]
    ours, reference = triton_pair(len(shape), shape[1], device=device)
    randomize(ours, torch.Generator().manual_seed(3))
    if half_module:
        ours.to(dtype)
    reference.load_state_dict(ours.state_dict())
    reference.double()
    tol = half_tol(dtype, half_module)
    steps(ours, reference, shape, layout, device, dtype, tol, "tte", seed=4, widen=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_inputs_match_torch_nn(backend):
    shape, layout = SHAPES[backend][2]
    device = DEVICE[backend]
    ours, theirs = triton_pair(len(shape), shape[1], device=device, dtype=torch.float64)
    randomize(theirs, torch.Generator().manual_seed(5))
    ours.load_state_dict(theirs.state_dict())
    steps(ours, theirs, shape, layout, device, torch.float64, F64_TRITON, "tet", seed=6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_float64(backend, training):
    """The kernels' backward against finite differences, in float64 on tiny shapes (both
    layouts), with weight and bias.  (First derivatives: the backward is once-differentiable.)"""
    device = DEVICE[backend]
    g = torch.Generator().manual_seed(7)
    for shape, layout in [((5, 3), "contiguous"), ((2, 3, 2, 2), "channels_last")]:
        x = make_input(shape, torch.float64, layout, g, loc=1.0, scale=2.0).to(device)
        weight, bias = torch.randn(2, shape[1], generator=g, dtype=torch.float64).to(device)
        running_mean = torch.randn(shape[1], generator=g, dtype=torch.float64).to(device)
        running_var = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).to(device)

        def f(x, weight, bias, running_mean=running_mean, running_var=running_var):
            rm, rv = (None, None) if training else (running_mean, running_var)
            return triton_bn.batch_norm(x, rm, rv, weight, bias, training=training, eps=1e-3)

        inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
        assert torch.autograd.gradcheck(f, inputs, fast_mode=backend == "interpreter")


# --------------------------------------------------------------------------------------------
# Numerics: a large mean, a constant channel, float32 accumulation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_large_mean_in_float32_matches_float64(backend, layout):
    """Mean 1e4, std 1, float32: the statistics, the output and the input gradient stay
    within the float32 floor of the float64 result on the same input (float32 numbers near
    1e4 are 9.8e-4 apart: the mean itself can only be known to 4.9e-4, and so the output)."""
    device = DEVICE[backend]
    shape = (40, 4, 8, 8) if backend == "interpreter" else (256, 16, 32, 32)
    g = torch.Generator().manual_seed(8)
    x = make_input(shape, torch.float32, layout, g, loc=1e4, scale=1.0).to(device)
    dy = torch.randn(shape, generator=g).to(device)
    mean, var = triton_bn.batch_stats(x)
    exact = x.double().transpose(0, 1).reshape(shape[1], -1)
    torch.testing.assert_close(mean.double(), exact.mean(1), rtol=0, atol=1e-3)
    torch.testing.assert_close(var.double(), exact.var(1, correction=0), rtol=1e-3, atol=0)
    results = {}
    for dtype in (torch.float32, torch.float64):
        xs = x.to(dtype).detach().clone().requires_grad_()
        y = triton_bn.batch_norm(xs, None, None, training=True)
        y.backward(dy.to(dtype))
        results[dtype] = (y.detach().double(), xs.grad.double())
    for ours, exact in zip(results[torch.float32], results[torch.float64]):
        torch.testing.assert_close(ours, exact, rtol=0, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_channel(backend):
    """A channel whose values are all equal has variance 0: its output is ``bias`` (the
    normalized values are 0, not NaN), as torch.nn gives, and its gradients are finite."""
    device = DEVICE[backend]
    shape = SHAPES[backend][2][0]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(shape, generator=g)
    x[:, 1] = 0.3  # not exactly representable: the mean's rounding must not create variance
    x = x.to(device)
    ours, theirs = triton_pair(len(shape), shape[1], device=device)
    randomize(theirs, g)
    ours.load_state_dict(theirs.state_dict())
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    out_ours, out_theirs = ours(xs[0]), theirs(xs[1])
    assert_close(out_ours, out_theirs, **F32["out"])
    torch.testing.assert_close(
        out_ours[:, 1], torch.full_like(out_ours[:, 1], ours.bias[1].item()), **F32["out"]
    )
    dy = torch.randn(shape, generator=g).to(device)
    out_ours.backward(dy)
    out_theirs.backward(dy)
    assert torch.isfinite(xs[0].grad).all()
    assert_close(ours.running_var, theirs.running_var, **F32["stats"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_input_and_expanded_gradient(backend):
    """A non-contiguous input (every other element of a bigger tensor) is copied to a dense
    one first; an expanded ``dy`` (from ``y.sum()``) is copied to the input's layout."""
    device = DEVICE[backend]
    g = torch.Generator().manual_seed(10)
    for shape in [(64, 5, 30), (6, 3, 10, 16)]:
        x = make_input(shape, torch.float32, "strided", g).to(device)
        results = []
        for fn in (triton_bn.batch_norm, nn.functional.batch_norm):
            xs = x.clone().requires_grad_()
            weight = torch.linspace(0.5, 2.0, shape[1], device=device).requires_grad_()
            y = fn(xs, None, None, weight, None, training=True)
            (y.sum() + (y * y).sum()).backward()  # an expanded and a dense gradient, added
            results.append((y, xs.grad, weight.grad))
        for ours, theirs in zip(*results):
            assert_close(ours.detach(), theirs.detach(), **F32["grad"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_some_gradients_and_evaluation_backward(backend):
    """The backward's branches: evaluation mode (``dx = weight * invstd * dy``), no sums
    needed when neither weight nor bias wants a gradient, and weight without bias."""
    device = DEVICE[backend]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(24, 6, 7, generator=g, dtype=torch.float64).to(device) * 3 + 1
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64).to(device)
    rm = torch.randn(6, generator=g, dtype=torch.float64).to(device)
    rv = (torch.rand(6, generator=g, dtype=torch.float64) + 0.5).to(device)
    w = torch.randn(6, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(6, generator=g, dtype=torch.float64).to(device)
    for training, wants in [
        (True, (True, False, False)),
        (True, (False, True, False)),
        (False, (True, False, False)),
        (False, (True, True, True)),
    ]:
        grads = []
        for fn in (triton_bn.batch_norm, nn.functional.batch_norm):
            leaves = [t.clone().requires_grad_(want) for t, want in zip((x, w, b), wants)]
            y = fn(leaves[0], rm.clone(), rv.clone(), leaves[1], leaves[2], training=training)
            grads.append(torch.autograd.grad(y, [t for t in leaves if t.requires_grad], dy))
        for ours, theirs in zip(*grads):
            assert_close(ours, theirs, **F64["grad"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    """No atomics: two runs give bitwise identical outputs, gradients and buffers."""
    device = DEVICE[backend]
    shape, layout = SHAPES[backend][3]
    g = torch.Generator().manual_seed(12)
    x = make_input(shape, torch.float32, layout, g, loc=3.0).to(device)
    dy = make_input(shape, torch.float32, layout, g).to(device)
    runs = []
    for _ in range(2):
        module = getattr(triton_bn, NAMES[len(shape)])(shape[1]).to(device)
        xs = x.clone().requires_grad_()
        y = module(xs)
        y.backward(dy)
        runs.append(
            [
                y,
                xs.grad,
                module.weight.grad,
                module.bias.grad,
                module.running_mean,
                module.running_var,
            ]
        )
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# The tiling: small tiles exercise every path of the kernels; the merge is the reference's
# --------------------------------------------------------------------------------------------
@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 64 values and about 8 programs: several tiles per program, padding tiles,
    ragged channel blocks, and reductions over partials in several chunks."""
    monkeypatch.setattr(tiles, "TILE_ELEMENTS", 64)
    monkeypatch.setattr(tiles, "TARGET_PROGRAMS", 8)


SMALL_TILE_CASES = {
    "interpreter": [
        ((300, 14), "contiguous"),
        ((3, 5, 9, 13), "contiguous"),
        ((3, 5, 9, 13), "channels_last"),
    ],
    "cuda": SHAPES["cuda"][:3],
}
SMALL_TILES = [
    pytest.param(b.values[0], case, id=f"{b.values[0]}-{shape_id(case)}", marks=b.marks)
    for b in BACKENDS
    for case in SMALL_TILE_CASES[b.values[0]]
]


@pytest.mark.parametrize("backend, case", SMALL_TILES)
def test_small_tiles_match_torch_nn(backend, case, small_tiles):
    shape, layout = case
    device = DEVICE[backend]
    x = make_input(shape, torch.float32, layout, torch.Generator().manual_seed(13)).to(device)
    plan = triton_bn.tiling(tiles.dense(x))
    assert plan.tiles_per_program > 1 and plan.programs > 1
    assert plan.block_c * plan.block_s <= 64
    ours, theirs = triton_pair(len(shape), shape[1], device=device)
    randomize(theirs, torch.Generator().manual_seed(14))
    ours.load_state_dict(theirs.state_dict())
    steps(ours, theirs, shape, layout, device, torch.float32, F32, "te", seed=15)


def test_small_tiles_cover_every_path(small_tiles):
    """The small-tile shapes really take the paths the small tiles are for."""
    plans = [
        triton_bn.tiling(tiles.dense(make_input(shape, torch.float32, layout, torch.Generator())))
        for shape, layout in SMALL_TILE_CASES["interpreter"]
    ]
    assert {p.layout for p in plans} == {"planes", "channels last"}
    assert any(p.num_tiles % p.tiles_per_program for p in plans), "a program with padding tiles"
    assert any(p.view[1] % p.block_c for p in plans), "a ragged block of channels"
    assert any(tiles.reduce_options(p.programs, p.view[1])["NUM_CHUNKS"] > 1 for p in plans)


@pytest.mark.parametrize("backend, case", SMALL_TILES)
def test_partials_merge_with_the_reference_merge_stats(backend, case, small_tiles):
    """Pass 1's partial (count, mean, M2) rows, merged by bncourse.conventions.merge_stats
    (the same formula in torch), give pass 2's statistics and the float64 truth."""
    shape, layout = case
    device = DEVICE[backend]
    g = torch.Generator().manual_seed(16)
    x = make_input(shape, torch.float32, layout, g, loc=50.0).to(device)
    counts, means, m2s = triton_bn.partial_stats(x)
    assert torch.all(counts == counts[:, :1])  # a program's count is the same for every channel
    m = x.numel() // shape[1]
    assert int(counts.sum(0)[0]) == m
    total, mean, m2 = conventions.merge_stats(counts[:, 0], means, m2s)
    kernel_mean, kernel_var = triton_bn.batch_stats(x)
    exact = x.double().transpose(0, 1).reshape(shape[1], -1)
    torch.testing.assert_close(mean, kernel_mean, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(m2 / total, kernel_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kernel_mean.double(), exact.mean(1), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(
        kernel_var.double(), exact.var(1, correction=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "shape, layout, expected",
    [
        ((256, 64, 56, 56), "contiguous", ("planes", (256, 64, 3136), 1, 4096)),
        ((256, 512, 7, 7), "contiguous", ("planes", (256, 512, 49), 64, 64)),
        ((256, 64, 56, 56), "channels_last", ("channels last", (1, 64, 802816), 64, 64)),
        ((65536, 256), "contiguous", ("channels last", (1, 256, 65536), 64, 64)),
        ((100000, 32), "contiguous", ("channels last", (1, 32, 100000), 32, 128)),
    ],
)
def test_tiling_reads_along_memory(shape, layout, expected):
    """The tile's long side runs along the contiguous axis, for the benchmark's shapes
    (planned on the meta device: no memory, no kernel)."""
    x = torch.empty(shape, device="meta")
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    plan = triton_bn.tiling(x)
    assert (plan.layout, plan.view, plan.block_c, plan.block_s) == expected
    contiguous_axis = 2 if plan.layout == "planes" else 1
    assert plan.strides[contiguous_axis] == 1
    assert 1 <= plan.channel_blocks <= 65535 and plan.programs * plan.channel_blocks >= 512


# --------------------------------------------------------------------------------------------
# Where triton_bn differs from torch_bn: the device; what it shares: the modules
# (its whole interface is tested in tests/test_batchnorm_interface.py)
# --------------------------------------------------------------------------------------------


def test_wrong_device_is_a_clear_error():
    error = raised(lambda: backends.for_device(torch.device("xpu")))  # neither CPU nor GPU
    assert error[0] is RuntimeError and "triton_bn: got an input on xpu" in error[1]
    assert "CUDA tensors (compiled) or CPU tensors (Triton's interpreter)" in error[1]
    x, w = torch.randn(4, 3), torch.ones(3, device="meta")
    error = raised(lambda: triton_bn.batch_norm(x, None, None, w, training=True))
    assert error[0] is RuntimeError and "expected every tensor on cpu, got one on meta" in error[1]


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_modules_are_torch_bns_with_the_triton_function(name):
    ours, base = getattr(triton_bn, name), getattr(torch_bn, name)
    assert issubclass(ours, base) and ours.functional is triton_bn.batch_norm
    assert base.functional is torch_bn.batch_norm
    module = ours(5, momentum=None, affine=False)
    assert repr(module) == repr(getattr(nn, name)(5, momentum=None, affine=False))
    state = getattr(nn, name)(5).state_dict()
    ours(5).load_state_dict(state)  # keys and shapes are torch.nn's


# --------------------------------------------------------------------------------------------
# Where the kernels run: chosen per call by the device, nothing set at import
# --------------------------------------------------------------------------------------------
def test_the_device_chooses_compiled_or_interpreted_kernels():
    assert backends.for_device(torch.device("cuda")) is backends.COMPILED
    assert backends.for_device(torch.device("cpu")) is backends.INTERPRETED
    assert isinstance(backends.COMPILED.stats_kernel, JITFunction)
    assert backends.INTERPRETED.stats_kernel.fn is triton_bn.stats_kernel.fn  # the same source


def _state(*namespaces):
    """What an interpreted launch could leave changed: every attribute of ``namespaces``."""
    return [{name: getattr(ns, name) for name in dir(ns)} for ns in namespaces]


def test_an_interpreted_call_leaves_triton_as_it_found_it():
    """The interpreter patches triton.language while a kernel runs, and calling a jit'd
    function outside a compiled kernel is an error again afterwards: kernels compiled later
    in the same process (see test_every_launch_compiles_for_an_h100) see Triton unchanged."""
    namespaces = (tl, tl.core, tl.math, tl.tensor, tl.dtype, JITFunction)
    before = _state(*namespaces)
    triton_bn.batch_norm(torch.randn(6, 3, 4), None, None, training=True)
    assert _state(*namespaces) == before
    with pytest.raises(RuntimeError, match="outside of the scope of a kernel"):
        triton_bn.tile_stats(None, None)


def _python(code):
    """Run ``code`` in a fresh interpreter, from the repository root; its completed process."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_importing_sets_nothing():
    result = _python(
        "import os, triton\n"
        "before = dict(os.environ)\n"
        "import bncourse.triton_bn\n"
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)\n"
        "assert not triton.knobs.runtime.interpret\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_triton_the_import_error_says_why():
    """macOS and Windows have no Triton: the error names chapter 8 and Linux."""
    result = _python(
        "import sys\n"
        "sys.modules['triton'] = None  # as if none were installed\n"
        "import bncourse.triton_bn\n"
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ImportError: bncourse.triton_bn: chapter 8's kernels need Linux "
        "(Triton publishes Linux wheels only)"
    ), last


# --------------------------------------------------------------------------------------------
# The compiled kernels, without a GPU: Triton's compiler and ptxas for an H100
# --------------------------------------------------------------------------------------------
def test_every_launch_compiles_for_an_h100(tmp_path):
    """The interpreter does not run Triton's compiler: tests/triton_compile_check.py records
    every launch triton_bn makes (each dtype, layout and mode) and compiles it for sm_90, in a
    fresh process with an empty kernel cache (and without TRITON_INTERPRET, with which Triton
    would interpret every kernel)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    script = Path(__file__).with_name("triton_compile_check.py")
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "launches compiled for sm_90" in result.stdout


# --------------------------------------------------------------------------------------------
# PyTorch operators: torch.compile, torch.export, torch.jit.trace and meta tensors see them;
# torch.func's transforms and forward-mode AD are a clear error
# --------------------------------------------------------------------------------------------
def _network(training):
    """A small network holding triton_bn, in a fixed state (``torch.manual_seed(3)``)."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 3), triton_bn.BatchNorm1d(3), nn.ReLU()).train(training)


def _run(network, x, dy, call=None):
    """The output, the input's and first weight's gradients and the buffers after one step
    (``call``: the network, or a compiled form of it)."""
    x = x.clone().requires_grad_()
    y = (call or network)(x)
    y.backward(dy)
    return [y, x.grad, network[0].weight.grad, network[1].running_mean, network[1].running_var]


@pytest.mark.parametrize(
    "backend, training",
    [
        ("aot_eager", True),
        ("aot_eager", False),
        # (Inductor compiles C++ for the rest of the graph: about a minute, training only)
        pytest.param("inductor", True, marks=pytest.mark.slow),
    ],
    ids=["aot_eager-train", "aot_eager-eval", "inductor-train"],
)
def test_torch_compile_with_fullgraph_gives_the_eager_results(backend, training):
    """No graph break (``fullgraph=True``): the operators are nodes of the graph, forward and
    backward. On the CPU the compiled graph calls them whole (their kernels run in Triton's
    interpreter); the results, gradients and buffers are those without compile."""
    g = torch.Generator().manual_seed(4)
    x, dy = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)
    expected = _run(_network(training), x, dy)
    network = _network(training)
    compiled = torch.compile(network, backend=backend, fullgraph=True)
    for ours, theirs in zip(_run(network, x, dy, compiled), expected):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_torch_export_records_the_operator_and_round_trips(training, tmp_path):
    """``torch.export`` traces with fake tensors, through the operators' fake implementation
    (the host code with the launches left out); the exported program holds the operator,
    computes what the network computes (updating its buffers in training), and survives
    ``torch.export.save`` and ``load``."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    program = torch.export.export(_network(training), (x,))
    mode = "train" if training else "eval"
    targets = [str(node.target) for node in program.graph.nodes]
    assert f"bncourse.triton_batch_norm_{mode}.default" in targets
    torch.export.save(program, tmp_path / "network.pt2")
    loaded = torch.export.load(tmp_path / "network.pt2").module()
    reference = _network(training)
    torch.testing.assert_close(loaded(x), reference(x))
    state = dict(loaded.named_buffers())
    torch.testing.assert_close(state["1.running_mean"], reference[1].running_mean)
    torch.testing.assert_close(state["1.running_var"], reference[1].running_var)


META_CASES = [
    ((6, 5), "contiguous", torch.float32),
    ((4, 3, 7, 5), "channels_last", torch.bfloat16),
    ((4, 3, 7, 10), "transposed", torch.float16),
    ((2, 3, 4, 5, 6), "contiguous", torch.float64),
]


@pytest.mark.parametrize("shape, layout, dtype", META_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_meta_and_fake_tensors_get_torch_nns_shapes_dtypes_and_strides(
    shape, layout, dtype, training
):
    """Meta tensors (no memory) and fake tensors (``FakeTensorMode``): the output and the
    gradients have the shape, dtype and strides torch.nn gives them; no kernel runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def make(device):
        x = torch.empty(shape, dtype=dtype, device=device)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        if layout == "transposed":
            x = torch.empty(shape[:2] + shape[2:][::-1], dtype=dtype, device=device)
            x = x.transpose(2, 3)
        acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        params = [torch.ones(shape[1], dtype=acc, device=device) for _ in range(4)]
        return x.requires_grad_(), params

    def run(fn, device):
        x, (weight, bias, running_mean, running_var) = make(device)
        weight.requires_grad_(), bias.requires_grad_()
        y = fn(x, running_mean, running_var, weight, bias, training=training)
        grads = torch.autograd.grad(y, (x, weight, bias), torch.ones_like(y))
        return [(t.shape, t.dtype, t.stride(), t.device.type) for t in (y, *grads)]

    expected = run(nn.functional.batch_norm, "cpu")
    expected = [(s, d, st, "meta") for s, d, st, _ in expected]
    assert run(triton_bn.batch_norm, "meta") == expected
    with FakeTensorMode():
        fake = run(triton_bn.batch_norm, "cpu")
    assert fake == [(s, d, st, "cpu") for s, d, st, _ in expected]


def test_torch_jit_trace_records_the_operators():
    """``torch.jit.trace`` records the operator call (not the launches inside it)."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(6))
    traced = torch.jit.trace(_network(False), (x,))
    assert "bncourse::triton_batch_norm_eval" in str(traced.inlined_graph)
    torch.testing.assert_close(traced(x), _network(False)(x))


def test_double_backward_is_a_clear_error_not_missing_second_derivatives():
    """Second derivatives through the kernels are not supported: a backward with
    create_graph=True says so, where it used to return first derivatives unconnected to the
    input (so that ``autograd.grad(..., allow_unused=True)`` answered None, "does not
    depend", where torch.nn gives values)."""
    x = torch.randn(4, 3, 2, requires_grad=True)
    y = triton_bn.batch_norm(x, None, None, training=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad((y**3).sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad((y**3).sum(), x)  # first derivatives still work
    assert grad.shape == x.shape


def test_changing_a_strided_input_in_place_before_backward_is_autograds_error():
    """As with torch.nn: the kernels read a dense copy of a strided input, but the input
    itself is saved for the backward, so autograd notices that it changed."""
    message = "one of the variables needed for gradient computation has been modified"
    for fn in (nn.functional.batch_norm, triton_bn.batch_norm):
        base = torch.randn(4, 3, 10, requires_grad=True)
        x = base.clone()[..., ::2]
        y = fn(x, None, None, training=True)
        x.mul_(2)
        with pytest.raises(RuntimeError, match=message):
            y.sum().backward()


def _forward_ad(module, x):
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        return module(fwAD.make_dual(x, torch.ones_like(x)))


@pytest.mark.parametrize("transform", ["vmap", "grad", "jacrev", "jvp", "jacfwd", "forward_ad"])
def test_transforms_without_a_rule_are_a_clear_error(transform):
    """torch.func's transforms (the operators have no batching rule, and no forward-mode
    derivative) and forward-mode AD: the error says so and names what works, not an error
    from deep inside the dispatcher."""
    module = triton_bn.BatchNorm1d(3, track_running_stats=False)
    x = torch.randn(4, 3)
    calls = {
        "vmap": lambda: torch.func.vmap(module)(x[None].expand(2, 4, 3)),
        "grad": lambda: torch.func.grad(lambda x: module(x).sum())(x),
        "jacrev": lambda: torch.func.jacrev(module)(x),
        "jvp": lambda: torch.func.jvp(module, (x,), (torch.ones_like(x),)),
        "jacfwd": lambda: torch.func.jacfwd(module)(x),
        "forward_ad": lambda: _forward_ad(module, x),
    }
    with pytest.raises(RuntimeError, match="does not support .*Use bncourse.torch_bn"):
        calls[transform]()


# --------------------------------------------------------------------------------------------
# The warm-up kernel of chapter 8: a per-row sum
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "shape", [(6, 10), (3, 1), (5, 16), (4, 33), (0, 5)], ids=lambda s: "x".join(map(str, s))
)
def test_row_sum_matches_torch_sum(backend, shape):
    """Ragged rows (masked lanes must add 0), a row of one value, an exact block, no rows;
    a strided (transposed) input, made contiguous by the wrapper. float64: the kernel adds
    in the input's dtype, in another order than torch.sum, so 1e-12 relative."""
    from bncourse.triton_bn import warmup

    g = torch.Generator().manual_seed(8)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE[backend]) + 3.0
    torch.testing.assert_close(warmup.row_sum(x), x.sum(dim=1), rtol=1e-12, atol=1e-12)
    xt = x.t().contiguous().t()  # the same values, column-major
    torch.testing.assert_close(warmup.row_sum(xt), x.sum(dim=1), rtol=1e-12, atol=1e-12)


def test_row_sum_without_the_mask_would_read_past_the_row():
    """The test above can fail: a kernel whose mask stops only at the tensor's end (not at
    the row's) adds the next row's values into a ragged row."""
    import triton
    import triton.language as tl

    from bncourse.triton_bn import warmup

    @triton.jit
    def unmasked(x_ptr, out_ptr, n_values, stride_row, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        offsets = row * stride_row + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offsets, mask=offsets < n_values, other=0.0)
        tl.store(out_ptr + row, tl.sum(x, axis=0))

    x = torch.ones(4, 5, dtype=torch.float64)
    out = torch.empty(4, dtype=torch.float64)
    warmup.launcher(unmasked, x.device)[(4,)](
        x_ptr=x, out_ptr=out, n_values=20, stride_row=5, BLOCK=8
    )
    assert out[0].item() == 8.0  # 5 of its own values and 3 of the next row's
    assert warmup.row_sum(x).tolist() == [5.0] * 4


def test_row_sum_refuses_other_shapes():
    from bncourse.triton_bn import warmup

    with pytest.raises(ValueError, match="2-d"):
        warmup.row_sum(torch.ones(3))


def test_row_sum_refuses_what_int32_offsets_cannot_address():
    from bncourse.triton_bn import warmup

    # 2**31 values without the memory: an expanded view (row_sum checks before copying)
    with pytest.raises(ValueError, match="2\\*\\*31 values"):
        warmup.row_sum(torch.zeros(1).expand(2**16, 2**15))
