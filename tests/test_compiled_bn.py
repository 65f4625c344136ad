"""bncourse.compiled_bn: chapter 5's formulas compiled by torch.compile.

Its interface is tested with every other implementation's in tests/test_batchnorm_interface.py
(the parity suite, tolerances explained there); PyTorch's compiler stack (trace, export,
script, vmap, jacrev, torch.compile of a model) on both torch_bn and compiled_bn in
tests/test_torch_bn.py. Here: the compiled code really runs (and is fused), results equal
the eager formulas' to float32 rounding, double backward falls back to the eager backward and
equals PyTorch's, and where torch.compile cannot work the module warns once and runs eager
(simulated: torch.compile failing as on an unsupported Python, and a C++ compiler that is not
there).

Compiling takes seconds per graph (about 20 s on a loaded 2-core machine): the tests share the
process's compiled functions (one xdist group, so one worker compiles each pass once), use
few shapes, and ``dynamic=True`` lets one compilation serve every size.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from bn_testing import TOL, compare_step, make_input, module_pair, randomize
from bncourse import compiled_bn, torch_bn

pytestmark = pytest.mark.xdist_group("compiled_bn")


@pytest.fixture(autouse=True)
def fresh_compilations():
    """Each test compiles as a fresh process would. The compiled_bn group shares one worker
    with the parity suite, whose aot_eager runs on strided views leave TorchDynamo's
    automatic-dynamic state behind (every size and stride a symbol); inductor code compiled
    from that state read out of bounds in one of these tests (a segmentation fault)."""
    compiled_bn.reset()
    yield
    compiled_bn.reset()


def _inputs(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=dtype) * 2 + 1).requires_grad_()
    return x, torch.randn(shape, generator=g, dtype=dtype)


def _step(module, x, dy):
    y = module(x)
    return (y, *torch.autograd.grad(y, (x, module.weight, module.bias), dy))


def test_the_compiled_passes_run_and_agree_with_eager_formulas():
    """Forward, backward and the running statistics equal torch_bn's (float32: the loops add
    in another order, so rtol 1e-5 on the output, 1e-4 on gradients, the parity suite's
    tolerances), and every pass was compiled (no silent fallback)."""
    x, dy = _inputs((16, 8, 5, 5))
    ours, eager = compiled_bn.BatchNorm2d(8), torch_bn.BatchNorm2d(8)
    for _ in range(3):
        got, want = _step(ours, x, dy), _step(eager, x, dy)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=2e-5)
        for a, b in zip(got[1:], want[1:]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(ours.running_mean, eager.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.running_var, eager.running_var, rtol=1e-5, atol=1e-6)
    assert compiled_bn.compile_disabled() is None
    assert {("forward_train", "inductor"), ("backward", "inductor")} <= set(compiled_bn._compiled)
    ours.eval()
    torch.testing.assert_close(ours(x), eager.eval()(x), rtol=1e-5, atol=2e-5)
    assert ("forward_eval", "inductor") in compiled_bn._compiled


def test_the_backward_node_is_the_compiled_function():
    x, _ = _inputs((8, 4))
    y = compiled_bn.BatchNorm1d(4)(x)
    assert type(y.grad_fn).__name__ == "CompiledBatchNormFunctionBackward"


def test_the_function_is_applied_as_autograd_function_apply_is():
    """CompiledBatchNormFunction.apply skips Function.apply's per-call binding of default
    arguments, and otherwise behaves as it: arguments by keyword, and a call that TorchDynamo
    traces (backend "eager"), give torch_bn's."""
    x, w = torch.randn(8, 4, 3), torch.rand(4, requires_grad=True)
    want = torch_bn.BatchNormFunction.apply(x, w, None, None, None, True, 1e-5)[0]
    by_keyword = compiled_bn.CompiledBatchNormFunction.apply(
        x, w, None, None, None, training=True, eps=1e-5
    )[0]
    torch.testing.assert_close(by_keyword, want)

    def normalized(x):
        return compiled_bn.CompiledBatchNormFunction.apply(x, w, None, None, None, True, 1e-5)[0]

    torch.testing.assert_close(torch.compile(normalized, backend="eager")(x), want)


def test_double_backward_falls_back_to_eager_and_equals_pytorchs():
    """create_graph=True runs torch_bn's differentiable backward (TorchInductor's code is not
    differentiable), so second derivatives equal PyTorch's (float64, rtol 1e-9)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    dy, v = torch.randn(2, *x.shape, generator=g, dtype=torch.float64)
    results = []
    for fn in (compiled_bn.batch_norm, nn.functional.batch_norm):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        (dx,) = torch.autograd.grad(fn(xs, None, None, ws, None, True), xs, dy, create_graph=True)
        results.append(torch.autograd.grad((dx * v).sum(), (xs, ws)))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_a_failing_torch_compile_warns_once_and_runs_eager(monkeypatch):
    """As on Python 3.13 with a torch too old for it: torch.compile raises. The module warns
    once (not at every call), says why, and gives torch_bn's exact results."""
    monkeypatch.setattr(compiled_bn, "_compiled", {})
    monkeypatch.setattr(compiled_bn, "_disabled", [])

    def unsupported(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on Python 3.13+")

    monkeypatch.setattr(torch, "compile", unsupported)
    x, dy = _inputs((6, 3, 2))
    ours, eager = compiled_bn.BatchNorm1d(3), torch_bn.BatchNorm1d(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [_step(ours, x, dy) for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "torch.compile cannot work here" in messages[0]
    assert "not supported on Python 3.13+" in messages[0]
    assert "not supported on Python 3.13+" in compiled_bn.compile_disabled()
    for got in results:
        want = _step(eager, x, dy)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    assert torch.equal(ours.running_var, eager.running_var)


def test_no_cpp_compiler_warns_once_and_runs_eager(tmp_path):
    """A C++ compiler that is not there (CXX pointing nowhere, an empty TorchInductor cache):
    in a fresh process, one warning naming the failure, and eager results."""
    script = textwrap.dedent(
        """
        import warnings
        import torch
        from bncourse import compiled_bn, torch_bn

        warnings.simplefilter("always")
        x = torch.randn(6, 3, 4, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ys = [compiled_bn.BatchNorm1d(3)(x) for _ in range(2)]
        ours = [str(w.message) for w in caught if "compiled_bn" in str(w.message)]
        assert len(ours) == 1, ours
        assert compiled_bn.compile_disabled() is not None
        want = torch_bn.BatchNorm1d(3)(x)
        assert all(torch.equal(y, want) for y in ys)
        print("WARNED:", ours[0])
        """
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNED: bncourse.compiled_bn: torch.compile cannot work here" in done.stdout


def test_a_cache_written_with_other_vectors_is_not_loaded(tmp_path, monkeypatch):
    """One TorchInductor cache, two processes that use different SIMD widths: this one with
    AVX2's 8 floats (as the notebooks' kernels run, bncourse.reproducible), then a fresh one
    with the processor's widest, which compiles its own code and equals torch.nn. Before the
    width was part of the cache's key, the second loaded the first's code, built it for its
    own vectors and wrote past its buffers (free(): invalid size, or a segmentation fault)."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    try:
        widest = compiled_bn.vector_bits()
    except Exception as error:  # (no C++ compiler: the tests above check the eager fallback)
        pytest.skip(f"TorchInductor cannot build here: {error!r}")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    if compiled_bn.vector_bits() != 256 or widest == 256:
        pytest.skip(f"no two SIMD widths to tell apart on this processor (widest: {widest})")
    # the run's cache (conftest.py), whose instruction-set checks and headers are built
    # already, and a shape no other test compiles, so that the entry is this test's own
    cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or tmp_path / "cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    cached = set(cache.glob("fxgraph/*/*/*"))
    script = textwrap.dedent(
        """
        import torch
        from torch import nn
        from bncourse import compiled_bn

        g = torch.Generator().manual_seed(6)
        x = torch.randn(16, 8, 16, 23, generator=g) * 2 + 1
        # evaluation mode: one pointwise loop, the quickest pass to compile; the same affine
        # map as torch.nn's, up to the rounding of one multiply-add (a fused one or not)
        ours, theirs = compiled_bn.BatchNorm2d(8).eval(), nn.BatchNorm2d(8).eval()
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
        assert compiled_bn.compile_disabled() is None
        print("AGREE")
        """
    )
    exec(script, {})  # here, with 8-float vectors: into the cache
    assert set(cache.glob("fxgraph/*/*/*")) - cached, "nothing was cached"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert "AGREE" in done.stdout


def test_compiled_bench_reports_all_four_and_the_compile_time(tmp_path, capsys):
    """The bench command with the compiled module (a shape the tests above compiled already)."""
    import json
    import math

    from bncourse.__main__ import main as cli

    path = tmp_path / "bench.json"
    argv = ["bench", "--shape", "16x8x5x5", "--repeats", "2", "--warmup", "1"]
    assert cli([*argv, "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "compiled/native" in printed and "first call" in printed
    (r,) = json.loads(path.read_text())["results"]
    for key in ("compiled_ms", "compiled_median_ms", "compiled_over_native", "compile_s"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["compiled_over_native"] == pytest.approx(r["compiled_ms"] / r["native_ms"])
    glibc = platform.libc_ver()[0] == "glibc"  # (freed memory kept: steady timings, bench.py)
    assert json.loads(path.read_text())["environment"]["freed_memory_kept"] is glibc


def test_sizes_are_constants_first_then_symbols_after_another_size(monkeypatch):
    """As torch.compile does by default: the first input's sizes compiled as constants (the
    faster code, which a training loop of one batch size runs), one more compilation for
    every size when a second size comes, and none for a third. (Backend "aot_eager": this is
    TorchDynamo's behaviour, without TorchInductor's seconds of code generation.)"""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled_bn, "BACKEND", "aot_eager")
    compiled_bn.reset()
    try:
        compiled = []
        for batch in (8, 16, 32):
            before = counters["stats"]["unique_graphs"]
            compiled_bn.BatchNorm1d(4)(torch.randn(batch, 4))
            compiled.append(counters["stats"]["unique_graphs"] - before)
        assert compiled == [1, 1, 0]
    finally:
        compiled_bn.reset()  # (the other tests' compilations are inductor's)


def test_a_pass_compiled_past_its_limit_warns_once_and_runs_eager(monkeypatch):
    """Each pass may compile RECOMPILE_LIMIT times (a limit of its own: TorchDynamo's global
    settings, which govern the caller's own torch.compile, stay as they were); the compilation
    past it fails loudly, which warns once, and the results are torch_bn's. (A limit of 1 and
    two dtypes; backend "aot_eager", as above.)"""
    monkeypatch.setattr(compiled_bn, "BACKEND", "aot_eager")
    monkeypatch.setattr(compiled_bn, "RECOMPILE_LIMIT", 1)
    monkeypatch.setattr(compiled_bn, "_disabled", [])
    config = torch._dynamo.config
    settings = (config.recompile_limit, config.fail_on_recompile_limit_hit)
    compiled_bn.reset()
    x = torch.randn(8, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = compiled_bn.batch_norm(x, None, None, training=True)
        assert compiled_bn.compile_disabled() is None
        second = compiled_bn.batch_norm(x.double(), None, None, training=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    limit = "torch_bn.forward_train reached a limit on recompilations (each pass may compile 1"
    assert len(messages) == 1 and limit in messages[0], messages
    assert limit in compiled_bn.compile_disabled()
    assert (config.recompile_limit, config.fail_on_recompile_limit_hit) == settings
    torch.testing.assert_close(first, torch_bn.batch_norm(x, None, None, training=True))
    assert torch.equal(second, torch_bn.batch_norm(x.double(), None, None, training=True))


@pytest.mark.parametrize(
    "ndim, shape, dtype, layout, options",
    [
        # (4-d contiguous float32: the first test; each configuration compiles ~25 s cold)
        (4, (8, 6, 5, 7), torch.float32, "channels_last", {"momentum": None, "bias": False}),
        (5, (4, 3, 2, 3, 4), torch.float64, "strided", {"affine": False}),
    ],
    ids=["2d-channels-last-momentum-none-no-bias", "3d-float64-strided-no-affine"],
)
def test_generated_code_matches_torch_nn_over_steps(ndim, shape, dtype, layout, options):
    """TorchInductor's code itself against torch.nn, 20 steps switching to evaluation every
    fifth (the parity suite runs every configuration without the code generation, to keep its
    time: tests/test_batchnorm_interface.py); tolerances of tests/bn_testing.py."""
    g = torch.Generator().manual_seed(ndim)
    ours, theirs = module_pair(compiled_bn, ndim, shape[1], dtype=dtype, **options)
    randomize(ours, g)
    theirs.load_state_dict(ours.state_dict())
    for step in range(20):
        for m in (ours, theirs):
            m.train(step % 5 != 4)
        x = make_input(shape, dtype, layout, g, loc=1.0, scale=2.0)
        dy = make_input(shape, dtype, "contiguous", g)
        compare_step(ours, theirs, x, dy, TOL[dtype], layout)
    assert compiled_bn.compile_disabled() is None


def test_split_reduction_compiled_equals_torch_nn_and_keeps_the_precision():
    """Inputs large enough for torch_bn.split_plan's blocks: channels innermost (whole
    blocks of rows and a shorter one after them) and NCHW (a block per sample, or a few
    samples per block for 7 x 7 and a smaller block after them), TorchInductor's
    code against torch.nn; then the mean-1e4 input of tests/test_torch_bn.py in rows, within
    1e-3 of float64 and at least as close as PyTorch's, and its statistics merged from the
    blocks without losing the two-pass precision."""
    shape = (8200, 32)
    g = torch.Generator().manual_seed(12)
    ours, theirs = module_pair(compiled_bn, 2, shape[1])
    randomize(ours, g)
    theirs.load_state_dict(ours.state_dict())
    for _ in range(2):
        x = make_input(shape, torch.float32, "contiguous", g, loc=1.0, scale=2.0)
        assert torch_bn.split_plan(x) is not None
        dy = make_input(shape, torch.float32, "contiguous", g)
        compare_step(ours, theirs, x, dy, TOL[torch.float32], "contiguous")
    # NCHW: a block per sample; 7 x 7: 4 samples per block and 2 left over
    for image, plan in [((16, 64, 16, 16), (16, 256, False)), ((66, 128, 7, 7), (16, 196, False))]:
        ours_2d, theirs_2d = module_pair(compiled_bn, 4, image[1])
        x = make_input(image, torch.float32, "contiguous", g, loc=1.0, scale=2.0)
        assert torch_bn.split_plan(x) == plan
        dy = make_input(image, torch.float32, "contiguous", g)
        compare_step(ours_2d, theirs_2d, x, dy, TOL[torch.float32], "contiguous")
    x = (1e4 + torch.randn(shape, generator=g)).requires_grad_()
    dy = torch.randn(shape, generator=g)
    plain = compiled_bn.BatchNorm1d(shape[1])  # (weight 1, bias 0: the graphs above serve)
    affine = plain.weight.detach(), plain.bias.detach()
    results = []
    for function, t in [
        (plain, x),
        (lambda t: nn.functional.batch_norm(t, None, None, *affine, training=True), x),
        (lambda t: torch_bn.batch_norm(t, None, None, training=True), x.detach().double()),
    ]:
        t = t.requires_grad_()
        y = function(t)
        results.append((y.detach().double(), *torch.autograd.grad(y, t, dy.to(t.dtype))))
    for ours_, theirs_, exact in zip(*results):
        torch.testing.assert_close(ours_.double(), exact, rtol=0, atol=1e-3)
        assert (ours_ - exact).abs().max() <= (theirs_.double() - exact).abs().max() * 1.01
    # The statistics: the mean to half a unit in the last place (2**-11 near 1e4); the
    # variance to 1e-5 relative (the compiled loops sum a block's 2048 rows one after another
    # in float32, about sqrt(2048) * 2**-24 = 2.7e-6 for random rounding; eager reaches 1e-6)
    _, mean, var, _ = compiled_bn.run("forward_train", x.detach(), *affine, 1e-5)
    exact_mean, exact_var = torch_bn.batch_stats(x.detach().double())
    assert (mean.double() - exact_mean).abs().max() <= 2**-11 * 1.001
    assert ((var.double() - exact_var).abs() / exact_var).max() <= 1e-5
    # A mean that is not a round number and a small spread (std 0.01 near 12345.678; a float32
    # sum of a block's 2048 rows added one after another is off by about 390 there, and the
    # variance was then 0.4% off): the first pass adds deviations from each block's first row
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.01 + 12345.678).float()
    x[:, 3] = 12345.678  # a constant channel: variance 0, not a negative one
    _, mean, var, _ = compiled_bn.run("forward_train", x, *affine, 1e-5)
    exact_mean, exact_var = torch_bn.batch_stats(x.double())
    assert (mean.double() - exact_mean).abs().max() <= 2**-11 * 1.001
    assert var[3] == 0 and exact_var[3] == 0
    others = torch.arange(shape[1]) != 3
    assert ((var.double() - exact_var).abs() / exact_var)[others].max() <= 1e-5
    # Too small to split, one reduction: the compiled first pass also adds deviations from
    # the first row (near 3e6, std 1, the plain float32 sum of 2048 rows put the variance
    # 2% off; ATen's eager mean adds pairwise)
    x = (torch.randn(2048, 32, generator=g, dtype=torch.float64) + 3e6).float()
    assert torch_bn.split_plan(x) is None
    _, mean, var, _ = compiled_bn.run("forward_train", x, *affine, 1e-5)
    exact_mean, exact_var = torch_bn.batch_stats(x.double())
    assert ((var.double() - exact_var).abs() / exact_var).max() <= 1e-5
    assert compiled_bn.compile_disabled() is None


def test_under_a_path_with_a_space_the_compiled_module_names_the_cause_and_the_remedy(tmp_path):
    """The course's .venv inside a clone at "My Courses/bn" (here: a link to this clone):
    TorchInductor's C++ build cannot take the path, so the module runs eager and its one
    warning says why and what to do; chapter 5's generated_kernel raises the same words
    (it used to fail with a bare "C++ compile error", or a blank reason)."""
    root = Path(__file__).resolve().parents[1]
    prefix = Path(sys.prefix).resolve()
    python = Path(sys.executable)
    if not prefix.is_relative_to(root) or not python.is_relative_to(prefix.parent):
        pytest.skip("needs the course's .venv inside the clone (python3 course.py test)")
    clone = tmp_path / "My Courses" / "bn"
    clone.parent.mkdir()
    clone.symlink_to(root, target_is_directory=True)
    script = (
        "import warnings, torch\n"
        "from bncourse import compiled_bn\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    compiled_bn.BatchNorm1d(3)(torch.randn(4, 3))\n"
        "print([str(w.message) for w in caught if 'compiled_bn' in str(w.message)])\n"
        "try:\n"
        "    compiled_bn.generated_kernel('forward_train', torch.randn(4, 3), None, None, 1e-5)\n"
        "except RuntimeError as error:\n"
        "    print('generated_kernel:', error)\n"
    )
    done = subprocess.run(
        [str(clone / python.relative_to(root)), "-c", script],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "installed under a path with a space" in done.stdout
    assert "at a path without spaces" in done.stdout
    assert "generated_kernel: PyTorch is installed under a path with a space" in done.stdout


def test_a_compile_failure_gives_a_reason_that_is_never_blank():
    blank_first_line = RuntimeError("\n\nCppCompileError: C++ compile error\nld: error: no -ltorch")
    reason = compiled_bn._reason(blank_first_line)
    assert reason == ("RuntimeError: CppCompileError: C++ compile error (ld: error: no -ltorch)")
    assert compiled_bn._reason(RuntimeError("")) == "RuntimeError: (no message)"
