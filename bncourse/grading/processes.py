"""Ending every process an *unisolated* run started, wherever it went (in the sandbox, the
end of its PID namespace does this).

The runner of an unisolated run, its kernel and everything the kernel starts inherit one environment
variable, ``BNCOURSE_GRADING_TOKEN``, set to a random value per notebook. A cell's child may
start a new session, double-fork or outlive its parent; it still carries the token, so
:func:`end_processes` finds it by reading ``/proc/<pid>/environ`` and kills it. Where there
is no ``/proc`` (macOS, Windows), the grader ends the worker's process group instead, which
the kernel's children share unless they leave it.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

__all__ = ["TOKEN_VARIABLE", "new_token", "processes_with", "end_processes"]

TOKEN_VARIABLE = "BNCOURSE_GRADING_TOKEN"


def new_token() -> str:
    return secrets.token_hex(16)


def processes_with(token: str) -> list[int]:
    """Process ids (other than this one) whose environment holds ``token``."""
    marker = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def end_processes(token: str, group: int | None = None) -> int:
    """Kill every process carrying ``token`` (and the process group ``group``); how many."""
    killed = 0
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    for _round in range(10):  # processes may fork while we look
        pids = processes_with(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.05)
    return killed
