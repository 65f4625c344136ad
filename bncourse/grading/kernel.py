"""Executing a learner's notebook in a kernel, whatever its cells do.

:func:`execute` runs every code cell of a notebook (in place, on the worker's copy) in a
fresh ``python3`` kernel with a per-cell timeout, and returns ``{cell index: problem}`` for
the cells that did not finish. The rules:

* a cell that runs longer than ``timeout`` is interrupted (SIGINT, as Jupyter does) and the
  next cell runs;
* then the kernel is probed: if it does not answer within ``min(timeout, 5)`` seconds (the
  cell ignores SIGINT, or is stuck in C code), or a cell does not return at all, the kernel
  is killed and the notebook runs again in a new kernel without that cell -- about twice the
  timeout for such a cell;
* a cell that kills the kernel (``os._exit``, a crash) is skipped the same way, and so is
  one after which the kernel no longer takes messages (it wrote into the kernel's sockets);
* a cell tagged :data:`SKIP_TAG` is not run: the chapters tag their long demonstrations
  (training runs, benchmarks, compilations) that no exercise needs, so that grading a
  notebook takes seconds rather than minutes. The course checks that nothing an untagged
  cell reads is bound by a tagged one (tests/test_project.py); in a learner's notebook, a
  cell that reads such a name gets a ``NameError``, as in any notebook run out of order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import nbformat
import zmq
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from ..notebooks import KERNEL

__all__ = ["SKIP_TAG", "TIMEOUT_NAME", "execute", "skipped_cells"]

TIMEOUT_NAME = "CellTimeoutError"
SKIP_TAG = "grader-skip"
SKIPPED = "(not run by the grader: a long demonstration that no exercise needs)\n"
ALIVE = "bncourse-kernel-alive"
# How long sending a message to the kernel may take. A send waits while the kernel's socket
# has no connected peer, which is what a cell that wrote into the kernel's sockets leaves
# behind: without a limit that wait blocked the runner until the judge ended it (about
# 50 s), and every exercise of the notebook came back "timed out".
SEND_TIMEOUT_MS = 5000

_QUIET = logging.getLogger("bncourse.grading.kernel")  # timeouts are reported in the table
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _printed(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _ignore(seconds: float) -> None:
    pass


def skipped_cells(nb: nbformat.NotebookNode) -> set[int]:
    """The indices of ``nb``'s code cells tagged :data:`SKIP_TAG`, which are not run."""
    return {
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and SKIP_TAG in cell.get("metadata", {}).get("tags", [])
    }


async def _attempt(
    nb: nbformat.NotebookNode,
    cwd: Path,
    timeout: float,
    env: dict[str, str],
    skip: set[int],
    alive: Callable[[float], None],
) -> tuple[dict[int, str], tuple[int, str] | None]:
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL["name"],
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": TIMEOUT_NAME,
            "evalue": f"the cell did not finish within {timeout:g} s",
            "traceback": [],
        },
        iopub_timeout=2,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(cwd)}},
        log=_QUIET,
    )
    problems: dict[int, str] = {}
    probe_limit = min(timeout, 5.0)
    async with client.async_setup_kernel(env=env):
        for channel in (client.kc.shell_channel, client.kc.control_channel):
            channel.socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        loop = asyncio.get_running_loop()
        last = None
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or index in skip:
                continue
            alive(timeout + probe_limit + 20)
            started = loop.time()
            try:
                await asyncio.wait_for(client.async_execute_cell(cell, index), timeout + 15)
            except DeadKernelError:
                return problems, (index, "the kernel died while running this cell")
            except asyncio.TimeoutError:
                return problems, (index, f"timed out after {timeout:g} s and did not stop")
            except Exception:  # the kernel's connection broke: blame the cell that ran before
                why = "broke the kernel's connection (the kernel stopped answering after it)"
                return problems, (index if last is None else last, why)
            last = index
            if loop.time() - started < timeout:
                continue
            problems[index] = f"timed out after {timeout:g} s"
            probe = nbformat.v4.new_code_cell(f"print({ALIVE!r})")
            client.timeout = probe_limit
            try:
                await asyncio.wait_for(client.async_execute_cell(probe, index), probe_limit + 5)
                responsive = ALIVE in _printed(probe)
            except (DeadKernelError, asyncio.TimeoutError):
                responsive = False
            except zmq.Again:  # the kernel's sockets took no message: the cell broke them
                why = "broke the kernel's connection (the kernel stopped answering after it)"
                return problems, (index, why)
            client.timeout = timeout
            if not responsive:
                why = f"timed out after {timeout:g} s and could not be interrupted"
                return problems, (index, why)
    return problems, None


def execute(
    nb: nbformat.NotebookNode,
    cwd: Path,
    timeout: float,
    env: dict[str, str],
    alive: Callable[[float], None] = _ignore,
) -> dict[int, str]:
    """Execute ``nb``'s code cells in place (see the module docstring); the problems.

    ``alive(seconds)`` is called before each cell with the most it may take (the worker's
    heartbeat: the grader kills a worker that misses one)."""
    skipped: dict[int, str] = {}
    tagged = skipped_cells(nb)
    for _attempt_number in range(len(nb.cells) + 1):
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        alive(90)  # a new kernel starts
        problems, restart = asyncio.run(
            _attempt(nb, cwd, timeout, env, set(skipped) | tagged, alive)
        )
        if restart is None:
            break
        skipped[restart[0]] = restart[1]
    else:
        problems = {}
    for index in tagged:  # what the learner sees in the executed copy
        nb.cells[index].outputs = [nbformat.v4.new_output("stream", name="stdout", text=SKIPPED)]
    return {**skipped, **problems}
