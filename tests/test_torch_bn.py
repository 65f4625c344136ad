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
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bn_testing import F32, F64, HALF, compare_step, half_tol, make_input, module_pair, randomize
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


@pytest.mark.parametrize(
    "shape, in_blocks",
    [((256, 4, 8), False), ((65536, 4), True), ((66, 128, 7, 7), True)],
    ids=["one-reduction", "rows-merged-from-blocks", "nchw-7x7-merged-from-blocks"],
)
def test_large_mean_in_float32_matches_float64(shape, in_blocks):
    """Mean 1e4, std 1: the float32 forward and backward stay within 1e-3 of float64 on the
    same input, and at least as close as PyTorch's.  Float32 numbers near 1e4 are 9.8e-4
    apart, so the mean itself can only be rounded to within 4.9e-4: that is the floor, which
    the corrected two-pass statistics reach (a plain float32 mean is off by several units).
    The same bounds hold where the channels are innermost and the statistics are merged
    from blocks of rows (:func:`~bncourse.torch_bn.split_plan`)."""
    g = torch.Generator().manual_seed(5)
    x = (1e4 + torch.randn(shape, generator=g)).float()
    assert (torch_bn.split_plan(x) is not None) == in_blocks
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


@pytest.mark.parametrize(
    "shape",
    [(256, 4, 8), (65536, 4), (66, 128, 7, 7), (107, 50, 7, 7), (16, 64, 16, 16), (33, 8192)],
    ids=["one-reduction", "rows", "nchw-7x7", "nchw-7x7-odd", "nchw", "rows-of-8192-channels"],
)
def test_large_mean_statistics_keep_the_two_pass_precision(shape):
    """Mean 1e4, std 1, float32: the mean to half a unit in the last place (2**-11 near 1e4)
    and the variance to 1e-6 relative, against float64 on the same values, in one reduction
    and merged from blocks (the (33, 8192) input in blocks of 8 rows). The deviations from the
    first mean are exact, and float32 sums of their squares over 2**17 values or fewer stay
    within about 17 * 2**-24 = 1e-6; a merge that rounded each block's mean to float32 first
    lost up to 5e-4 of the variance here."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) + 1e4).float()
    mean, var = torch_bn.batch_stats(x)
    exact_mean, exact_var = torch_bn.batch_stats(x.double())
    assert (mean.double() - exact_mean).abs().max() <= 2**-11 * 1.001
    assert ((var.double() - exact_var).abs() / exact_var).max() <= 1e-6


@pytest.mark.parametrize("by_rows", [True, False], ids=["rows", "nchw-7x7"])
def test_a_block_unlike_the_others_keeps_the_two_pass_precision(by_rows):
    """Unshuffled data: the first block's values 100 above the rest (mean 1e4, std 0.01).
    The merged variance stays within 1e-6 relative of float64, as one reduction's does (2e-7
    and 7e-7 here; the merge 2e-7). Merged about the first block's first mean, 90 and 99 from
    the mean where the variance is 919 and 116, it lost a share of the variance about
    proportional to 1 + 90**2 / 919 and 1 + 99**2 / 116: 2.0e-6 and 2.5e-5."""
    g = torch.Generator().manual_seed(11)
    shape = (20000, 32) if by_rows else (340, 64, 7, 7)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 0.01 + 1e4
    blocks, per_block, _ = torch_bn.split_plan(x.float())
    assert blocks >= 8
    first_block = per_block if by_rows else per_block // 49  # rows, or samples
    x[:first_block] += 100
    x = x.float()
    mean, var = torch_bn.batch_stats(x)
    exact_mean, exact_var = torch_bn.batch_stats(x.double())
    assert ((var.double() - exact_var).abs() / exact_var).max() <= 1e-6


# (not 3e38: torch.nn overflows there or not depending on the CPU code path it takes)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e20, "inf-and-minus-inf"])
@pytest.mark.parametrize("shape", [(8200, 32), (107, 50, 7, 7)], ids=["rows", "nchw-7x7"])
def test_split_statistics_give_pytorchs_infinities_and_nans(shape, value):
    """A non-finite or huge value in channel 1 of the first block and of the last, shorter
    one (each block's first row is the reference of its first pass, and one block's first
    mean that of the merge): the output and the running statistics are NaN and infinite
    where torch.nn's are, finite where its are, and a constant channel's variance is 0."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g)
    assert torch_bn.split_plan(x) is not None
    first, last = (0, 1) + (0,) * (len(shape) - 2), (shape[0] - 1, 1) + (0,) * (len(shape) - 2)
    x[first], x[last] = (math.inf, -math.inf) if value == "inf-and-minus-inf" else (value, value)
    x[:, 2] = 1e20  # a constant channel, huge
    ours, theirs = modules(len(shape), shape[1])
    results = [[m(x).detach(), m.running_mean, m.running_var] for m in (ours, theirs)]
    for a, b in zip(*results):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf())
    # (1 - 0.1) * 1 + 0.1 * 0; torch.nn's kernel for channels innermost gives 8e29 here
    assert ours.running_var[2] == 0.9


def test_squares_that_overflow_in_one_block_give_pytorchs_infinite_variance():
    """Finite values of both signs near 1e30 in one block (the first or a later one): the
    block's mean square overflows, and the variance is inf, as torch.nn's, not inf - inf =
    NaN (which the merge's shifted sums gave when that block's first mean was far from the
    merge's reference)."""
    for row in (0, 4100):
        x = torch.randn(8200, 32, generator=torch.Generator().manual_seed(5))
        x[row, 1], x[row + 5, 1] = 1e30, -1e30
        assert torch_bn.split_plan(x) is not None
        ours, theirs = modules(2, 32)
        for m in (ours, theirs):
            m(x)
        assert torch.equal(ours.running_var.isnan(), theirs.running_var.isnan())
        assert ours.running_var[1] == theirs.running_var[1] == math.inf


# --------------------------------------------------------------------------------------------
# The split reduction (channels innermost, large inputs): blocks of rows, merged
# --------------------------------------------------------------------------------------------
def test_split_plan_cuts_rows_into_blocks_and_nchw_into_samples():
    """Channels innermost ((N, C), channels last): blocks of a power of two rows, at most
    BLOCK_VALUES values each, and the rows left over; NCHW: one block per sample, or, for
    runs shorter than BLOCK_RUN (7 x 7), a power of two samples per block and the samples
    left over. One plain reduction for small inputs, for very short runs and for strided
    views."""
    rows = torch.empty(8200, 32)
    blocks, per_block, by_rows = torch_bn.split_plan(rows)
    assert by_rows and blocks * per_block <= 8200
    assert per_block * 32 <= torch_bn.BLOCK_VALUES < per_block * 64
    image = torch.empty(16, 64, 16, 16)
    assert torch_bn.split_plan(image) == (16, 256, False)
    assert torch_bn.split_plan(image.to(memory_format=torch.channels_last)) == (4, 1024, True)
    assert torch_bn.split_plan(torch.empty(64, 32)) is None  # small: it fits the caches
    assert torch_bn.split_plan(torch.empty(32, 16400).t()) is None  # channels not innermost
    assert torch_bn.split_plan(torch.empty(64, 4096, 2, 2)) is None  # runs of 4 values
    assert [p.shape for p in torch_bn.in_blocks(rows, (blocks, per_block, True))] == [
        (blocks, per_block, 32),
        (1, 8200 - blocks * per_block, 32),
    ]
    assert [p.shape for p in torch_bn.in_blocks(image, (16, 256, False))] == [(16, 1, 256, 64)]
    small = torch.empty(66, 128, 7, 7)  # runs of 49: 4 samples per block, 2 left over
    assert torch_bn.split_plan(small) == (16, 4 * 49, False)
    parts = torch_bn.in_blocks(small, (16, 4 * 49, False))
    assert [p.shape for p in parts] == [(16, 4, 49, 128), (1, 2, 49, 128)]
    assert parts[1][0, 1, :, 5].data_ptr() == small[65, 5].data_ptr()  # views, in order


@pytest.mark.parametrize(
    "shape, layout, dtype",
    [
        ((8200, 32), "contiguous", torch.float32),  # whole blocks and a shorter one
        ((16, 64, 16, 16), "channels_last", torch.float32),  # whole blocks only
        ((16, 64, 16, 16), "contiguous", torch.float32),  # NCHW: a block per sample
        ((66, 128, 7, 7), "contiguous", torch.float32),  # 4 samples per block, 2 left
        ((4100, 64), "contiguous", torch.float64),
    ],
    ids=["rows-with-rest", "channels-last", "nchw", "nchw-7x7-grouped", "rows-float64"],
)
def test_split_reduction_equals_torch_nn(shape, layout, dtype):
    """The split statistics and sums, in training and evaluation, equal torch.nn's."""
    g = torch.Generator().manual_seed(11)
    ours, theirs = modules(len(shape), shape[1], dtype=dtype)
    randomize(ours, g)
    theirs.load_state_dict(ours.state_dict())
    for step in range(3):
        for m in (ours, theirs):
            m.train(step != 2)
        x = make_input(shape, dtype, layout, g, loc=1.0, scale=2.0)
        assert torch_bn.split_plan(x) is not None
        dy = make_input(shape, dtype, "contiguous", g)
        compare_step(ours, theirs, x, dy, F32 if dtype == torch.float32 else F64, layout)


@pytest.mark.parametrize("value", [math.inf, 1e20], ids=["inf", "square-overflows"])
@pytest.mark.parametrize("shape", [(8200, 32), (16, 64, 16, 16)], ids=["rows", "nchw"])
def test_split_reduction_gives_pytorchs_answer_for_hostile_values(shape, value):
    """One infinite value, or one whose square overflows float32, in an input cut into
    blocks: the outputs' NaNs and the running statistics are PyTorch's, as for one
    reduction (the merge keeps the infinite mean and the infinite variance)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    x.view(-1)[5] = value
    assert torch_bn.split_plan(x) is not None
    ours, theirs = modules(len(shape), shape[1])
    y_ours, y_theirs = ours(x), theirs(x)
    assert torch.equal(y_ours.isnan(), y_theirs.isnan())
    torch.testing.assert_close(y_ours, y_theirs, equal_nan=True, **F32["out"])
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(
            getattr(ours, name), getattr(theirs, name), equal_nan=True, **F32["stats"]
        )


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
            "--no-compile",
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--device", "tpu"], "--device is cpu or cuda"),
        (["bench", "--device", "mps"], "--device is cpu or cuda"),
        (["bench", "--device", "meta"], "--device is cpu or cuda"),
        (["bench", "--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["bench", "--warmup", "-1"], "--warmup must be 0 or more"),
        (["bench", "--shape", "1x3"], "more than 1 value per channel"),
        (["bench", "--json", "/nonexistent/folder/bench.json"], "cannot write --json"),
        (["run-notebooks", "/nonexistent/chapter.ipynb"], "no such notebook"),
        (["make-exercises", "--check", "--source", "/nonexistent"], "is not a folder"),
    ],
)
def test_command_line_mistakes_are_one_error_line_before_any_work(argv, message, capsys):
    """Exit status 2 and one line ``error: ...`` on stderr, found before anything runs
    (nothing on stdout: no benchmark header, no "executing", no "in sync")."""
    assert cli(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.startswith("error: ") and printed.err.count("\n") == 1
    assert message in printed.err


def test_run_notebooks_and_bench_failures_are_one_error_line(tmp_path, capsys, monkeypatch):
    """A file that is not a notebook gave nbformat's NotJSONError traceback, a negative
    --timeout was accepted, and a --shape too large for memory gave the allocator's
    traceback (the allocation is simulated here: a real 4 TB one could succeed under memory
    overcommit and then fill the machine)."""
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    assert cli(["run-notebooks", str(bad)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1
    assert printed.err.startswith(f"error: {bad} is not a notebook: ")
    with pytest.raises(SystemExit) as exited:
        cli(["run-notebooks", "--timeout", "-5", str(bad)])
    assert exited.value.code == 2
    assert "argument --timeout: must be at least 1, got -5" in capsys.readouterr().err

    from bncourse import bench

    def allocate(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 4000000000000 bytes. Error code 12 (Cannot allocate "
            "memory)"
        )

    monkeypatch.setattr(bench, "main", allocate)
    assert cli(["bench", "--shape", "100000x100000x100", "--no-compile"]) == 2
    assert capsys.readouterr().err == (
        "error: not enough memory for the benchmark's tensors: DefaultCPUAllocator: can't "
        "allocate memory: you tried to allocate 4000000000000 bytes. Error code 12 (Cannot "
        "allocate memory)\n"
    )

    def fails(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(bench, "main", fails)  # other errors are not hidden
    with pytest.raises(RuntimeError, match="a bug, not memory"):
        cli(["bench", "--shape", "4x3", "--no-compile"])


def test_bench_without_the_compiled_module_prints_no_empty_columns(capsys):
    cli(["bench", "--shape", "4x3", "--no-compile", "--repeats", "1", "--warmup", "0"])
    printed = capsys.readouterr().out
    assert "ours/native" in printed and "compiled" not in printed and "nan" not in printed


def test_a_table_of_chosen_columns_fits_a_page():
    """The chapters print the columns that matter, which fit the book's 80-character
    column; a column that does not exist is an error, not an empty table."""
    from bncourse import bench

    results = bench.run([(4, 3)], repeats=1, warmup=0, compiled=False)
    table = bench.format_table(results, columns=("shape", "ours/native", "floor"))
    assert table.splitlines()[0].split() == ["shape", "ours/native", "floor"]
    assert max(len(line) for line in table.splitlines()) <= 80
    with pytest.raises(ValueError, match="no such column: \\['speed'\\]"):
        bench.format_table(results, columns=("shape", "speed"))


# --------------------------------------------------------------------------------------------
# PyTorch's compiler stack: what works on nn.BatchNorm works on ours (eager and compiled),
# and where nn.BatchNorm refuses a transform, ours refuses it in the same words
# --------------------------------------------------------------------------------------------
def _compiled_bn():
    from bncourse import compiled_bn

    return compiled_bn


BOTH = [
    pytest.param(torch_bn, id="torch_bn"),
    pytest.param("compiled_bn", id="compiled_bn", marks=pytest.mark.xdist_group("compiled_bn")),
]


@pytest.fixture(params=BOTH)
def impl(request):
    return _compiled_bn() if request.param == "compiled_bn" else request.param


def _batch(shape=(8, 4, 3, 3), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 2


def test_jit_trace_updates_the_running_statistics_once_per_call(impl):
    """Once per call, as nn.BatchNorm2d's trace does (the update used to be recorded twice:
    inside the autograd node and in the operations traced through it)."""
    x = _batch()
    ours, theirs = impl.BatchNorm2d(4), nn.BatchNorm2d(4)
    traced = [torch.jit.trace(m, x, check_trace=False) for m in (ours, theirs)]
    ours.reset_running_stats(), theirs.reset_running_stats()
    for step in range(3):
        for t in traced:
            t(x + step)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)


def test_backward_through_a_traced_module(impl):
    x = _batch().requires_grad_()
    grads = []
    for module in (impl.BatchNorm2d(4), nn.BatchNorm2d(4)):
        traced = torch.jit.trace(module, x.detach(), check_trace=False)
        (traced(x) * x).sum().backward()
        grads.append((x.grad.clone(), module.weight.grad))
        x.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("saved", [False, True], ids=["in-memory", "saved-and-loaded"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_torch_export_in_both_modes(impl, training, saved):
    """The exported program's module gives nn.BatchNorm2d's outputs and buffer updates, also
    after ``torch.export.save`` and ``load`` (which rejected the grad-mode switch a
    ``torch.no_grad()`` around the running-statistics update recorded in training)."""
    x = _batch()
    ours, theirs = impl.BatchNorm2d(4).train(training), nn.BatchNorm2d(4).train(training)
    program = torch.export.export(ours, (x,))
    if saved:
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        buffer.seek(0)
        program = torch.export.load(buffer)
    exported = program.module()
    for step in range(2):
        torch.testing.assert_close(exported(x + step), theirs(x + step), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(exported.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-6)
    assert int(exported.num_batches_tracked) == int(theirs.num_batches_tracked)


def test_jit_script_compiles_torch_nns_module_on_the_same_tensors(impl):
    """TorchScript cannot compile a Python autograd.Function: the module hands it torch.nn's,
    holding its own parameters and buffers, and warns once. The scripted network trains the
    original module's tensors and saves."""
    torch_bn._warned_script.clear()
    net = nn.Sequential(nn.Conv2d(3, 4, 1), impl.BatchNorm2d(4))
    with pytest.warns(UserWarning, match="compiled as torch.nn.BatchNorm2d"):
        scripted = torch.jit.script(net)
    x = _batch((2, 3, 3, 3))
    scripted(x).sum().backward()
    bn = net[1]
    assert int(bn.num_batches_tracked) == 1 and bn.weight.grad is not None
    reference = nn.BatchNorm2d(4)
    reference(net[0](x))
    torch.testing.assert_close(bn.running_mean, reference.running_mean, rtol=1e-5, atol=1e-6)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    assert buffer.tell() > 0


def test_vmap_with_running_statistics_fails_as_torch_nns(impl):
    x = _batch()[None].expand(2, -1, -1, -1, -1)
    errors = []
    for module in (impl.BatchNorm2d(4), nn.BatchNorm2d(4)):
        with pytest.raises(RuntimeError) as caught:
            torch.func.vmap(module)(x)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def _module_pair(impl, **options):
    """(ours, torch.nn's) BatchNorm2d(2) in float64, the same running mean (0.3) if tracked."""
    pair = impl.BatchNorm2d(2, **options).double(), nn.BatchNorm2d(2, **options).double()
    for module in pair:
        if module.running_mean is not None:
            module.running_mean.fill_(0.3)
    return pair


@pytest.mark.parametrize("mode", ["train-untracked", "eval"])
def test_vmap_equals_torch_nns_and_a_loop_over_the_batches(impl, mode):
    """torch.func.vmap over a batch of batches: each batch normalized on its own (float64, to
    rounding: 1e-12), as nn.BatchNorm2d under vmap and as a Python loop. Training mode without
    running statistics (with them, vmap is refused, above), and evaluation mode."""
    ours, theirs = _module_pair(impl, track_running_stats=mode == "eval")
    if mode == "eval":
        ours.eval(), theirs.eval()
    batches = torch.stack([_batch((3, 2, 2, 1), seed) for seed in range(4)]).double()
    got = torch.func.vmap(ours)(batches)
    torch.testing.assert_close(got, torch.func.vmap(theirs)(batches), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, torch.stack([ours(b) for b in batches]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["train-untracked", "eval"])
def test_jacrev_equals_torch_nns(impl, mode):
    """The whole Jacobian d output / d input through our backward (every output value depends
    on every input value of its channel in training), equal to nn.BatchNorm2d's (float64)."""
    ours, theirs = _module_pair(impl, track_running_stats=mode == "eval")
    if mode == "eval":
        ours.eval(), theirs.eval()
    x = _batch((3, 2, 2, 1)).double()
    jacobian = torch.func.jacrev(ours)(x)
    assert jacobian.shape == (*x.shape, *x.shape)
    torch.testing.assert_close(jacobian, torch.func.jacrev(theirs)(x), rtol=1e-10, atol=1e-12)


def test_per_sample_gradients_with_vmap_of_grad_equal_torch_nns(impl):
    """The torch.func recipe for per-sample gradients (vmap of grad of functional_call), here
    per batch: the gradients of weight and bias for each of 4 batches (float64)."""
    ours, theirs = _module_pair(impl, track_running_stats=False)
    batches = torch.stack([_batch((3, 2, 2, 1), seed) for seed in range(4)]).double()

    def per_batch_gradients(module):
        params = {name: p.detach() for name, p in module.named_parameters()}

        def loss(params, x):
            return torch.func.functional_call(module, params, (x,)).pow(3).sum()

        return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, batches)

    got, want = per_batch_gradients(ours), per_batch_gradients(theirs)
    assert got.keys() == want.keys() == {"weight", "bias"} and got["weight"].shape == (4, 2)
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


def _affine_pair(impl, mode):
    """Ours and nn.BatchNorm2d(2) in float64 with the same weight, bias and (in evaluation)
    running statistics; ``mode``: "train-untracked" or "eval"."""
    pair = (
        impl.BatchNorm2d(2, track_running_stats=mode == "eval"),
        nn.BatchNorm2d(2, track_running_stats=mode == "eval"),
    )
    for module in pair:
        module.double()
        with torch.no_grad():
            module.weight.copy_(torch.tensor([1.5, -0.7]))
            module.bias.copy_(torch.tensor([0.3, 0.1]))
            if mode == "eval":
                module.running_mean.copy_(torch.tensor([0.5, -1.0]))
                module.running_var.copy_(torch.tensor([2.0, 0.5]))
                module.eval()
    return pair


@pytest.mark.parametrize("mode", ["train-untracked", "eval"])
def test_jacfwd_equals_torch_nns(impl, mode):
    """Forward mode: the whole Jacobian by jacfwd (a jvp per input value, through
    BatchNormFunction.jvp), equal to nn.BatchNorm2d's in float64, and to our jacrev."""
    ours, theirs = _affine_pair(impl, mode)
    x = _batch((3, 2, 2, 1)).double()
    jacobian = torch.func.jacfwd(ours)(x)
    torch.testing.assert_close(jacobian, torch.func.jacfwd(theirs)(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jacobian, torch.func.jacrev(ours)(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["train-untracked", "eval"])
def test_jvp_in_input_weight_and_bias_and_forward_ad_equal_torch_nns(impl, mode):
    """torch.func.jvp moving input, weight and bias at once, and torch.autograd.forward_ad's
    dual tensors, against nn.BatchNorm2d in float64."""
    import torch.autograd.forward_ad as fwAD

    g = torch.Generator().manual_seed(17)
    x = _batch((3, 2, 2, 2)).double()
    tangents = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (x, x[0, :, 0, 0])]
    tangents.append(torch.randn(2, generator=g, dtype=torch.float64))
    results = []
    for module in _affine_pair(impl, mode):

        def call(x, weight, bias, module=module):
            return torch.func.functional_call(module, {"weight": weight, "bias": bias}, (x,))

        primals = (x, module.weight.detach(), module.bias.detach())
        _, tangent = torch.func.jvp(call, primals, tuple(tangents))
        with fwAD.dual_level():
            dual = module(fwAD.make_dual(x, tangents[0]))
            forward_ad = fwAD.unpack_dual(dual).tangent
        results.append((tangent, forward_ad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["train-untracked", "eval"])
def test_forward_over_reverse_hessian_vector_products_equal_torch_nns(impl, mode):
    """jvp of grad: the Hessian of a loss through BatchNorm times a vector (the backward's
    operations differentiated in forward mode), against nn.BatchNorm2d in float64."""
    x = _batch((3, 2, 2, 2)).double()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    products = []
    for module in _affine_pair(impl, mode):

        def loss(x, module=module):
            return (module(x) ** 3).sum()

        products.append(torch.func.jvp(torch.func.grad(loss), (x,), (v,))[1])
    torch.testing.assert_close(products[0], products[1], rtol=1e-9, atol=1e-10)


def test_jacrev_with_tracked_statistics_fails_as_torch_nns(impl):
    """Counting the batch mutates a buffer captured by the transform: refused for both."""
    errors = []
    for module in (impl.BatchNorm2d(2), nn.BatchNorm2d(2)):
        with pytest.raises(RuntimeError) as caught:
            torch.func.jacrev(module)(_batch((3, 2, 2, 1)))
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("fullgraph", [True, False], ids=["fullgraph", "graph-breaks-allowed"])
def test_torch_compile_of_a_model_holding_ours(impl, fullgraph, training):
    """torch.compile of a network with our module (TorchDynamo and AOTAutograd, the parts that
    meet an autograd.Function and the in-place updates; backend "aot_eager" leaves out
    TorchInductor's code generation, which tests/test_compiled_bn.py covers): outputs,
    gradients and buffers equal the uncompiled network's."""

    def net(bn_class):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn_class(4), nn.ReLU())

    x = _batch((4, 3, 5, 5)).requires_grad_()
    plain, model = net(impl.BatchNorm2d), net(impl.BatchNorm2d)
    plain.train(training), model.train(training)  # eval: fine-tuning with frozen BatchNorm
    compiled = torch.compile(model, backend="aot_eager", fullgraph=fullgraph)
    for step in range(2):
        results = []
        for m, bn in ((plain, plain[1]), (compiled, model[1])):
            y = m(x + step)
            results.append((y, *torch.autograd.grad(y.square().sum(), (x, bn.weight))))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(model[1].running_var, plain[1].running_var, rtol=1e-5, atol=1e-6)
    assert int(model[1].num_batches_tracked) == (2 if training else 0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_traced_model_saves_loads_and_runs_as_torch_nns(impl, training):
    """``torch.jit.trace``, ``torch.jit.save`` and ``load`` (a common way to deploy), as with
    nn.BatchNorm2d: TorchScript cannot hold a Python autograd.Function, so a trace records
    the forward pass's own operations. The loaded model's output, input gradient and buffers
    equal those of torch.nn's module through the same round trip."""

    def round_trip(module: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
        traced = torch.jit.trace(module.train(training), x, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)

    x = _batch((4, 3, 5, 5))
    loaded = [round_trip(m, x) for m in (impl.BatchNorm2d(3), nn.BatchNorm2d(3))]
    results = []
    for model in loaded:
        xx = (x + 1).requires_grad_()
        y = model(xx)
        results.append((y, torch.autograd.grad(y.square().sum(), xx)[0]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(loaded[0], name), getattr(loaded[1], name))


def test_an_eval_forward_keeps_its_backward_through_a_later_training_step(impl):
    """A loss on an eval-mode output, then a training-mode forward of the same module (which
    updates the running statistics in place), then one backward: the gradient is that of
    the function the eval forward computed, as without the training step in between (ours
    keeps copies of the running statistics). torch.nn raises no error here but reads the
    updated buffers in its backward, so its gradient is that of another function: a
    documented difference."""
    grads = []
    for step_between in (False, True):
        module, x = impl.BatchNorm1d(3), _batch((4, 3, 5)).requires_grad_()
        y = module.eval()(x)
        if step_between:
            module.train()(x.detach() + 1)
        y.square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(*grads, rtol=0, atol=0)


def test_bench_help_names_every_default_case(capsys):
    """The command's help lists the default shapes without importing the benchmark (torch):
    it must name each of :data:`bncourse.bench.DEFAULT_CASES`."""
    from bncourse import bench

    with pytest.raises(SystemExit):
        cli(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shape, layout in bench.DEFAULT_CASES:
        assert "x".join(map(str, shape)) in text, shape
        assert layout == "contiguous" or layout in text
