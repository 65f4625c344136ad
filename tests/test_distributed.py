"""SyncBatchNorm on real gloo process groups (127.0.0.1), against one BN on the global batch.

Every test that starts processes goes through bncourse.launch.run_distributed, which picks a
free port, kills every rank on an error or after a timeout, and leaves no process behind (each
test checks that no child process survives).

Tolerances (float32): outputs and input gradients within atol=1e-5, rtol=1e-4 of
torch.nn.BatchNorm on the concatenated batch; parameter gradients (sums over up to 3 ranks
and 3 steps of per-rank sums over up to ~100 values) within atol=1e-4, rtol=1e-4; buffers
within atol=1e-5, rtol=1e-5. The merged statistics differ from single-process ones only by
float32 rounding in a different order.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from bncourse import training
from bncourse.distributed import (
    SyncBatchNorm,
    convert_sync_batchnorm,
    count_collectives,
    local_stats,
    merge_stats,
    one_batch_norm_reference,
    sync_bn_traffic_worker,
    sync_bn_worker,
)
from bncourse.launch import DistributedError, run_distributed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_process_left_behind():
    yield
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == [], "a rank process outlived its test"


@pytest.mark.parametrize(
    "sizes, shape, momentum, affine",
    [
        ([4, 4], (3,), 0.1, True),  # world size 2, (N, C)
        ([3, 5], (2, 6), None, True),  # unequal sizes, (N, C, L), cumulative average
        ([2, 1, 4], (3, 4, 4), 0.3, True),  # world size 3, images, a rank with one sample
        ([5, 0, 2], (2, 3), 0.1, False),  # a rank with no sample at all, affine=False
        ([0, 0], (3,), 0.1, True),  # no sample anywhere: an empty output, as BN's
    ],
)
def test_sync_bn_equals_one_bn_over_the_global_batch(sizes, shape, momentum, affine):
    results = run_distributed(
        sync_bn_worker, len(sizes), sizes, shape, 3, 0, momentum, affine, timeout=120
    )
    bn, out, grad_input = one_batch_norm_reference(sizes, shape, momentum=momentum, affine=affine)
    out, grad_input = out.numpy(), grad_input.numpy()
    np.testing.assert_allclose(
        np.concatenate([r["out"] for r in results]), out, atol=1e-5, rtol=1e-4
    )
    np.testing.assert_allclose(
        np.concatenate([r["grad_input"] for r in results]), grad_input, atol=1e-5, rtol=1e-4
    )
    if affine:  # per-rank parameter gradients add up to the global ones (DDP averages them)
        np.testing.assert_allclose(
            sum(r["grad_weight"] for r in results), bn.weight.grad.numpy(), atol=1e-4, rtol=1e-4
        )
        np.testing.assert_allclose(
            sum(r["grad_bias"] for r in results), bn.bias.grad.numpy(), atol=1e-4, rtol=1e-4
        )
    for r in results:  # every rank holds the same buffers, those of the global BN
        np.testing.assert_allclose(r["running_mean"], bn.running_mean.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(r["running_var"], bn.running_var.numpy(), atol=1e-5, rtol=1e-5)
        assert r["num_batches_tracked"] == int(bn.num_batches_tracked) == 3


def test_chan_merge_equals_statistics_of_the_union():
    torch.manual_seed(0)
    parts = [torch.randn(n, 3, dtype=torch.float64) * 5 + 100 for n in (1, 4, 0, 7)]
    stats = [local_stats(p) for p in parts]
    count, mean, m2 = merge_stats(
        torch.stack([s[0] for s in stats]),
        torch.stack([s[1] for s in stats]),
        torch.stack([s[2] for s in stats]),
    )
    union = torch.cat(parts)
    assert int(count) == 12
    torch.testing.assert_close(mean, union.mean(0))
    torch.testing.assert_close(m2 / 12, union.var(0, correction=0))


def test_chan_merge_keeps_float32_accuracy_where_sum_of_squares_fails():
    """Mean 1e4, std 1, in float32: the merged variance is right to 1e-3 relative, the
    E[x^2] - E[x]^2 formula from all-reduced sums is off by far more."""
    generator = torch.Generator().manual_seed(1)
    parts = [
        (torch.randn(512, 2, generator=generator, dtype=torch.float64) + 1e4).float()
        for _ in range(3)
    ]
    union = torch.cat(parts).double()
    exact = union.var(0, correction=0)
    stats = [local_stats(p) for p in parts]
    _, _, m2 = merge_stats(
        torch.stack([s[0] for s in stats]),
        torch.stack([s[1] for s in stats]),
        torch.stack([s[2] for s in stats]),
    )
    assert torch.allclose(m2.double() / union.shape[0], exact, rtol=1e-3)
    n = union.shape[0]
    sums = sum(p.sum(0) for p in parts)
    squares = sum((p * p).sum(0) for p in parts)
    naive = squares / n - (sums / n) ** 2
    assert not torch.allclose(naive.double(), exact, rtol=1e-1)


def test_eval_mode_and_no_process_group_are_plain_batchnorm():
    assert not dist.is_initialized()
    torch.manual_seed(2)
    ours, theirs = SyncBatchNorm(3), nn.BatchNorm1d(3)
    for _ in range(3):
        x = torch.randn(8, 3, 5)
        torch.testing.assert_close(ours(x), theirs(x))
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)


def test_convert_sync_batchnorm_replaces_and_shares_state():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)),
    )
    model[1].running_mean.fill_(0.5)
    converted = convert_sync_batchnorm(model)
    assert isinstance(converted[1], SyncBatchNorm) and isinstance(converted[3][1], SyncBatchNorm)
    assert converted[3][1].momentum is None
    assert converted[1].weight is model[1].weight
    assert float(converted[1].running_mean[0]) == 0.5
    assert set(converted.state_dict()) == set(model.state_dict())


def test_sync_bn_takes_torchs_bias_argument():
    ours, theirs = SyncBatchNorm(3, bias=False), nn.SyncBatchNorm(3, bias=False)
    assert ours.bias is None and theirs.bias is None and ours.weight.shape == (3,)
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    converted = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3, bias=False)))
    assert isinstance(converted[0], SyncBatchNorm) and converted[0].bias is None


def test_sync_bn_errors_like_torch():
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        SyncBatchNorm(3)(torch.randn(3))


def double_backward_and_layout(rank, world_size):
    """Rank ``rank``'s answers to: does differentiating SyncBatchNorm's backward again raise
    (autograd cannot see the all-reduce inside it, so it would be silently wrong), and in
    which strides come the output and the input's gradient of a transposed input?"""
    torch.manual_seed(rank)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(SyncBatchNorm(3).double()(x).pow(3).sum(), x, create_graph=True)
    try:
        torch.autograd.grad(g.sum(), x)
        second = "no error"
    except RuntimeError as error:
        second = str(error)
    strides = {}
    for name, module in (("ours", SyncBatchNorm(3)), ("nn", nn.BatchNorm1d(3))):
        x = torch.randn(5, 4, 3).transpose(1, 2)  # (N, L, C) -> (N, C, L)
        out = module(x.requires_grad_(True))
        # the input's gradient before autograd gives a leaf's .grad the leaf's strides
        (grad,) = torch.autograd.grad(out, x, torch.randn(5, 4, 3).transpose(1, 2))
        strides[name] = (out.stride(), grad.stride())
    return {"second_derivative": second, "strides": strides}


def test_sync_bn_refuses_double_backward_and_returns_torchs_layout():
    """Double backward (a gradient penalty) gave values off by 4 to 10 without a word: it
    now raises PyTorch's once_differentiable error. A transposed (N, C, L) input gives a
    contiguous output and gradient, as nn.BatchNorm1d's (it kept the input's strides, so
    ``out.view(N, -1)`` failed only with more than one process)."""
    for result in run_distributed(double_backward_and_layout, 2, timeout=120):
        assert "marked with @once_differentiable" in result["second_derivative"]
        assert result["strides"]["ours"] == result["strides"]["nn"] == ((12, 4, 1), (12, 4, 1))


# --------------------------------------------------------------------------------------------
# The launcher: failures are prompt and leave nothing behind
# --------------------------------------------------------------------------------------------
def fails_on_rank_1(rank, world_size):
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.barrier()  # rank 0 would wait here forever for rank 1


def hangs_on_rank_0(rank, world_size):
    if rank == 0:
        time.sleep(3600)
    dist.barrier()


def exits_on_rank_1(rank, world_size):
    if rank == 1:
        os._exit(3)
    dist.barrier()


def returns_rank(rank, world_size):
    return rank


def test_a_rank_that_raises_fails_the_run_promptly():
    """Promptly: in about the time it takes to start the ranks, not when rank 0's barrier or
    the run's 600 s timeout would give up."""
    start = time.monotonic()
    assert run_distributed(returns_rank, 2, timeout=600) == [0, 1]
    startup = time.monotonic() - start
    start = time.monotonic()
    with pytest.raises(
        DistributedError, match=r"rank 1 raised:(.|\n)*ValueError: rank 1 fails on purpose"
    ):
        run_distributed(fails_on_rank_1, 2, timeout=600)
    assert time.monotonic() - start < startup + 20


def test_a_function_the_ranks_cannot_import_is_refused_before_any_starts():
    with pytest.raises(TypeError, match="must import fn: define it at module level") as refused:
        run_distributed(lambda rank, world_size: rank, 2)
    assert "PicklingError" in str(refused.value) or "pickle" in str(refused.value)


def environment_variable(rank, world_size, name):
    import os

    return os.environ.get(name)


def test_ranks_see_the_callers_environment_at_the_call(monkeypatch):
    """The ranks fork from a server started at the first run (``start_method``); what the
    caller's environment holds when it calls is what every rank sees, as with ``spawn``."""
    name = "BNCOURSE_TEST_RANK_ENVIRONMENT"
    monkeypatch.delenv(name, raising=False)
    assert run_distributed(environment_variable, 2, name, timeout=60) == [None, None]
    monkeypatch.setenv(name, "set after the first run")
    assert (
        run_distributed(environment_variable, 2, name, timeout=60)
        == ["set after the first run"] * 2
    )


def test_a_function_defined_in_a_notebook_is_refused_with_the_reason():
    """A notebook's ``__main__`` has no file the ranks could import a function from: pickling
    it works, and the ranks then die on an AttributeError that only reaches stderr; the call
    says why instead (``python -c`` has the same ``__main__``)."""
    code = (
        "from bncourse.launch import run_distributed\n"
        "def f(rank, world_size):\n    return rank\n"
        "try:\n    run_distributed(f, 2, timeout=60)\n"
        "except TypeError as error:\n    print('TypeError:', error)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert "TypeError: run_distributed starts fresh processes" in run.stdout, run.stderr[-2000:]
    assert "defined in a notebook" in run.stdout


def test_a_hang_is_a_timeout():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 8 s"):
        run_distributed(hangs_on_rank_0, 2, timeout=8)
    assert time.monotonic() - start < 40


def test_a_rank_that_dies_fails_the_run():
    with pytest.raises(DistributedError, match="rank 1 exited with code 3"):
        run_distributed(exits_on_rank_1, 2, timeout=60)


def exits_quietly_on_rank_1(rank, world_size):
    if rank == 1:
        os._exit(0)  # status 0, but no result
    return rank


def test_a_rank_that_exits_with_status_0_without_a_result_fails_the_run_promptly():
    """Not a wait for the whole timeout ending in "still running": the rank is gone."""
    start = time.monotonic()
    with pytest.raises(DistributedError, match="rank 1 exited with code 0 without a result"):
        run_distributed(exits_quietly_on_rank_1, 2, timeout=120)
    assert time.monotonic() - start < 60


Pair = collections.namedtuple("Pair", "rank values")


def returns_a_namedtuple(rank, world_size):
    return Pair(rank, torch.full((2,), float(rank)))


def returns_a_lambda(rank, world_size):
    return lambda: rank


def test_results_may_be_namedtuples_and_an_unpicklable_one_is_explained():
    """A namedtuple made _to_numpy fail (reported as the rank raising); a result the queue
    cannot pickle was reported as "exited with code 0 without a result"."""
    results = run_distributed(returns_a_namedtuple, 2, timeout=120)
    assert [type(r) for r in results] == [Pair, Pair] and [r.rank for r in results] == [0, 1]
    np.testing.assert_array_equal(results[1].values, np.array([1.0, 1.0], dtype=np.float32))
    with pytest.raises(
        DistributedError, match=r"rank \d returned a result that could not be sent.*pickle"
    ):
        run_distributed(returns_a_lambda, 2, timeout=120)


def mismatched_sync_bn(rank, world_size, what):
    """Rank 1 holds 4 channels where rank 0 holds 3, or float64 where rank 0 holds float32."""
    channels = 4 if (rank == 1 and what == "channels") else 3
    dtype = torch.float64 if (rank == 1 and what == "dtype") else torch.float32
    SyncBatchNorm(channels, dtype=dtype)(torch.randn(4, channels, dtype=dtype))


@pytest.mark.parametrize(
    "what, described",
    [
        ("channels", "rank 0: 3 channels, torch.float32; rank 1: 4 channels, torch.float32"),
        ("dtype", "rank 0: 3 channels, torch.float32; rank 1: 3 channels, torch.float64"),
    ],
)
def test_sync_bn_with_other_channels_or_dtype_on_a_rank_is_a_value_error(what, described):
    """A ValueError that names what each rank holds, not gloo aborting the process (which
    the caller saw only as "rank 0 exited with code -6")."""
    with pytest.raises(DistributedError) as failed:
        run_distributed(mismatched_sync_bn, 2, what, timeout=120)
    message = str(failed.value)
    assert "ValueError: SyncBatchNorm needs inputs of the same number of channels" in message
    assert described in message


@pytest.mark.parametrize(
    "batch_size, says",
    [
        ("0", "--batch-size must be at least 1, got 0"),
        ("5000", "--batch-size must be at most the 1258 training images, got 5000"),
    ],
)
def test_ddp_train_refuses_a_batch_size_it_cannot_take(batch_size, says, capsys):
    """Before any process starts: 0 ended in a ZeroDivisionError, and 5000 (more than the
    training set) ran on shorter batches than the shares and loss weights said, ending
    0.03 away from the one-process reference it claims to equal."""
    from bncourse import ddp_train, training

    with pytest.raises(SystemExit) as exited:
        ddp_train.main(["--batch-size", batch_size])
    assert exited.value.code == 2 and says in capsys.readouterr().err
    data = training.load_digits()
    whole = ddp_train.global_batches(data, len(data.train_y), 2, 0)  # divided by zero
    assert [len(y) for _, y in whole] == [1258, 1258]


# --------------------------------------------------------------------------------------------
# PyTorch's own launcher: torchrun runs bncourse.ddp_train unchanged
# --------------------------------------------------------------------------------------------
def _torchrun(*launchers: list[str], out, timeout: float = 150) -> dict:
    """Start each launcher (torchrun's arguments) at once, in its own process group, wait
    for all, and always end them (and their workers); return rank 0's result."""
    import json
    import signal

    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    script = ["-m", "bncourse.ddp_train", "--steps", "4", "--batch-size", "33", "--out", str(out)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *launcher, *script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for launcher in launchers
    ]
    try:
        deadline = time.monotonic() + timeout
        outputs = [p.communicate(timeout=max(1, deadline - time.monotonic()))[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # (starts 3 or 4 Python processes that import torch: ~30 s on 2 cores)
def test_torchrun_on_one_node_equals_one_batchnorm_over_the_global_batch(tmp_path):
    """``torchrun --nproc-per-node 2 -m bncourse.ddp_train``: DDP with the course's
    SyncBatchNorm, shares of 17 and 16 samples, trains exactly as one process with ordinary
    BatchNorm on the global batch of 33 (float64: rounding only)."""
    result = _torchrun(["--standalone", "--nproc-per-node", "2"], out=tmp_path / "result.json")
    assert result["world_size"] == 2 and result["shares"] == [17, 16]
    assert result["max_difference_from_one_global_batchnorm"] < 1e-12


@pytest.mark.slow  # (starts 3 or 4 Python processes that import torch: ~30 s on 2 cores)
def test_torchrun_on_two_launchers_with_c10d_rendezvous(tmp_path):
    """Two ``torchrun --nnodes 2`` launchers, one process each, meeting through a c10d
    rendezvous on 127.0.0.1 (what two machines of a cluster do, with the first one's address)."""
    from bncourse.launch import free_port

    port = free_port()
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    common += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "bn-test"]
    result = _torchrun(
        [*common, "--node-rank", "0"], [*common, "--node-rank", "1"], out=tmp_path / "result.json"
    )
    assert result["world_size"] == 2
    assert result["max_difference_from_one_global_batchnorm"] < 1e-12


def test_a_sync_bn_training_step_starts_three_collectives_per_layer():
    """Counted on 2 processes: per layer the check (2 int64), the statistics (1 + 2C float32)
    in the forward, the two sums (2C) in the backward, the same on both ranks."""
    model = training.make_model("mlp", "batch").float()  # 4 BatchNorm1d(64)
    results = run_distributed(sync_bn_traffic_worker, 2, model, (1, 8, 8), 3, 2, timeout=120)
    c = 64
    one_step = [("all_gather", 2, 16), ("all_gather", 1 + 2 * c, 4 * (1 + 2 * c))] * 4 + [
        ("all_reduce", 2 * c, 4 * 2 * c)
    ] * 4
    for result in results:
        assert [tuple(call) for call in result["calls"]] == one_step * 2
        assert result["layers"] == 4 and result["parameters"] == 17802


def test_count_collectives_counts_what_is_sent_and_puts_the_functions_back():
    original = dist.all_reduce
    with count_collectives() as calls:
        assert dist.all_reduce is not original
        with pytest.raises(ValueError, match="process group"):  # none here: the call fails
            dist.all_reduce(torch.zeros(5, dtype=torch.float64))
        with pytest.raises(ValueError, match="process group"):
            dist.all_gather(
                [torch.zeros(3, dtype=torch.int32)], tensor=torch.zeros(3, dtype=torch.int32)
            )
        # what SyncBatchNorm calls on NCCL (torch/nn/modules/_functions.py)
        with pytest.raises(ValueError, match="process group"):
            dist.all_gather_single(
                torch.zeros(1, 6), input_tensor=torch.zeros(3, dtype=torch.float64)
            )
    assert calls == [("all_reduce", 5, 40), ("all_gather", 3, 12), ("all_gather_single", 3, 24)]
    assert dist.all_reduce is original
