"""bncourse.gpu_bench: the benchmark's pipeline, its results file, and what the chapter draws.

Nothing here is timed.  The suite runs on the CPU (Triton's interpreter) on tiny inputs
with a stand-in timer (every call is made once; the "time" is a fixed number
per implementation), so the checks, the traffic arithmetic, the file format, the loader, the
table and the figures are all exercised.  On a GPU the ``cuda`` test runs the command itself
on one small shape.  (Only torch, triton and pytest are needed for the ``cuda`` test, so that
it runs on a bare GPU machine.)
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bncourse import gpu_bench
from bncourse.__main__ import main as cli

STAND_IN_MS = {"triton": 2.0, "cudnn": 3.0, "native": 4.0, "torch_bn": 10.0, "copy": 1.0}


def stand_in_timer():
    """Calls each implementation once (so it must run) and returns its stand-in time; the
    implementations come in gpu_bench.IMPLEMENTATIONS order for each (case, pass)."""
    order = iter(gpu_bench.IMPLEMENTATIONS * 100)

    def timer(call):
        call()
        return STAND_IN_MS[next(order)]

    return timer


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A results file written by the suite on tiny inputs, read back by the loader."""
    cases = [
        gpu_bench.Case((6, 5, 7, 9), "bfloat16", "channels_last"),
        gpu_bench.Case((4, 3, 5, 6)),
        gpu_bench.Case((300, 7)),
    ]
    results = gpu_bench.run(cases, device="cpu", timer=stand_in_timer())
    path = tmp_path_factory.mktemp("bench") / "gpu_bench.json"
    path.write_text(
        json.dumps(
            {
                "format": gpu_bench.FORMAT,
                "date": "2026-01-31",
                "environment": gpu_bench.environment("cpu"),
                "timing": gpu_bench.TIMING,
                "results": results,
            }
        )
    )
    return gpu_bench.load_results(path)


def test_the_suite_writes_what_the_loader_accepts(report):
    rows = report["results"]
    assert [(r["shape"], r["pass"]) for r in rows] == [
        ([6, 5, 7, 9], "forward"),
        ([6, 5, 7, 9], "forward+backward"),
        ([4, 3, 5, 6], "forward"),
        ([4, 3, 5, 6], "forward+backward"),
        ([300, 7], "forward"),
        ([300, 7], "forward+backward"),
    ]
    for r in rows:
        assert r["ms"] == STAND_IN_MS and r["checked"], r
        assert r["max_error"] <= 2 * 2**-7  # within bfloat16's tolerance, for every dtype
        numel, size = math.prod(r["shape"]), getattr(torch, r["dtype"]).itemsize
        assert r["bytes"] == gpu_bench.PASSES[r["pass"]] * numel * size
        assert r["gbps"]["triton"] == pytest.approx(r["bytes"] / 2e-3 / 1e9)
        assert r["gbps"]["copy"] == pytest.approx(2 * numel * size / 1e-3 / 1e9)
        assert r["ratios"] == {
            "triton/cudnn": 2 / 3,
            "triton/native": 0.5,
            "triton/copy": 2.0,
            "torch_bn/cudnn": 10 / 3,
        }
    assert report["environment"]["triton"] and report["environment"]["torch"] == torch.__version__


def test_table_and_figures_render(report):
    matplotlib = pytest.importorskip("matplotlib")  # (a bare GPU machine may not have it)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncourse import plots

    table = gpu_bench.format_results(report)
    assert "Triton interpreter" in table and "2026-01-31" in table
    assert "6x5x7x9 bf16 CL" in table and "CHECK FAILED" not in table
    assert len(table.splitlines()) == 10 + 2 * len(report["results"])
    for draw in (plots.gpu_bench_times, plots.gpu_bench_bandwidth):
        fig = draw(report)
        assert fig.axes
        plt.close(fig)


def test_loader_without_a_file_and_with_bad_ones(tmp_path, report, monkeypatch):
    assert gpu_bench.load_results(tmp_path / "none.json") is None
    monkeypatch.setattr(gpu_bench, "RESULTS_PATH", tmp_path / "none.json")
    assert gpu_bench.load_results() is None, "no results recorded: the chapter shows the note"
    broken = [
        ({"format": "something else"}, "not a results file"),
        ({k: v for k, v in report.items() if k != "date"}, "no 'date'"),
        (dict(report, environment={"gpu": "x", "torch": "2"}), "does not name the driver"),
        (
            dict(report, results=[{k: v for k, v in report["results"][0].items() if k != "ms"}]),
            "ms['copy']",
        ),
    ]
    for content, message in broken:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
            gpu_bench.load_results(path)


def test_the_default_cases_are_the_issues():
    cases = gpu_bench.DEFAULT_CASES
    resnet = [(256, 64, 56, 56), (256, 128, 28, 28), (256, 256, 14, 14), (256, 512, 7, 7)]
    assert [c.shape for c in cases if c.dtype == "float32" and len(c.shape) == 4] == resnet
    assert [c.shape for c in cases if c.dtype == "bfloat16"] == resnet
    assert all(c.layout == "channels_last" for c in cases if c.dtype == "bfloat16")
    assert [c.shape for c in cases if len(c.shape) == 2] == [(65536, 256), (100000, 32)]
    assert gpu_bench.minimal_bytes(cases[0], "forward") == (
        gpu_bench.PASSES["forward"] * math.prod(cases[0].shape) * torch.float32.itemsize
    )


def test_minimal_traffic_is_the_documented_passes():
    """Forward: 2 reads and 1 write of the tensor; backward: 4 reads and 1 write."""
    forward, backward = 2 + 1, 4 + 1
    assert gpu_bench.PASSES == {"forward": forward, "forward+backward": forward + backward}


def check_recorded(report):
    """What a committed results file must show: where it ran, and every check passed."""
    assert report["environment"]["gpu"] and report["environment"]["driver"]
    assert all(r["checked"] for r in report["results"]), "a case failed its check"


def test_the_recorded_results_check_accepts_a_run_and_refuses_a_failed_check(report):
    check_recorded(report)
    failed = dict(report, results=[dict(report["results"][0], checked=False)])
    with pytest.raises(AssertionError, match="a case failed its check"):
        check_recorded(failed)


@pytest.mark.skipif(
    not gpu_bench.RESULTS_PATH.exists(),
    reason=f"no GPU results recorded yet ({gpu_bench.RESULTS_PATH.name} is "
    "written by `python -m bncourse bench --device cuda --json ...` on a "
    "GPU); the loader's answer without one is tested above",
)
def test_the_committed_results_load_and_passed_their_checks():
    check_recorded(gpu_bench.load_results())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtype", "bfloat16"], "--dtype is for --device cuda"),
        (["--channels-last"], "--channels-last applies to the --shape cases"),
        (["--channels-last", "--shape", "8192x512"], "--channels-last needs 4-d or 5-d shapes"),
    ],
)
def test_cpu_bench_refuses_gpu_options(argv, message, capsys):
    assert cli(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU here: the stand-in run above covers the pipeline on "
    "the CPU; the command times the compiled kernels on a GPU",
)
def test_cuda_bench_command_on_a_small_shape(tmp_path, capsys):
    path = tmp_path / "gpu_bench.json"
    assert (
        cli(
            [
                "bench",
                "--device",
                "cuda",
                "--shape",
                "32x64x16x16",
                "--dtype",
                "bfloat16",
                "--channels-last",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    report = gpu_bench.load_results(path)
    assert [r["pass"] for r in report["results"]] == ["forward", "forward+backward"]
    assert report["environment"]["gpu"] == torch.cuda.get_device_name()
    assert "wrote" in capsys.readouterr().out


def test_the_table_fits_83_characters_a_line_case_first():
    """A fabricated results file of the default suite's cases, with the longest values a
    table cell takes (four-digit milliseconds, a failed check): chapter 8 prints it, and its
    printed lines have at most 83 characters (tests/test_project.py's rule)."""
    ms = {name: 1234.567 for name in gpu_bench.IMPLEMENTATIONS}
    results = [
        {
            "shape": list(case.shape),
            "dtype": case.dtype,
            "layout": case.layout,
            "pass": name,
            "bytes": 12_345_678_901,
            "ms": ms,
            "gbps": {"triton": 9999.0, "copy": 9999.0},
            "checked": k > 0,
        }
        for k, case in enumerate(gpu_bench.DEFAULT_CASES)
        for name in gpu_bench.PASSES
    ]
    report = {
        "format": gpu_bench.FORMAT,
        "date": "2026-12-07",
        "environment": {
            "gpu": "NVIDIA H100 80GB HBM3 (a long name for a GPU, as drivers give them)",
            "driver": "550.127.05",
            "torch": "2.5.1+cu124",
            "triton": "3.1.0",
        },
        "timing": gpu_bench.TIMING,
        "results": results,
    }
    lines = gpu_bench.format_results(gpu_bench.validate(report)).splitlines()
    assert max(map(len, lines)) <= 83, max(lines, key=len)
    rows = [line for line in lines if " fwd" in line]
    assert len(rows) == 2 * len(results)
    for row, r in zip(rows, results + results):
        assert row.startswith(gpu_bench.case_label(r) + " "), row
    assert sum("CHECK FAILED" in line for line in lines) == 2  # the first case's two passes
