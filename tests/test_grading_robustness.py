"""Issue 15's breaking inputs: every notebook gets a report, in bounded time, whatever it does.

A cell that ignores SIGINT, a function that writes to descriptor 1 without a newline, a
schema-invalid notebook among valid ones, control characters in a learner's message, a cell
that kills the grading process, children that outlive the kernel, and timeouts that are not
positive. Timeouts are short (a few seconds) to keep these tests fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import grading_notebooks as made
import pytest

from bncourse import grader

ROOT = Path(__file__).resolve().parents[1]
# The per-cell timeout of the tests that wait for one: long enough for any honest cell of
# the made chapter 1 (its imports, NumPy and the checkers, take 0.2 s on a quiet 2-core
# machine, and an ordinary cell far less), short enough to keep each test under a minute.
SHORT_TIMEOUT = 6
CHAPTER1 = "01_what_batchnorm_does"
N1 = len(made.chapter_exercises(CHAPTER1))  # chapter 1's exercises


def grade(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "bncourse", "grade", *args],
        cwd=ROOT,
        capture_output=True,  # a child holding stdout would block this (issue 15, input 13)
        text=True,
        timeout=600,
    )
    return run, time.monotonic() - start


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (waiting a moment for the kernel
    to reap the sandbox's)."""
    for _ in range(50):
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                    state = (entry / "stat").read_text().split(")")[-1].split()[0]
                    found += [int(entry.name)] if state not in ("Z", "X") else []
            except OSError:
                pass
        if not found:
            return found
        time.sleep(0.1)
    return found


@pytest.mark.slow
def test_a_cell_that_ignores_sigint_is_skipped_within_about_twice_the_timeout(tmp_path):
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.01)"
    )
    path = made.write(
        made.chapter_notebook(CHAPTER1, extra=(stubborn,)), tmp_path / f"{CHAPTER1}.ipynb"
    )
    start = time.monotonic()
    run = grader.run_notebook(path, timeout=SHORT_TIMEOUT)
    elapsed = time.monotonic() - start
    assert {r.status for r in run.results} == {"passed"}, run.results
    assert any("could not be interrupted" in note for note in run.notes), run.notes
    assert elapsed < 8 * SHORT_TIMEOUT, elapsed  # the timeout twice, a new kernel, the judge


@pytest.mark.slow
def test_every_notebook_gets_a_report_and_no_process_outlives_the_grading(tmp_path):
    """Inputs 10-13 in one command: fd-1 writes, an invalid notebook, control characters,
    a cell that kills its parent, a child that holds stdout; the others are still graded."""
    marker = "299.125"  # the child's sleep: how it is found among processes
    quiet_writer = made.solution("standardize").replace(
        '"""\n', '"""\n    import os\n    os.write(1, b"no newline here")\n', 1
    )
    shouting = 'def expected_std(n, c):\n    raise ValueError("bad\\x00\\x1b[31m\\x07 value\\x0c")'
    spawner = (
        "import subprocess\n"
        f"child = subprocess.Popen(['sleep', '{marker}'], start_new_session=True)"
    )
    folder = tmp_path / "subs"
    made.write(
        made.chapter_notebook(
            CHAPTER1,
            {"standardize": quiet_writer, "expected-std": shouting},
            extra=(spawner,),
        ),
        folder / f"{CHAPTER1}.ipynb",
    )
    invalid = made.chapter_notebook("02_numpy_forward")
    text = json.loads(json.dumps(invalid))
    text["cells"][1]["source"] = 42  # not the notebook schema
    (folder / "02_numpy_forward.ipynb").write_text(json.dumps(text))
    made.write(
        made.chapter_notebook(
            "09_beyond_one_device",
            extra=("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",),
        ),
        folder / "09_beyond_one_device.ipynb",
    )
    reports = ["--json", str(tmp_path / "g.json"), "--junit", str(tmp_path / "g.xml")]
    run, elapsed = grade(str(folder), "--timeout", "10", *reports)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stderr
    assert elapsed < 240, elapsed
    results = json.loads((tmp_path / "g.json").read_text())["results"]
    by = {(Path(r["notebook"]).stem[:2], r["exercise"]): r for r in results}
    assert by[("01", "standardize")]["status"] == "passed", by[("01", "standardize")]
    assert by[("01", "extreme-batch")]["status"] == "passed"
    assert by[("01", "expected-std")]["status"] == "failed"
    assert "\x1b" in by[("01", "expected-std")]["message"]
    assert by[("02", "(notebook)")]["status"] == "error"
    assert "is not a valid Jupyter notebook" in by[("02", "(notebook)")]["message"]
    killed = [r for r in results if r["notebook"].endswith("09_beyond_one_device.ipynb")]
    assert killed and all("was killed" in r["message"] for r in killed), killed
    suites = ET.parse(tmp_path / "g.xml").getroot()  # valid XML, the characters escaped
    assert "\\x1b" in ET.tostring(suites, encoding="unicode")
    assert not processes_with(marker), "a process the notebook started survived"


@pytest.mark.slow
def test_a_cell_that_writes_into_the_kernels_sockets_is_skipped_and_the_rest_graded(tmp_path):
    scribbler = (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'garbage')\n"
        "    except OSError:\n        pass"
    )
    path = made.write(
        made.chapter_notebook(CHAPTER1, extra=(scribbler,)), tmp_path / f"{CHAPTER1}.ipynb"
    )
    start = time.monotonic()
    run = grader.run_notebook(path, timeout=SHORT_TIMEOUT)
    elapsed = time.monotonic() - start
    assert [r.exercise for r in run.results] == made.chapter_exercises(CHAPTER1)
    # the kernel takes no message after it: the cell is skipped, in a new kernel, and the
    # notebook's own exercises are graded (the timeout, a new kernel, the judge)
    assert {r.status for r in run.results} == {"passed"}, run.results
    assert any("broke the kernel's connection" in note for note in run.notes), run.notes
    assert elapsed < 8 * SHORT_TIMEOUT, elapsed


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_the_timeout_must_be_a_positive_number(tmp_path, value):
    run, _ = grade(str(ROOT / "exercises"), "--timeout", value)
    assert run.returncode == 2 and "--timeout" in run.stderr and "Traceback" not in run.stderr


def test_without_a_sandbox_grading_is_a_self_check_that_says_so(tmp_path):
    """bwrap hidden from PATH (as on macOS, Windows, or a kernel without user namespaces): a
    learner still gets their results, marked not tamper-proof in every report; a class run,
    or --require-isolation, is refused unless the teacher passes --allow-unisolated."""
    import os

    hidden = tmp_path / "bin"
    hidden.mkdir()
    env = {**os.environ, "PATH": str(hidden)}
    notebook = made.write(made.chapter_notebook(CHAPTER1), tmp_path / "ada" / f"{CHAPTER1}.ipynb")

    def grade_without(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bncourse", "grade", "--timeout", "20", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )

    for refused in ([str(tmp_path)], ["--require-isolation", str(notebook)]):
        run = grade_without(*refused)
        assert run.returncode == 2 and "--allow-unisolated" in run.stderr, run.stderr
        assert "bubblewrap" in run.stderr and "Traceback" not in run.stderr
    out = {name: tmp_path / name for name in ("g.json", "g.xml", "g.csv", "c.md", "s.md")}
    run = grade_without(
        str(tmp_path),
        "--allow-unisolated",
        *("--json", str(out["g.json"]), "--junit", str(out["g.xml"])),
        *("--gradebook", str(out["g.csv"]), "--class-report", str(out["c.md"])),
        *("--markdown", str(out["s.md"])),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("NOT TAMPER-PROOF") and f"{N1}/{N1} exercises passed" in run.stdout
    data = json.loads(out["g.json"].read_text())
    assert data["tamper_proof"] is False and "bubblewrap" in data["warning"]
    assert not any(r["isolated"] for r in data["results"])
    suite = ET.parse(out["g.xml"]).getroot().find("testsuite")
    assert suite.find("properties/property[@name='tamper-proof']").get("value") == "false"
    for name in ("g.csv", "c.md", "s.md"):
        assert "NOT TAMPER-PROOF" in out[name].read_text(), name


FORGER = r'''
import json, os, struct

def forge(message):
    """Write a message into the judge's channel as if the runner had sent it."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"bncourse.grading.runner" in argv:
            write_fd = int(argv[argv.index(b"bncourse.grading.runner") + 5])
            header = json.dumps({**message, "blobs": []}).encode()
            try:  # (bwrap's own command line names the runner too)
                with open(f"/proc/{pid}/fd/{write_fd}", "wb", buffering=0) as channel:
                    channel.write(struct.pack(">I", len(header)) + header)
            except OSError:
                continue

forge({"op": "alive", "seconds": float("nan")})
forge({"op": "ran", "notes": 5})'''


@pytest.mark.slow
def test_forged_runner_messages_cost_only_their_own_notebook(tmp_path):
    """The sandbox can write anything into the judge's channel: a message of the wrong shape
    is that notebook's problem, and the classmate next to it is graded as usual."""
    for learner, extra in (("alice", (FORGER,)), ("bob", ())):
        (tmp_path / learner).mkdir()
        made.write(
            made.chapter_notebook(CHAPTER1, extra=extra), tmp_path / learner / f"{CHAPTER1}.ipynb"
        )
    results = grader.grade([str(tmp_path)], timeout=SHORT_TIMEOUT)
    by_learner = {}
    for result in results:
        by_learner.setdefault(result.learner, []).append(result.status)
    assert by_learner["bob"] == ["passed"] * N1, results
    assert by_learner["alice"], "the forger's notebook has rows of its own"


@pytest.mark.slow
def test_a_notebook_graded_alone_sees_no_file_next_to_it(tmp_path):
    """Grading one notebook copies that notebook into the sandbox, not its folder (which may be
    the teacher's home): a file beside it is not there to read."""
    (tmp_path / "teacher_secret.txt").write_text("token=hunter2\n")
    peeking = made.solution("standardize") + (
        "\nimport os\nif os.path.exists('teacher_secret.txt'):\n    standardize = None\n"
    )
    path = made.write(
        made.chapter_notebook(CHAPTER1, {"standardize": peeking}), tmp_path / f"{CHAPTER1}.ipynb"
    )
    results = grader.grade_notebook(path, timeout=SHORT_TIMEOUT)
    assert [r.status for r in results if r.exercise == "standardize"] == ["passed"], results


@pytest.mark.slow
def test_a_notebook_of_many_slow_cells_is_stopped_at_the_notebook_timeout(tmp_path):
    """Twenty cells that each sleep until interrupted would take 20 per-cell timeouts; the
    notebook's own limit (--notebook-timeout) ends it sooner, every exercise "timed out"."""
    slow = ("import time\ntime.sleep(60)",) * 20
    path = made.write(made.chapter_notebook(CHAPTER1, extra=slow), tmp_path / "n.ipynb")
    start = time.monotonic()
    results = grader.grade_notebook(path, timeout=3, notebook_timeout=6)
    assert time.monotonic() - start < 30
    assert [r.status for r in results] == ["timed out"] * N1, results
    assert "--notebook-timeout" in results[0].message, results[0].message
    run, _ = grade(str(path), "--notebook-timeout", "0")
    assert run.returncode == 2 and "--notebook-timeout" in run.stderr
