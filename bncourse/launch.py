"""Start real ``torch.distributed`` process groups on this machine, and always clean up.

:func:`run_distributed` runs ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes
(``torch.multiprocessing``; see :func:`start_method`) that have joined one process group
on 127.0.0.1 through a free port picked at run time (gloo by default: CPU tensors; NCCL for
one GPU per process). It returns each rank's result, with tensors converted to NumPy arrays.

It never hangs and never leaves a process behind: if a rank raises, the others (probably
waiting in a collective for the failed one) are killed and the rank's traceback is raised in
the caller as :class:`DistributedError`; if the ranks do not all finish within ``timeout``
seconds, they are killed and ``TimeoutError`` is raised.

``fn`` must be importable by the new processes (defined at module level in a module, not in a
notebook or a ``__main__`` script), because they do not share the caller's memory: they start
from a process that has imported only PyTorch and this module.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_module
import socket
import sys
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["DistributedError", "free_port", "run_distributed", "shard", "start_method"]


class DistributedError(RuntimeError):
    """A rank raised; the message holds its traceback."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _to_numpy(value: Any) -> Any:
    """Tensors (also inside lists, tuples, dicts) as NumPy arrays: plain data for the queue."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, tuple) and hasattr(type(value), "_make"):  # a namedtuple
        return type(value)._make(_to_numpy(v) for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


def start_method() -> str:
    """How the ranks start: ``forkserver`` where the platform has it (Linux, macOS), else
    ``spawn`` (Windows). Both start each rank without the caller's memory (no CUDA context, no
    threads copied). With ``forkserver`` the ranks are forked from one server process that
    imports PyTorch once, when the first run starts, and stays until the caller exits; with
    ``spawn`` every rank imports PyTorch again, about a second and a half of CPU each. Each
    rank gets the caller's environment variables at the call, but what PyTorch reads only
    when it is imported (``PYTORCH_JIT``, say) is what the first run's caller had."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _worker(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    timeout: float,
    fn: Callable[..., Any],
    args: tuple,
    results: Any,
    environment: dict[str, str],
) -> None:
    try:
        os.environ.clear()  # the caller's environment now, not the server's when it started
        os.environ.update(environment)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo talks over loopback only
        torch.set_num_threads(1)  # ranks share the machine's cores
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))
        return
    try:
        result = _to_numpy(fn(rank, world_size, *args))
    except BaseException:  # report everything, including KeyboardInterrupt, before leaving
        results.put((rank, "error", traceback.format_exc()))
    else:
        # The queue pickles in a background thread, where a failure is only printed: pickle
        # here, so that the caller learns why no result came
        try:
            pickle.dumps(result)
        except Exception as error:
            results.put(
                (
                    rank,
                    "error",
                    f"rank {rank} returned a result that could not be sent to the caller (it "
                    f"must pickle): {type(error).__name__}: {error}",
                )
            )
        else:
            results.put((rank, "ok", result))
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


_PEER_FAILURE = ("Connection reset", "Connection closed", "Gloo", "gloo", "NCCL")


def _failure(first: tuple[int, str], results: Any, processes: list) -> DistributedError:
    """The error to raise: a rank that failed on its own (raised, or died without a word)
    before those that only lost their peer (a collective waiting for a dead rank fails with a
    connection error)."""
    errors = [first]
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace:
        try:
            rank, status, payload = results.get(timeout=0.1)
        except queue_module.Empty:
            continue
        if status == "error":
            errors.append((rank, payload))
    reported = {rank for rank, _ in errors}
    for rank, process in enumerate(processes):
        if rank not in reported and process.exitcode not in (None, 0):
            errors.append(
                (rank, f"rank {rank} exited with code {process.exitcode} without a result")
            )
    errors.sort(key=lambda e: any(word in e[1].strip().splitlines()[-1] for word in _PEER_FAILURE))
    rank, text = errors[0]
    others = "".join(
        f"\n(rank {r} failed too: {t.strip().splitlines()[-1]})" for r, t in errors[1:]
    )
    head = "" if text.startswith(f"rank {rank} ") else f"rank {rank} raised:\n"
    return DistributedError(f"{head}{text.rstrip()}{others}")


def _stop(processes: list) -> None:
    processes = [process for process in processes if process.pid is not None]  # the started ones
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def run_distributed(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout: float = 120.0,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` processes; return their results.

    Results are in rank order, with tensors turned into NumPy arrays. Raises
    :class:`DistributedError` (with the failing rank's traceback) as soon as any rank
    raises, and ``TimeoutError`` after ``timeout`` seconds; either way every process is gone.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"run_distributed starts fresh processes, which must import fn: {fn.__name__} is "
            "defined in a notebook (or an interactive session), where they cannot find it; "
            "define it at module level in a .py file and import it from there"
        )
    try:  # how fn and args reach the new processes
        pickle.dumps((fn, args))
    except Exception as error:
        raise TypeError(
            "run_distributed starts fresh processes, which must import fn: define it at module "
            "level in a module (not a lambda, a nested function, or a function defined in a "
            f"notebook); pickling it failed with {type(error).__name__}: {error}"
        ) from error
    context = mp.get_context(start_method())
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["torch", "torch.distributed", __name__])
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=_worker,
            args=(rank, world_size, port, backend, timeout, fn, args, results, dict(os.environ)),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    done: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.start()
        while len(done) < world_size:
            if time.monotonic() > deadline:
                missing = sorted(set(range(world_size)) - set(done))
                raise TimeoutError(
                    f"the distributed run did not finish within {timeout:g} s "
                    f"(ranks {missing} still running); all processes were stopped"
                )
            try:
                rank, status, payload = results.get(timeout=0.2)
            except queue_module.Empty:
                for rank, process in enumerate(processes):
                    # a rank that is gone without a result: killed, crashed, or an exit
                    # with status 0 (os._exit, a library's exit()) before it returned
                    if rank not in done and process.exitcode is not None:
                        # give a report that is already on its way a moment to arrive
                        try:
                            rank2, status, payload = results.get(timeout=1.0)
                        except queue_module.Empty:
                            raise _failure(
                                (
                                    rank,
                                    f"rank {rank} exited with code {process.exitcode} "
                                    "without a result",
                                ),
                                results,
                                processes,
                            ) from None
                        if status == "error":
                            raise _failure((rank2, payload), results, processes) from None
                        done[rank2] = payload
                continue
            if status == "error":
                raise _failure((rank, payload), results, processes)
            done[rank] = payload
        for process in processes:
            process.join(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        _stop(processes)
        results.close()
    return [done[rank] for rank in range(world_size)]


def shard(batch: np.ndarray | torch.Tensor, sizes: list[int], rank: int):
    """Rank ``rank``'s part of ``batch`` split along axis 0 into consecutive ``sizes``."""
    start = sum(sizes[:rank])
    return batch[start : start + sizes[rank]]
