"""The judge: a fresh process that decides every exercise of one notebook.

The worker (:mod:`bncourse.grading.worker`) starts it only after the learner's kernel and
every process the notebook started have ended::

    python -I -c "<boot>" REQUEST.json

``-I`` ignores ``PYTHONPATH``, the user's site folder and the working directory (an empty
temporary folder); the boot code puts the verified ``bncourse`` first on ``sys.path``. The
process makes itself non-dumpable (no other process of the same user can attach a debugger
to it or read its memory), imports the course's registry, NumPy and PyTorch, and never runs
learner code itself: for each exercise it forks a child (own process group, stdin/stdout/
stderr on ``/dev/null``) that loads the learner's function from the bytes the kernel wrote
(cloudpickle), runs the exercise's checker on it under :class:`~bncourse.grading.sandbox.Guard`
and writes its verdict, as one JSON object, to a pipe only the parent reads. A child that
runs longer than the timeout is killed ("timed out"); one that ends without a verdict is an
"error". The request and the results are JSON files (never stdout):

* request: ``{"package": dir, "timeout": s, "results": file, "exercises": [{"id",
  "candidate": file or null, "problem": null or {"status", "message"}}]}``;
* results: ``{id: {"status", "message", "credit", "seconds"}}`` (``credit``: the fraction of
  the points a failed answer still earns, :class:`~bncourse.exercises.base.Parts`), written
  when every exercise is done.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BOOT", "command", "main"]

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from bncourse.grading.judge import main; sys.exit(main(sys.argv[2:]))"
)


def command(package_parent: Path, request: Path) -> list[str]:
    """The command line that starts the judge on ``request``."""
    return [sys.executable, "-I", "-c", BOOT, str(package_parent), str(request)]


def _not_dumpable() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):  # not Linux: the process stays as it is
        pass


def _verdict(entry: dict[str, Any]) -> dict[str, Any]:
    """In the child: load and check one candidate; the verdict as a dict."""
    import cloudpickle

    from ..checks import EXERCISES, judge
    from ..exercises.base import CheckFailed, NotAttempted
    from .references import references_for
    from .sandbox import Guard, Tampered

    ex = EXERCISES[entry["id"]]
    data = Path(entry["candidate"]).read_bytes()
    guard = Guard(references_for(ex.id))
    status, message, credit = "error", "", 0.0
    try:
        candidate = guard.load(lambda: cloudpickle.loads(data))
        guard.verify()
    except Tampered as tampered:
        return {"status": "failed", "message": str(tampered)}
    except BaseException as error:
        return {
            "status": "error",
            "message": f"{ex.function} could not be loaded into a fresh process to be graded "
            f"({type(error).__name__}: {error}); define it with def/class in the notebook",
        }
    if not guard.references_used:
        try:
            status, message = "passed", judge(ex, guard.wrap(candidate))
        except Tampered as tampered:
            status, message = "failed", str(tampered)
        except NotAttempted:
            status, message = "not attempted", "not attempted yet"
        except CheckFailed as failure:
            status, message, credit = "failed", str(failure), float(failure.credit)
        except BaseException as error:  # SystemExit, KeyboardInterrupt, ...
            status, message = "error", f"your function raised {type(error).__name__}: {error}"
    if guard.references_used:
        used = ", ".join(dict.fromkeys(guard.references_used))
        credit = 0.0
        status, message = (
            "failed",
            f"uses the reference: {ex.function} calls (or is) {used}, which this exercise asks "
            "you to write yourself",
        )
    try:
        guard.verify()
    except Tampered as tampered:
        status, message, credit = "failed", str(tampered), 0.0
    return {"status": status, "message": message, "credit": credit if status == "failed" else 0.0}


def _child(entry: dict[str, Any], write_fd: int) -> None:
    write = os.write  # bound now: the guard removes os.write while the candidate runs
    os.setpgid(0, 0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        verdict = _verdict(entry)
    except BaseException as error:
        verdict = {"status": "error", "message": f"the judge failed: {type(error).__name__}"}
    data = json.dumps(verdict).encode()
    while data:
        data = data[write(write_fd, data) :]


def _judge_one(entry: dict[str, Any], timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    if entry.get("problem"):
        return {**entry["problem"], "seconds": 0.0}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        try:
            _child(entry, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks, deadline, timed_out = [], start + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], left)
        if ready:
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_fd)
    if timed_out:
        for target in (
            lambda: os.killpg(pid, signal.SIGKILL),
            lambda: os.kill(pid, signal.SIGKILL),
        ):
            try:
                target()
            except OSError:
                pass
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - start, 3)
    if timed_out:
        return {
            "status": "timed out",
            "message": f"the check did not finish within {timeout:g} s: an infinite loop?",
            "seconds": seconds,
        }
    try:
        verdict = json.loads(b"".join(chunks))
        if not {"status", "message"} <= set(verdict) <= {"status", "message", "credit"}:
            raise ValueError(verdict)
        verdict["credit"] = min(max(float(verdict.get("credit", 0.0)), 0.0), 1.0)
    except (ValueError, TypeError, AttributeError):
        why = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.WEXITSTATUS(status)}"
        )
        verdict = {
            "status": "error",
            "message": f"the process judging your function ended without a verdict ({why})",
        }
    return {**verdict, "seconds": seconds}


def main(argv: list[str]) -> int:
    """Judge the exercises of one request (see the module docstring)."""
    request = json.loads(Path(argv[0]).read_text())
    _not_dumpable()
    import numpy  # noqa: F401  (imported once here, shared by every child)
    import torch

    from .. import checks  # noqa: F401  (the registry, every chapter's checkers)

    torch.set_num_threads(1)
    results = {}
    for entry in request["exercises"]:
        results[entry["id"]] = _judge_one(entry, float(request["timeout"]))
    target = Path(request["results"])
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(results))
    partial.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
