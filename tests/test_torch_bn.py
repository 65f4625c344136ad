"""bncourse.torch_bn's own numerics: its hand-written backward and its precision.

Its interface (a drop-in for torch.nn.BatchNorm1d/2d/3d and F.batch_norm, errors included)
is tested with every other implementation's in tests/test_batchnorm_interface.py, where the
tolerances are explained. Here: gradcheck and gradgradcheck in float64, second derivatives
equal to PyTorch's, one hand-written autograd node, the closed form against the NumPy
reference, statistics that accumulate in float32 for half-precision inputs and reach the
float32 floor for a large mean, the GPU where there is one, and the benchmark command.
Checks that need a CUDA device are skipped, with the reason printed, where there is none.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bn_testing import F32, HALF, compare_step, half_tol, make_input, module_pair, randomize
from bncourse import numpy_bn, torch_bn
from bncourse.__main__ import main as cli
from bncourse.gradcheck import batch_norm_gradcheck

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: torch_bn uses only device-generic torch operations, which "
    "every other test runs on the CPU",
)


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
    parameters = {"affine": ("weight", "bias"), "none": (), "weight-only": ("weight",)}[params]
    first, second = batch_norm_gradcheck(
        torch_bn.batch_norm, shape, training, parameters, seed=len(shape)
    )
    assert first and second


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
    got = torch_bn.batch_norm_backward(
        torch.from_numpy(dout),
        torch.from_numpy(x),
        torch.from_numpy(gamma),
        mean,
        torch.rsqrt(var + 1e-5),
        training=True,
    )
    for ours, reference in zip(got, expected):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------
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
    for ours, theirs, exact in zip(
        results[torch.float32], (y.detach().double(), xs.grad.double()), results[torch.float64]
    ):
        torch.testing.assert_close(ours, exact, rtol=0, atol=1e-3)
        assert (ours - exact).abs().max() <= (theirs - exact).abs().max() * 1.01


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
    tol = (
        F32
        if dtype == torch.float32
        else dict(half_tol(dtype, half_module=False), param=HALF[dtype])
    )
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
    status = cli(
        [
            "bench",
            "--shape",
            "4x3x2x2",
            "--shape",
            "6x5",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--json",
            str(path),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "ours/native" in printed and "(4, 3, 2, 2)" in printed and "BatchNorm1d" in printed
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["repeats"] == 2
    assert [r["shape"] for r in report["results"]] == [[4, 3, 2, 2], [6, 5]]
    assert [r["module"] for r in report["results"]] == ["BatchNorm2d", "BatchNorm1d"]
    for r in report["results"]:
        for key in (
            "ours_ms",
            "native_ms",
            "copy_ms",
            "ours_median_ms",
            "native_median_ms",
            "copy_median_ms",
            "ours_over_native",
            "native_over_copy",
        ):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["ours_over_native"] == pytest.approx(r["ours_ms"] / r["native_ms"])
        assert r["native_over_copy"] == pytest.approx(r["native_ms"] / r["copy_ms"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shape", "64x"], "a shape is sizes joined by 'x'"),
        (["--shape", "64"], "2 to 5 positive sizes"),
        (
            ["--device", "cuda"] if not torch.cuda.is_available() else ["--shape", "0x3"],
            "CUDA is not available" if not torch.cuda.is_available() else "2 to 5 positive sizes",
        ),
    ],
)
def test_bench_rejects_bad_arguments(argv, message, capsys):
    assert cli(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
