"""Issue 15's attacks on the grader: learner code that tries to fake a pass. None may pass.

The notebooks are made by :mod:`grading_notebooks` (never committed executed). Attacks that
act inside the judged function have one exercise each, so several share a notebook and each
keeps its own verdict; attacks on the kernel, the package or other notebooks get their own.
Most are graded in one command, as a class whose "learners" are the attacks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grading_notebooks as made
import pytest

from bncourse.grading.manifest import manifest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = "20"  # seconds per cell and per check: every cell here takes well under one


def grade(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bncourse", "grade", "--timeout", TIMEOUT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def verdicts(json_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    data = json.loads(json_path.read_text())
    return {(r["learner"], r["exercise"]): (r["status"], r["message"]) for r in data["results"]}


@pytest.mark.slow
def test_attacks_from_the_kernel_and_from_the_judged_function_all_fail(tmp_path):
    """Attacks 1-5 and 8 of the issue, one "learner" each, graded in one command."""
    chapter1, chapter2, chapter4 = (
        "01_what_batchnorm_does",
        "02_numpy_forward",
        "04_running_stats",
    )
    wrong_extreme = "def extreme_batch(m):\n    return np.arange(m, dtype=float)"
    made.write(  # 1, 2a, 3a in the kernel; 8: a deleted block
        made.chapter_notebook(
            chapter1,
            {
                "extreme-batch": wrong_extreme,
                "expected-std": "def expected_std(n, c):\n    return 1.0",
            },
            extra=(made.PATCH_THE_KERNEL,),
            drop=("standardize",),
        ),
        tmp_path / "class" / "kernel" / f"{chapter1}.ipynb",
    )
    made.write(  # 2b and 4, inside the judged functions
        made.chapter_notebook(
            chapter2,
            {
                "numpy-batch-stats": made.PATCHING_BATCH_STATS,
                "numpy-forward": made.ALWAYS_AGREEING_ARRAY,
            },
        ),
        tmp_path / "class" / "patching" / f"{chapter2}.ipynb",
    )
    made.write(  # 3b, 3c, 5b
        made.chapter_notebook(
            chapter4,
            {
                "state-sizes": made.FAKE_OUTPUT,
                "running-stats-update": made.PRINTING_THREAD,
                "batchnorm-modes": made.WRAPPING_F_BATCH_NORM,
            },
        ),
        tmp_path / "class" / "channels" / f"{chapter4}.ipynb",
    )
    made.write(  # 5a
        made.chapter_notebook(
            chapter2,
            {
                "numpy-batch-stats": made.IMPORTED_REFERENCE,
                "numpy-forward": made.CALLING_THE_REFERENCE,
            },
        ),
        tmp_path / "class" / "references" / f"{chapter2}.ipynb",
    )
    made.write(  # 8: both blocks relabelled as chapter 1's one-liner, the label twice
        made.chapter_notebook(
            chapter2,
            {
                "numpy-batch-stats": made.solution("expected-std"),
                "numpy-forward": made.solution("expected-std"),
            },
            labels={"numpy-batch-stats": "expected-std", "numpy-forward": "expected-std"},
        ),
        tmp_path / "class" / "relabelled" / f"{chapter2}.ipynb",
    )
    report = tmp_path / "report.json"
    run = grade(str(tmp_path / "class"), "--jobs", "2", "--json", str(report))
    assert run.returncode == 1, run.stdout + run.stderr
    found = verdicts(report)
    expected = {
        ("kernel", "standardize"): ("missing", "is not in the notebook"),
        ("kernel", "extreme-batch"): ("failed", "the bound"),
        ("kernel", "expected-std"): ("failed", "expected"),
        ("patching", "numpy-batch-stats"): ("failed", "numpy.allclose replaced"),
        ("patching", "numpy-forward"): ("failed", "is wrong"),
        ("channels", "state-sizes"): ("failed", "os.write to descriptor"),
        ("channels", "running-stats-update"): ("failed", "starting a thread"),
        ("channels", "batchnorm-modes"): ("failed", "uses the reference"),
        ("references", "numpy-batch-stats"): ("failed", "uses the reference"),
        ("references", "numpy-forward"): ("failed", "uses the reference"),
        ("relabelled", "numpy-batch-stats"): ("missing", "deleted or relabelled"),
        ("relabelled", "numpy-forward"): ("missing", "deleted or relabelled"),
    }
    assert set(found) == set(expected), "a duplicated label is one exercise, of its chapter"
    for key, (status, words) in expected.items():
        assert found[key][0] == status and words in found[key][1], (key, found[key])
    assert "passed" not in {status for status, _ in found.values()}


@pytest.mark.slow
def test_a_notebook_that_changes_the_package_stops_the_run(tmp_path):
    """Attack 6, on a copy of the package: the run stops before a later notebook is judged."""
    package = tmp_path / "pkg"
    shutil.copytree(
        ROOT / "bncourse", package / "bncourse", ignore=shutil.ignore_patterns("__pycache__")
    )
    real = manifest()
    made.write(
        made.chapter_notebook("01_what_batchnorm_does", extra=(made.append_to_the_package(),)),
        tmp_path / "subs" / "01_what_batchnorm_does.ipynb",
    )
    made.write(
        made.chapter_notebook("09_beyond_one_device", default="stub"),
        tmp_path / "subs" / "09_beyond_one_device.ipynb",
    )
    env = {**os.environ, "PYTHONPATH": str(package)}
    run = grade(str(tmp_path / "subs"), cwd=package, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "bncourse/ changed while" in run.stderr and "changed checks.py" in run.stderr
    assert "passed" not in run.stdout
    assert manifest() == real, "the attack reached the real package"


@pytest.mark.slow
def test_a_notebook_cannot_change_the_next_ones_grade(tmp_path):
    """Attack 7: notebook A, graded first, overwrites notebook B with the solutions."""
    victim = tmp_path / "subs" / "01_what_batchnorm_does.ipynb"
    made.write(made.chapter_notebook("01_what_batchnorm_does", default="stub"), victim)
    solved = made.chapter_notebook("01_what_batchnorm_does")
    made.write(
        made.chapter_notebook("09_beyond_one_device", extra=(made.overwrite(victim, solved),)),
        tmp_path / "subs" / "00_first.ipynb",
    )
    report = tmp_path / "report.json"
    run = grade(str(tmp_path / "subs"), "--json", str(report))
    data = json.loads(report.read_text())
    b = {r["exercise"]: r["status"] for r in data["results"] if "01_what" in r["notebook"]}
    assert b == dict.fromkeys(made.chapter_exercises("01_what_batchnorm_does"), "not attempted")
    assert "BEGIN SOLUTION" in victim.read_text(), "the attack did write the file"
    assert run.returncode == 1


def test_the_course_own_batchnorm_is_a_reference_of_every_exercise_that_writes_it():
    """A candidate of an exercise that writes BatchNorm may not call chapter 5's formulas or
    passes (eager or compiled) any more than numpy_bn's: each is swapped out while it runs."""
    import inspect

    from bncourse import compiled_bn, torch_bn
    from bncourse.grading.references import references_for

    formulas = {
        f"bncourse.torch_bn.{name}"
        for name in torch_bn.__all__
        if inspect.isfunction(getattr(torch_bn, name))
    }
    compiled = {f"bncourse.compiled_bn.{name}" for name in ("batch_norm", "run")}
    assert hasattr(compiled_bn, "run")
    for exercise in ("numpy-forward", "numpy-backward", "autograd-function", "batchnorm-modes"):
        replaced = set(references_for(exercise))
        assert formulas | compiled <= replaced, (exercise, sorted((formulas | compiled) - replaced))
    assert not set(references_for("module-forward")) & formulas  # it builds on batch_norm


GUARDED_CALLS = """
import inspect, torch
from bncourse import torch_bn
from bncourse.grading.sandbox import Guard

class Double(torch.autograd.Function):  # PyTorch's newer form: apply binds forward's signature
    @staticmethod
    def forward(x, scale=2.0):
        return x * scale
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[1]
    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None

def signatures_and_the_course_batchnorm():
    inspect.signature(lambda a, b=1, *, c=2: None)
    x = torch.randn(4, 3, requires_grad=True)
    torch_bn.batch_norm(x, None, None, training=True).sum().backward()
    Double.apply(x).sum().backward()

def frame_of_a_traceback():
    try:
        1 / 0
    except ZeroDivisionError as error:
        return error.__traceback__.tb_frame.f_back

def frame_of_a_generator():
    return (i for i in range(2)).gi_frame

for candidate in (signatures_and_the_course_batchnorm, frame_of_a_traceback, frame_of_a_generator):
    guard = Guard()
    try:
        guard.wrap(candidate)()
    except BaseException:
        pass
    print(candidate.__name__, guard.refused)
"""


def test_the_guard_lets_a_function_read_signatures_but_not_frames():
    """Reading a function's code and defaults (inspect.signature, which autograd.Function.apply
    calls for a Function with setup_context: torch_bn's, or a learner's) leads to no frame or
    state, and is allowed while a candidate runs; a frame, through a traceback or a generator,
    is refused (the judge's expected values live in frames)."""
    run = subprocess.run(
        [sys.executable, "-c", GUARDED_CALLS], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "signatures_and_the_course_batchnorm []",
        "frame_of_a_traceback ['object.__getattr__(traceback.tb_frame)']",
        "frame_of_a_generator ['object.__getattr__(generator.gi_frame)']",
    ]
