"""The operating-system sandbox every line of learner code runs in (bubblewrap).

:func:`start` starts :mod:`bncourse.grading.runner` (the untrusted side: it runs the
notebook and calls the learner's functions) under `bubblewrap <https://github.com/
containers/bubblewrap>`_ (``bwrap``, the sandbox Flatpak uses; Debian/Ubuntu package
``bubblewrap``), with:

* new PID, mount, IPC, UTS, cgroup, user and network namespaces (``--unshare-all``): the
  learner's processes see only each other, no network (a loopback of their own, which the
  kernel needs), and cannot signal or trace the grader;
* a file system made of read-only binds only: the system's ``/usr``, the Python installation
  and virtual environment, and the ``bncourse`` package; a private, empty ``/tmp``, home and
  ``/dev/shm``; a *copy* of the learner's folder made for this run (the notebook in it
  read-only). Everything writable is a tmpfs of bounded size (:data:`DISK`; the root and
  ``/dev`` are read-only): no cell can fill the grader's disk or memory. Nothing
  else is there: not other submissions, not the teacher's files or output paths, not ``/etc``;
  the functions the notebook defined are written to a tmpfs too and sent to the judge, which
  keeps them (as bytes) for a runner started again after a timeout, read-only;
* an environment with nothing of the teacher's shell (``--clearenv`` and :data:`ENVIRONMENT`),
  and a new, empty session keyring (kernel keyrings have no namespace: without it the
  sandbox could read and change the teacher's keys);
* ``--die-with-parent`` and ``--new-session``: ending the sandbox's first process ends every
  process in its PID namespace; it gets no controlling terminal;
* resource limits set before ``bwrap`` starts and inherited by everything in it
  (:data:`LIMITS`: address space, CPU seconds, open files, file size, core dumps), and at
  most :data:`PROCESSES` processes: ``RLIMIT_NPROC`` for an ordinary user, a ``pids``
  cgroup for root (whose processes that limit does not count), where one can be made; and,
  for root, a ``memory`` cgroup of at most :data:`MEMORY` bytes for the whole sandbox (an
  ordinary user cannot make one: then only ``RLIMIT_AS`` per process bounds its memory).

The grader talks to the runner over two pipes only (:mod:`bncourse.grading.protocol`), with
a size cap per message. The runner's stderr (the kernel's too) is a third pipe, which a
thread of the grader drains into a :class:`LogTail` that keeps only its last
:data:`LOG_LIMIT` bytes: nothing of it is written to the grader's disk, and however much a
cell writes there, the grader holds no more than that.

Where ``bwrap`` is missing or cannot make namespaces (macOS, Windows, a kernel without user
namespaces) :func:`isolation` says why, and :func:`start` runs the same runner as an ordinary
process (new session, same environment and limits): the grade is then a *self-check*, not
tamper-proof, and every report says so.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENVIRONMENT", "LIMITS", "Sandbox", "isolation", "start"]

PACKAGE = Path(__file__).resolve().parents[1]  # bncourse/
HOME = "/home/learner"
WORK = f"{HOME}/work"
CANDIDATES = "/grading"  # where the notebook's functions are kept between runner starts
FONT_CACHE = "/opt/bncourse-fonts"  # matplotlib's font list, read-only (see font_cache)
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": HOME,
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
    "JUPYTER_PLATFORM_DIRS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
GIB = 2**30
LIMITS = {  # name: (soft = hard) limit; CPU seconds are set per run
    "RLIMIT_AS": 8 * GIB,
    "RLIMIT_NOFILE": 4096,
    "RLIMIT_FSIZE": GIB,  # (torch.compile's precompiled header is over 100 MiB)
    "RLIMIT_CORE": 0,
}
PROCESSES = 1024  # threads count too: the kernel, torch and torch.compile's workers fit
MEMORY = 8 * GIB  # bytes the whole sandbox may hold (its tmpfs included), where a memory
# cgroup can be made (see process_group_limit)
MIB = 2**20
COPY = "/opt/bncourse-work"  # the copy of the learner's folder, read-only: the runner copies
# it into WORK before anything runs
DISK = {  # every place the sandbox may write, each a tmpfs of at most this many bytes (the
    # root, /dev and every bind are read-only): a cell cannot fill the grader's disk or memory
    "/tmp": GIB,  # torch.compile's caches and precompiled header
    "/home": 128 * MIB,
    WORK: 456 * MIB,  # the copy of the learner's folder (at most 200 MiB) and what cells write
    "/dev/shm": 256 * MIB,
    CANDIDATES: 64 * MIB,  # the pickled functions, sent to the judge after the run
}
LOG_LIMIT = 64 * 1024  # bytes of the runner's stderr kept


@functools.lru_cache(maxsize=None)
def isolation() -> str | None:
    """``None`` when the sandbox works here, else why not (a sentence)."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no bubblewrap: the learner's code runs unisolated"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return (
            "bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap, "
            "dnf install bubblewrap, ...) to grade in a sandbox"
        )
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="bncourse-trial-") as work:
            trial = subprocess.run(
                [bwrap, *_mounts(Path(work)), *_flags(), "--", sys.executable, "-c", "0"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not be started ({error})"
    if trial.returncode != 0:
        why = trial.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return f"bubblewrap cannot make a sandbox here ({why[0]}): are user namespaces off?"
    return None


def environment() -> dict[str, str]:
    """:data:`ENVIRONMENT`, with the CPU pins every run of the course uses
    (:func:`bncourse.reproducible.reproducible_env`): nothing of the teacher's shell."""
    from ..reproducible import reproducible_env

    return reproducible_env(dict(ENVIRONMENT))


def _flags() -> list[str]:
    flags = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    flags += ["--hostname", "sandbox", "--clearenv"]
    for key, value in environment().items():
        flags += ["--setenv", key, value]
    flags += ["--setenv", "PYTHONPATH", str(PACKAGE.parent), "--chdir", WORK]
    flags += ["--setenv", "BNCOURSE_FONT_CACHE", FONT_CACHE]
    flags += ["--setenv", "BNCOURSE_WORK_COPY", COPY]
    return flags


def _readable() -> list[Path]:
    """What the runner needs to read: Python, the environment, the package."""
    found = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).parent, PACKAGE]
    found += [Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    chosen: list[Path] = []
    for path in sorted({p.resolve() for p in found if p.exists()}, key=lambda p: len(p.parts)):
        if str(path).startswith("/usr/") or any(path.is_relative_to(c) for c in chosen):
            continue
        chosen.append(path)
    return chosen


def _tmpfs(path: str) -> list[str]:
    return ["--size", str(DISK[path]), "--tmpfs", path]


def _mounts(
    work: Path, candidates: Path | None = None, notebook: str = "", run: bool = False
) -> list[str]:
    """The sandbox's file system (see the module docstring); ``run``: the notebook runs, and
    its functions are written to a tmpfs at :data:`CANDIDATES` (else they are read from
    ``candidates``, read-only)."""
    mounts = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib64", "lib32", "sbin"):
        path = Path("/") / top
        if path.is_symlink():
            mounts += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            mounts += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "localtime", "alternatives", "fonts", "nsswitch.conf"):
        mounts += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]  # nothing secret
    mounts += ["--ro-bind-try", "/var/cache/fontconfig", "/var/cache/fontconfig"]
    mounts += ["--ro-bind-try", str(work.parent / "hosts"), "/etc/hosts"]
    fonts = font_cache()
    if fonts is not None:
        mounts += ["--ro-bind", str(fonts), FONT_CACHE]
    mounts += ["--proc", "/proc", "--dev", "/dev", *_tmpfs("/dev/shm")]
    for listing in ("/proc/keys", "/proc/key-users"):  # the host's keys, by description
        if Path(listing).exists():
            mounts += ["--ro-bind", "/dev/null", listing]
    mounts += [*_tmpfs("/tmp"), *_tmpfs("/home"), *_tmpfs(WORK)]
    # after the tmpfs, so that a course or environment under /home or /tmp is not hidden
    for path in _readable():
        mounts += ["--ro-bind", str(path), str(path)]
    mounts += ["--ro-bind-try", str(work), COPY]  # copied into WORK by the runner
    if notebook:  # the learner's notebook itself: read-only over the writable copy
        mounts += ["--ro-bind", str(work / notebook), f"{WORK}/{notebook}"]
    if candidates is not None:
        mounts += _tmpfs(CANDIDATES) if run else ["--ro-bind", str(candidates), CANDIDATES]
    return [*mounts, "--remount-ro", "/dev", "--remount-ro", "/"]  # (bwrap's own tmpfs)


def _new_group(parent: Path, limits: dict[str, int]) -> Path | None:
    """A new cgroup under ``parent`` with the first of ``limits`` (file: value) that it has
    written, or ``None``."""
    import secrets

    folder = parent / f"bncourse-{secrets.token_hex(8)}"
    try:
        folder.mkdir()
    except OSError:
        return None
    for name, value in limits.items():
        try:
            if (folder / name).exists():
                (folder / name).write_text(str(value))
                return folder
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass
    return None


def process_group_limit() -> list[Path]:
    """Where the grader runs as root, cgroups (v1 or v2) the sandbox's first process joins,
    so that everything in the sandbox is counted: one of the ``pids`` controller that holds
    at most :data:`PROCESSES` (the kernel does not count a root user's processes against
    ``RLIMIT_NPROC``), and one of the ``memory`` controller that holds at most :data:`MEMORY`
    bytes in all (``RLIMIT_AS`` bounds each process, not their sum, and the tmpfs count
    too). Empty where there are none to make (an ordinary user may not make cgroups: then
    only the per-process limits, the CPU time and the run's deadline bound the sandbox);
    :func:`Sandbox.end` removes them."""
    if os.geteuid() != 0:
        return []
    own: dict[str, str] = {}  # controller (v1), or "" (v2): the grader's own cgroup
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path.lstrip("/")
    except (OSError, ValueError):
        pass
    root = Path("/sys/fs/cgroup")
    unified = root / own.get("", "")
    groups: list[Path] = []
    wanted = {
        "pids": ({"pids.max": PROCESSES}, [root / "pids", root / "pids" / own.get("pids", "")]),
        "memory": (
            {"memory.max": MEMORY, "memory.limit_in_bytes": MEMORY},
            [root / "memory" / own.get("memory", ""), root / "memory"],
        ),
    }
    for limits, parents in wanted.values():
        for parent in [*parents, unified]:
            if parent.is_dir() and (folder := _new_group(parent, limits)) is not None:
                groups.append(folder)
                break
    return groups


@functools.lru_cache(maxsize=None)
def font_cache() -> Path | None:
    """Matplotlib's font list, built once per grading run in a folder of its own: the runner
    copies it into the sandbox's empty cache, so no notebook prints "Matplotlib is building
    the font cache" (or waits for it)."""
    import atexit
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="bncourse-fonts-"))
    atexit.register(shutil.rmtree, folder, True)
    try:
        subprocess.run(
            [sys.executable, "-c", "import matplotlib.font_manager"],
            env={**environment(), "MPLCONFIGDIR": str(folder), "HOME": str(folder)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return folder


KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 311, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1


@functools.lru_cache(maxsize=None)
def _keyctl() -> object | None:
    """libc's ``syscall`` and the ``keyctl`` system call's number here (loaded once, in the
    grader, never in a forked child), or ``None``."""
    import ctypes
    import platform

    number = KEYCTL.get(platform.machine())
    if number is None or not sys.platform.startswith("linux"):
        return None
    try:
        return functools.partial(ctypes.CDLL(None, use_errno=True).syscall, ctypes.c_long(number))
    except (OSError, AttributeError):
        return None


def _fresh_keyring() -> None:
    """In the child: join a new, empty, anonymous session keyring. Kernel keyrings belong to
    no namespace, so without this the sandbox would share the teacher's session keyring (a
    login's tokens, Kerberos caches, fscrypt keys) and could read, add or unlink its keys,
    and a class run's sandboxes could pass messages through it."""
    import ctypes

    syscall = _keyctl()
    if syscall is not None:  # (where keyctl is refused, e.g. by a container's seccomp
        # filter, the sandbox cannot reach any keyring either)
        syscall(ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None))


def _limits(cpu_seconds: int, groups: list[Path] = ()) -> None:
    """In the child, before ``bwrap`` (or the runner) starts: a keyring of its own
    (:func:`_fresh_keyring`) and the resource limits."""
    import resource

    _fresh_keyring()

    for group in groups:
        try:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            pass

    os.umask(0o077)
    for name, value in {**LIMITS, "RLIMIT_CPU": cpu_seconds}.items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    if os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):  # root is not counted
        try:
            current = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
            resource.setrlimit(resource.RLIMIT_NPROC, (current + PROCESSES,) * 2)
        except (ValueError, OSError):
            pass


class LogTail:
    """The runner's stderr: a thread reads the pipe to its end and keeps the last
    :data:`LOG_LIMIT` bytes (the runner never blocks on a full pipe; the grader never holds
    more, however much is written)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = bytearray()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True, name="sandbox-log")
        self.thread.start()

    def _drain(self) -> None:
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return
                self.kept += chunk
                if len(self.kept) > LOG_LIMIT:
                    del self.kept[: len(self.kept) - LOG_LIMIT]
        except (OSError, ValueError):
            return

    def close(self) -> None:
        """Stop reading (at the pipe's end, or after a moment when a process that escaped
        still holds it) and close the pipe."""
        self.thread.join(2.0)
        self.stopping.set()
        self.thread.join()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def text(self, limit: int = 2000) -> str:
        return bytes(self.kept[-limit:]).decode(errors="replace")


@dataclass
class Sandbox:
    """A started runner: its process, the two ends of its pipes, and whether it is isolated."""

    process: subprocess.Popen
    read_fd: int
    write_fd: int
    isolated: bool
    log: LogTail
    groups: list[Path] = field(default_factory=list)

    def end(self) -> None:
        """End the runner and everything it started (the sandbox's PID namespace goes with
        its first process; unisolated, its process group and every process of the token)."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.killpg(self.process.pid, 9)
        except OSError:
            pass
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()
        for group in self.groups:
            for _ in range(50):  # the namespace's processes are being reaped
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        if not self.isolated:
            from .processes import end_processes

            end_processes(self.process.args[-1])
        self.log.close()

    def log_tail(self) -> str:
        """The last lines the runner wrote to its stderr (at most 2000 characters)."""
        return self.log.text()


def start(
    work: Path,
    candidates: Path,
    mode: str,
    cpu_seconds: int,
    isolated: bool,
    notebook: str = "",
) -> Sandbox:
    """Start the runner (``mode``: ``run`` the notebook ``work/notebook`` then serve, or
    ``serve`` the functions kept in ``candidates``), in the sandbox when ``isolated``."""
    hosts = "127.0.0.1 localhost sandbox\n::1 localhost\n::ffff:127.0.0.1 localhost\n"
    (work.parent / "hosts").write_text(hosts)  # (no DNS in the sandbox: loopback by name)
    to_runner_r, to_runner_w = os.pipe()
    from_runner_r, from_runner_w = os.pipe()
    if isolated:
        inner_work, inner_candidates = WORK, CANDIDATES
    else:
        inner_work, inner_candidates = str(work), str(candidates)
    token = ""
    runner = [
        sys.executable,
        "-m",
        "bncourse.grading.runner",
        mode,
        inner_work,
        inner_candidates,
        str(to_runner_r),
        str(from_runner_w),
    ]
    if isolated:
        mounts = _mounts(work, candidates, notebook, run=mode == "run")
        command = [shutil.which("bwrap") or "bwrap", *mounts, *_flags()]
        command += ["--", *runner]
        env = {"PATH": os.environ.get("PATH", ENVIRONMENT["PATH"])}
        cwd = "/"
    else:
        from .processes import TOKEN_VARIABLE, new_token

        token = new_token()
        command = [*runner, token]
        env = {**environment(), "HOME": str(work.parent / "home"), "TMPDIR": str(work.parent)}
        env.update(MPLCONFIGDIR=str(work.parent / "mpl"), JUPYTER_RUNTIME_DIR=str(work.parent))
        env["PYTHONPATH"] = str(PACKAGE.parent)
        env[TOKEN_VARIABLE] = token
        env["BNCOURSE_FONT_CACHE"] = str(font_cache() or "")
        (work.parent / "home").mkdir(exist_ok=True)
        cwd = str(work)
    groups = process_group_limit()
    _keyctl()  # (loaded here: the child only calls it)
    log_r, log_w = os.pipe()
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_w,
            pass_fds=(to_runner_r, from_runner_w),
            preexec_fn=lambda: _limits(cpu_seconds, groups),
            start_new_session=True,
        )
    except BaseException:
        for fd in (to_runner_r, to_runner_w, from_runner_r, from_runner_w, log_r, log_w):
            os.close(fd)
        raise
    for fd in (to_runner_r, from_runner_w, log_w):
        os.close(fd)
    return Sandbox(process, from_runner_r, to_runner_w, isolated, LogTail(log_r), groups)
