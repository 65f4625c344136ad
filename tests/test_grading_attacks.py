"""Attacks on the grader (issues 15 and 29): learner code that tries to fake a pass, fail a
classmate, rewrite a report or hang the run. None may work.

The notebooks are made by :mod:`grading_notebooks` (never committed executed) and graded in
one call, as a class whose "learners" are the attacks, two at a time. The attacks target a
judge that loads learner objects (unpickling, ``__del__``, patched NumPy), the files and
processes of the grader, and a class run's paths and reports. With the sandbox, all of them
fail by construction: the learner's code runs in the sandbox only, and only plain data
comes out of it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import grading_notebooks as made
import pytest

from bncourse import grader
from bncourse.grading import classroom, sandbox

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bncourse"
TIMEOUT = 20  # seconds per cell and per check: every cell here takes well under one
CH1, CH2, CH4 = "01_what_batchnorm_does", "02_numpy_forward", "04_running_stats"
ALL_PASSED_CH1 = ["passed"] * len(made.chapter_exercises(CH1))  # every chapter 1 exercise
CH3 = "03_backward_by_hand"
MARKER = "31.4159"  # the survivor's sleep: how it is found among processes
NEEDS_SANDBOX = pytest.mark.skipif(
    sandbox.isolation() is not None, reason=f"no sandbox here: {sandbox.isolation()}"
)


def package_digest() -> str:
    """Every file under bncourse/, __pycache__ included (a planted .pyc counts)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    return digest.hexdigest()


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def make_class(folder: Path, report: Path, port: int) -> dict[tuple[str, str], tuple[str, str]]:
    """The attacks, one learner each; ``{(learner, exercise): (status, words in message)}``."""
    wrong_extreme = "def extreme_batch(m):\n    return np.arange(m, dtype=float)"
    stop_everything = (  # the runner stops itself: a timeout, then a new sandbox
        "def expected_std(n, c):\n    import os, signal\n    os.kill(os.getpid(), signal.SIGSTOP)"
    )
    made.write(  # issue 15: patching the kernel's checks, a deleted block
        made.chapter_notebook(
            CH1,
            {"extreme-batch": wrong_extreme, "expected-std": stop_everything},
            extra=(made.PATCH_THE_KERNEL,),
            drop=("standardize",),
        ),
        folder / "kernel" / f"{CH1}.ipynb",
    )
    made.write(  # issue 15: patching NumPy and the reference; an always-agreeing array
        made.chapter_notebook(
            CH2,
            {
                "numpy-batch-stats": made.PATCHING_BATCH_STATS,
                "numpy-forward": made.ALWAYS_AGREEING_ARRAY,
            },
        ),
        folder / "patching" / f"{CH2}.ipynb",
    )
    made.write(  # issue 15: fake result lines, a printing thread, the reference wrapped
        made.chapter_notebook(
            CH4,
            {
                "state-sizes": made.FAKE_OUTPUT,
                "running-stats-update": made.PRINTING_THREAD,
                "batchnorm-modes": made.WRAPPING_F_BATCH_NORM,
            },
        ),
        folder / "channels" / f"{CH4}.ipynb",
    )
    made.write(  # issue 15: the reference imported, called; issue 15: blocks relabelled
        made.chapter_notebook(
            CH2,
            {
                "numpy-batch-stats": made.IMPORTED_REFERENCE,
                "numpy-forward": made.CALLING_THE_REFERENCE,
            },
        ),
        folder / "references" / f"{CH2}.ipynb",
    )
    made.write(  # issue 29: __reduce__, a result file by relative path, a survivor, SIGSTOP
        made.chapter_notebook(
            CH1,
            {"standardize": made.REDUCE_REPLACES_THE_CHECKER},
            extra=(
                made.results_by_relative_path(),
                made.survivor(report, MARKER),
                made.stop_the_grader(os.getpid()),
            ),
            default="stub",
        ),
        folder / "outside" / f"{CH1}.ipynb",
    )
    made.write(  # issue 29: __del__, a NumPy internal rebound, a "Likely cause:" injection
        made.chapter_notebook(
            CH1,
            {
                "extreme-batch": made.DEL_WRITES_A_VERDICT,
                "standardize": made.NUMPY_INTERNAL,
                "expected-std": made.LIKELY_CAUSE_INJECTION,
            },
        ),
        folder / "lingering" / f"{CH1}.ipynb",
    )
    made.write(  # issue 29: a right answer that starts a process and prints through libc
        made.chapter_notebook(CH1, {"standardize": made.ECHO_AND_UNTERMINATED_PRINT}),
        folder / "=1+1" / f"{CH1}.ipynb",  # and a name a spreadsheet would run
    )
    made.write(  # the judge's memory: an answer, and a callback's argument, of many MiB
        made.chapter_notebook(CH1, {"extreme-batch": made.HUGE_ANSWER}),
        folder / "bloat" / f"{CH1}.ipynb",
    )
    made.write(
        made.chapter_notebook(CH3, {"numerical-gradient": made.HUGE_CALLBACK_ARGUMENT}),
        folder / "callback" / f"{CH3}.ipynb",
    )
    made.write(  # the reference kept before the swap, under a name or as a copy of its code
        made.chapter_notebook(
            CH2,
            {
                "numpy-batch-stats": made.CALLING_A_KEPT_REFERENCE,
                "numpy-forward": made.CALLING_COPIED_CODE,
            },
            extra=(made.REFERENCE_KEPT_EARLY,),
        ),
        folder / "aliases" / f"{CH2}.ipynb",
    )
    made.write(  # PyTorch's own operator, below every Python name of the reference
        made.chapter_notebook(CH4, {"batchnorm-modes": made.ATEN_BATCH_NORM}),
        folder / "operators" / f"{CH4}.ipynb",
    )
    # issue 29, class paths: a folder, a dangling link, a FIFO, /dev/zero, the solutions
    (folder / "folder" / f"{CH2}.ipynb").mkdir(parents=True)
    (folder / "dangling").mkdir()
    (folder / "dangling" / f"{CH2}.ipynb").symlink_to(folder / "nowhere.ipynb")
    (folder / "fifo").mkdir()
    os.mkfifo(folder / "fifo" / f"{CH2}.ipynb")
    (folder / "zero").mkdir()
    (folder / "zero" / f"{CH2}.ipynb").symlink_to("/dev/zero")
    (folder / "solutions").mkdir()
    (folder / "solutions" / f"{CH1}.ipynb").symlink_to(ROOT / "notebooks" / f"{CH1}.ipynb")
    expected = {
        ("kernel", "standardize"): ("missing", "is not in the notebook"),
        ("kernel", "extreme-batch"): ("failed", "the bound"),
        ("kernel", "expected-std"): ("timed out", "did not finish within"),
        ("patching", "numpy-batch-stats"): ("failed", "Likely cause: unbiased variance"),
        ("patching", "numpy-forward"): ("failed", "is wrong"),
        ("channels", "state-sizes"): ("failed", "expected"),
        ("channels", "running-stats-update"): ("failed", "is wrong"),
        ("channels", "batchnorm-modes"): ("failed", "uses the reference"),
        ("references", "numpy-batch-stats"): ("failed", "uses the reference"),
        ("references", "numpy-forward"): ("failed", "uses the reference"),
        ("lingering", "standardize"): ("failed", "is wrong"),
        ("lingering", "extreme-batch"): ("failed", "is constant"),
        ("lingering", "expected-std"): ("failed", "your function raised ValueError"),
    }
    for learner, chapter in [  # the exercises an attack leaves alone keep their solution
        ("kernel", CH1),
        ("patching", CH2),
        ("channels", CH4),
        ("references", CH2),
        ("lingering", CH1),
        ("aliases", CH2),
    ]:
        for exercise in made.chapter_exercises(chapter):
            expected.setdefault((learner, exercise), ("passed", ""))
    for exercise in made.chapter_exercises(CH1):
        expected[("outside", exercise)] = ("not attempted", "not attempted yet")
        expected[("=1+1", exercise)] = ("passed", "")
        expected[("bloat", exercise)] = ("passed", "")
    for exercise in made.chapter_exercises(CH3):
        expected[("callback", exercise)] = ("passed", "")
    for exercise in made.chapter_exercises(CH4):
        expected[("operators", exercise)] = ("passed", "")
    expected[("operators", "batchnorm-modes")] = ("failed", "native_batch_norm")
    expected[("aliases", "numpy-batch-stats")] = ("failed", "numpy_bn.batch_stats")
    expected[("aliases", "numpy-forward")] = ("failed", "numpy_bn.forward_train")
    expected[("bloat", "extreme-batch")] = ("error", "MiB the grader accepts in one message")
    expected[("callback", "numerical-gradient")] = ("error", "passed to the checker's function")
    for learner, what in [
        ("folder", "is a folder"),
        ("dangling", "is a symbolic link"),
        ("fifo", "is a FIFO"),
        ("zero", "is a symbolic link"),
        ("solutions", "is a symbolic link"),
    ]:
        expected[(learner, "(notebook)")] = ("error", what)
    return expected


@NEEDS_SANDBOX
@pytest.mark.slow
def test_the_attack_corpus_is_rejected(tmp_path, monkeypatch):
    """Issue 29's attacks (and issue 15's), one learner each, graded in one class run: none
    passes, no right answer fails, no report is rewritten, no process survives, and the
    reports keep every learner's text inert."""
    monkeypatch.setenv("BNCOURSE_TEACHER_SECRET", "hunter2")
    report = tmp_path / "out" / "grades.json"
    report.parent.mkdir()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        expected = make_class(tmp_path / "class", report, server.getsockname()[1])
    before = package_digest()
    start = time.monotonic()
    results = grader.grade([str(tmp_path / "class")], timeout=TIMEOUT, jobs=2)
    elapsed = time.monotonic() - start
    assert all(r.isolated for r in results)
    grader.write_json(results, report)
    written = report.read_bytes()
    found = {(r.learner, r.exercise): r for r in results}
    assert set(found) == set(expected), sorted(set(found) ^ set(expected))
    wrong = {
        key: (found[key].status, found[key].message[:200])
        for key, (status, words) in expected.items()
        if found[key].status != status or words not in found[key].message
    }
    assert not wrong, wrong
    assert package_digest() == before, "the package changed"
    for _ in range(50):  # the sandbox's processes are ended with it (reaped within moments)
        if not processes_with(MARKER):
            break
        time.sleep(0.1)
    assert not processes_with(MARKER), "a process the notebook started survived"
    assert report.read_bytes() == written

    injected = found[("lingering", "expected-std")]
    assert injected.misconception == "a wrong answer the checker does not name"
    classroom.write_class_report(results, tmp_path / "class.md")
    markdown = (tmp_path / "class.md").read_text()
    assert "ben copied" not in markdown and "attacker.example" not in markdown  # not listed
    grader.write_markdown(results, tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert "\\# ben copied" in summary and "\\!\\[x\\]" in summary and "\\<img" in summary
    assert not any(line.startswith(("#", "!", "<")) for line in summary.splitlines()[1:])
    classroom.write_gradebook(results, tmp_path / "grades.csv")
    learners = [row[0] for row in csv.reader((tmp_path / "grades.csv").open())][1:]
    assert "'=1+1" in learners and not any(name.startswith("=") for name in learners)
    seconds = {}
    for result in results:
        seconds[result.learner] = seconds.get(result.learner, 0) + result.seconds
    print(f"\n{len(seconds)} attackers graded in {elapsed:.0f} s:", seconds)


@NEEDS_SANDBOX
@pytest.mark.slow
def test_the_sandbox_is_in_force(tmp_path, monkeypatch):
    """A cell tries to read another submission, write the package (or plant a .pyc in it),
    signal the grader, open a socket (to this machine and to the internet), read the
    teacher's environment, change the notebook itself and start more processes than the
    limit: each fails, and the notebook is still graded."""
    monkeypatch.setenv("BNCOURSE_TEACHER_SECRET", "hunter2")
    other = made.write(made.chapter_notebook(CH1), tmp_path / "ada" / f"{CH1}.ipynb")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        cell = made.probes(other, PACKAGE, os.getpid(), server.getsockname()[1])
        path = made.write(made.chapter_notebook(CH1, extra=(cell,)), tmp_path / "ben" / "nb.ipynb")
        before = package_digest()
        run = grader.run_notebook(path, timeout=TIMEOUT)
    assert package_digest() == before
    printed = made.printed(run.executed)
    lines = [line for line in printed.splitlines() if line.startswith(("blocked:", "OPEN:"))]
    assert len(lines) == 9 and all(line.startswith("blocked:") for line in lines), lines
    assert [r.status for r in run.results] == ALL_PASSED_CH1, run.results


def test_the_course_own_batchnorm_is_a_reference_of_every_exercise_that_writes_it():
    """A candidate of an exercise that writes BatchNorm may not call chapter 5's formulas or
    passes (eager or compiled) any more than numpy_bn's: the runner swaps each out while the
    candidate runs, and the judge fails the exercise when the runner says one was called."""
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


def test_class_reports_are_written_whole_after_the_run(tmp_path):
    """Reports are written by renaming a complete file: a reader never sees half of one."""
    results = [grader.Result("a.ipynb", "standardize", "passed", "ok", 1.0, "ada")]
    target = tmp_path / "grades.json"
    target.write_text("old")
    grader.write_json(results, target)
    assert json.loads(target.read_text())["tamper_proof"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["grades.json"]  # no temporary left


def test_the_judge_reads_no_more_than_it_accepts():
    """A message whose arrays are larger than the judge accepts is refused from its header,
    before any of it is read; a .npy header that claims more values than its blob holds is
    refused before anything is allocated (``np.load`` would allocate the claimed size)."""
    import io
    import struct

    import numpy as np

    from bncourse.grading import protocol

    read, write = os.pipe()
    try:
        header = json.dumps({"op": "reply", "blobs": [2**30]}).encode()
        os.write(write, struct.pack(">I", len(header)) + header + b"\0" * 1000)
        channel = protocol.Channel(read, write, protocol.LARGEST_ANSWER)
        with pytest.raises(protocol.TooLarge, match="MiB the grader accepts"):
            channel.receive(time.monotonic() + 5)
    finally:
        os.close(read)
        os.close(write)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(4), allow_pickle=False)
    honest = buffer.getvalue()
    assert np.array_equal(protocol._array(honest), np.zeros(4))
    forged = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**13,)}
    np.lib.format.write_array_header_1_0(forged, header)
    with pytest.raises(protocol.ProtocolError, match="claims"):
        protocol._array(forged.getvalue() + b"\0" * 32)


@NEEDS_SANDBOX
@pytest.mark.slow
def test_a_cell_cannot_fill_the_disk_or_memory(tmp_path, monkeypatch):
    """Every place the sandbox may write is a tmpfs of bounded size (here 16 MiB each; the
    root and /dev are read-only): a cell that writes 64 MiB into each is stopped at the cap,
    and its notebook, and the next learner's, are still graded."""
    for place in sandbox.DISK:
        monkeypatch.setitem(sandbox.DISK, place, 16 * 2**20)
    cell = made.fill_the_disk(64)
    filler = made.write(
        made.chapter_notebook(CH1, extra=(cell,)), tmp_path / "c" / "eve" / "n.ipynb"
    )
    run = grader.run_notebook(filler, timeout=TIMEOUT, learner="eve")
    printed = made.printed(run.executed)
    written = {
        line.split()[1].rstrip(":"): int(line.split()[2])
        for line in printed.splitlines()
        if line.startswith("wrote ")
    }
    assert len(written) == 7 and all(mib <= 16 for mib in written.values()), written
    assert written["/"] == written["/dev"] == 0, written
    assert [r.status for r in run.results] == ALL_PASSED_CH1, run.results
    after = made.write(made.chapter_notebook(CH1), tmp_path / "c" / "ada" / f"{CH1}.ipynb")
    assert [r.status for r in grader.run_notebook(after, timeout=TIMEOUT).results] == ALL_PASSED_CH1


@pytest.mark.slow
def test_the_runner_log_is_capped_where_it_is_written(tmp_path, monkeypatch):
    """A cell writes 8 MiB to its stderr and kills the runner: the grader keeps only the last
    ``LOG_LIMIT`` bytes of it (a pipe it drains, nothing on its disk), and the error row still
    quotes the last line."""
    from bncourse.grading import judge

    monkeypatch.setattr(sandbox, "LOG_LIMIT", 4096)
    held = []
    real_rmtree = judge.shutil.rmtree

    def measured(path, *args, **kwargs):  # what the run left in its private folder
        files = [p for p in Path(path).rglob("*") if p.is_file() and p.parent.name != "work"]
        held.append(sum(p.stat().st_size for p in files))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(judge.shutil, "rmtree", measured)
    logs = []
    real_end = sandbox.Sandbox.end

    def end(box):
        real_end(box)
        logs.append(len(getattr(box.log, "kept", b"")))

    monkeypatch.setattr(sandbox.Sandbox, "end", end)
    cell = (
        "import os, signal, time\nfor _ in range(8):\n    os.write(2, b'ab\\n' * 349526)\n"
        "os.write(2, b'the last words\\n')\ntime.sleep(1)\nos.kill(os.getppid(), signal.SIGKILL)"
    )
    path = made.write(made.chapter_notebook(CH1, extra=(cell,)), tmp_path / "n.ipynb")
    results = grader.grade_notebook(path, timeout=TIMEOUT)
    assert [r.status for r in results] == ["error"] * len(ALL_PASSED_CH1), results
    assert "(the last words)" in results[0].message, results[0].message
    assert held and max(held) < 2**20, held
    assert logs and max(logs) <= 4096, logs


@NEEDS_SANDBOX
def test_a_course_under_tmp_or_home_is_not_hidden_by_the_sandbox_tmpfs(tmp_path, monkeypatch):
    """A course (or its environment) under /tmp or /home is bound after the sandbox's own
    tmpfs on /tmp and /home, not under them: the runner can import it."""
    import shutil
    import subprocess
    import sys

    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip(f"pytest's temporary folder {tmp_path} is not under /tmp")
    course = tmp_path / "course"
    course.mkdir()
    (course / "here.py").write_text("")
    readable = sandbox._readable()
    monkeypatch.setattr(sandbox, "_readable", lambda: [*readable, course])
    work = tmp_path / "grade" / "work"
    work.mkdir(parents=True)
    probe = f"import os; assert os.path.exists({str(course / 'here.py')!r})"
    run = subprocess.run(
        [shutil.which("bwrap"), *sandbox._mounts(work), *sandbox._flags()]
        + ["--", sys.executable, "-c", probe],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]


KEY_SYSCALLS = {"x86_64": (250, 248), "aarch64": (219, 217)}  # keyctl, add_key
KEYRING_PROBE = """
import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
keyctl, add_key = %r[platform.machine()]
found = libc.syscall(keyctl, 10, -3, b"user", b"bncourse-teacher-key", 0)  # KEYCTL_SEARCH @s
print("teacher key:", "FOUND" if found > 0 else "absent")
libc.syscall(add_key, b"user", b"bncourse-planted", b"hello", 5, -3)
try:
    listed = "bncourse-teacher-key" in open("/proc/keys").read()
except OSError:
    listed = False
print("listed in /proc/keys:", listed)
""" % (KEY_SYSCALLS,)


@pytest.mark.slow
def test_the_sandbox_has_a_session_keyring_of_its_own(tmp_path):
    """Kernel keyrings have no namespace: a key in the grader's session keyring is not found
    from a cell (nor listed in /proc/keys), and a key a cell adds to its session keyring is
    not in the grader's."""
    import ctypes
    import platform

    if platform.machine() not in KEY_SYSCALLS:
        pytest.skip(f"no keyctl numbers for {platform.machine()} in this test")
    keyctl, add_key = KEY_SYSCALLS[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(keyctl, 1, None) < 0:  # KEYCTL_JOIN_SESSION_KEYRING: a keyring to test in
        pytest.skip(f"keyctl is not available here (errno {ctypes.get_errno()})")
    secret = b"s3cr3t"
    assert libc.syscall(add_key, b"user", b"bncourse-teacher-key", secret, len(secret), -3) > 0
    path = made.write(made.chapter_notebook(CH1, extra=(KEYRING_PROBE,)), tmp_path / "n.ipynb")
    run = grader.run_notebook(path, timeout=TIMEOUT)
    printed = made.printed(run.executed)
    assert "teacher key: absent" in printed and "listed in /proc/keys: False" in printed, printed
    assert libc.syscall(keyctl, 10, -3, b"user", b"bncourse-planted", 0) < 0, "a key was planted"
    assert [r.status for r in run.results] == ALL_PASSED_CH1, run.results


def test_a_huge_answer_makes_no_huge_report(tmp_path):
    """A checker's message quotes at most a few hundred characters of an answer (here four
    million values), and every row's message is cut at 2,000 characters: no report grows
    with what a learner returns."""
    from bncourse.exercises.base import CheckFailed, compare_number

    with pytest.raises(CheckFailed) as failure:
        compare_number("expected_std(3, 10)", [0] * 4_000_000, 1.0)
    assert len(str(failure.value)) < 500, len(str(failure.value))
    row = grader.Result("n.ipynb", "standardize", "failed", "x" * 10**6, misconception="y" * 10**6)
    assert len(row.message) < 2100 and row.message.endswith("(998000 more characters)")
    assert len(row.misconception) < 400
    grader.write_markdown([row], tmp_path / "s.md")
    grader.write_json([row], tmp_path / "g.json")
    assert (tmp_path / "s.md").stat().st_size < 10_000
    assert (tmp_path / "g.json").stat().st_size < 10_000


MEMORY_HOG = """
import subprocess, sys
hog = "import numpy as np; a = np.ones(2**28); print(a.sum())"  # 2 GiB, every page touched
print("child:", subprocess.run([sys.executable, "-c", hog], capture_output=True).returncode)
"""


@NEEDS_SANDBOX
@pytest.mark.slow
def test_the_sandbox_memory_is_bounded_in_all_where_the_grader_is_root(tmp_path, monkeypatch):
    """As root, the sandbox is a memory cgroup of at most ``MEMORY`` bytes (here 1.5 GiB):
    a child allocating 2 GiB is killed there, and the notebook is still graded."""
    groups = sandbox.process_group_limit()
    memory = [g for g in groups if any((g / f"memory.{n}").exists() for n in ("max", "stat"))]
    for group in groups:
        group.rmdir()
    if not memory:
        pytest.skip("no memory cgroup can be made here (not root, or no memory controller)")
    monkeypatch.setattr(sandbox, "MEMORY", 3 * 2**29)
    path = made.write(made.chapter_notebook(CH1, extra=(MEMORY_HOG,)), tmp_path / "n.ipynb")
    run = grader.run_notebook(path, timeout=TIMEOUT)
    printed = made.printed(run.executed)
    assert "child: -9" in printed, printed
    assert [r.status for r in run.results] == ALL_PASSED_CH1, run.results


def test_the_copy_of_a_learner_folder_counts_its_folders(tmp_path, monkeypatch):
    """Empty folders count against the copy's budget of files: a learner's folder of
    thousands of them is not recreated on the grader's disk (and again in the sandbox)."""
    from bncourse.grading import judge

    monkeypatch.setattr(judge, "COPIED_FILES", 10)
    for index in range(50):
        (tmp_path / "learner" / f"d{index}" / "inner").mkdir(parents=True)
    judge._copy_folder(tmp_path / "learner", tmp_path / "copy")
    assert sum(1 for _ in (tmp_path / "copy").rglob("*")) <= 10
