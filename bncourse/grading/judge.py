"""The trusted judge: decides every exercise of one notebook without holding a learner object.

:func:`grade_submission` starts the sandbox (:mod:`bncourse.grading.sandbox`) on a private
copy of the notebook (with the rest of the learner's folder in a class run), lets the runner
(:mod:`bncourse.grading.runner`) execute the notebook there, and then runs each exercise's
checker *here*, in the grader's own process, on a :class:`Remote` candidate: calling it
sends the arguments to the sandbox as plain data (:mod:`bncourse.grading.protocol`) and
turns the plain answer back into NumPy arrays, tensors and numbers. What the learner wrote
never runs here and nothing here is unpickled, so no learner object can replace a checker's
code, patch NumPy, outlive a guard or fake a verdict. An argument the candidate may change
in place (an array, a tensor, a module) is updated from the sandbox's copy after each call;
a candidate that is a ``torch.autograd.Function`` is stood in for by a Function of the
judge's whose forward and backward are round trips (:func:`autograd_proxy`).

The verdict (status, message, credit, and the misconception: a field the checker sets, never
read out of a message) is made here only. A candidate that runs past the exercise's time
ends the sandbox ("timed out"); the remaining exercises are judged in a new sandbox that
loads the notebook's functions again, without running the notebook again.
"""

from __future__ import annotations

import builtins
import math
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sandbox
from .protocol import LARGEST_ANSWER, Channel, Closed, Late, ProtocolError, TooLarge, decode, encode

__all__ = ["Verdict", "Submission", "grade_submission", "Remote", "autograd_proxy"]

GRACE = 20.0  # seconds beyond a step's own limit (starting Python, importing torch)
START = 120.0  # seconds the runner may take to load the functions and import torch
CHECKING = threading.Lock()  # one checker at a time: they share NumPy's and torch's RNGs
SKIPPED_FOLDERS = {".git", ".venv", "venv", "__pycache__", "node_modules", "_build"}
SKIPPED_FOLDERS |= {".ipynb_checkpoints"}
LARGEST_COPIED = 50 * 2**20  # bytes: a larger data file is left out of the copy
COPIED_FILES, COPIED_BYTES = 2000, 200 * 2**20  # the most the copy of a folder holds
SUFFIXES = (".pkl", ".problem.json")  # the runner's files for one exercise
SMALLEST_CALLBACK_LIMIT = 2**20  # bytes of arrays a callback may always be given
RAISED = {
    name: getattr(builtins, name)
    for name in (
        "ArithmeticError",
        "AssertionError",
        "AttributeError",
        "FloatingPointError",
        "IndexError",
        "KeyError",
        "LookupError",
        "NameError",
        "NotImplementedError",
        "OverflowError",
        "RuntimeError",
        "TypeError",
        "ValueError",
        "ZeroDivisionError",
        "RecursionError",
    )
}


class SandboxStopped(BaseException):
    """The sandbox missed a deadline or broke the conversation: a ``BaseException``, so that
    no checker's ``except Exception`` mistakes it for a wrong answer."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReferenceCalled(BaseException):
    """The candidate called the course's reference (the runner says which)."""


class LearnerError(Exception):
    """An exception the learner's function raised, of a type the judge does not know."""


MESSAGE_LIMIT = 2000  # characters of a message kept in a verdict, and so in every report


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text``, cut at ``limit`` characters with how many more there were: a checker's
    message may quote a learner's answer, and no answer may make a report megabytes long."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


@dataclass
class Verdict:
    status: str  # passed | failed | not attempted | error | timed out
    message: str
    credit: float = 0.0
    misconception: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.message = bounded(self.message)
        self.misconception = bounded(self.misconception, 300)


@dataclass
class Submission:
    """One notebook to grade: its bytes (read once, before anything ran) and where it was."""

    name: str
    data: bytes
    folder: Path | None
    filename: str
    exercises: dict[str, str]  # exercise id -> function name, those present in the notebook
    timeout: float
    deadline: float  # seconds grading the notebook may take in all (its run and its checks)
    isolated: bool
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Talking to the runner
# --------------------------------------------------------------------------------------------
class Connection:
    """The judge's end of one runner: requests, replies and callbacks under a deadline."""

    def __init__(self, box: sandbox.Sandbox) -> None:
        self.box = box
        self.channel = Channel(box.read_fd, box.write_fd, LARGEST_ANSWER)
        self.deadline: float | None = None
        self.callbacks: list[Any] = []

    def receive(self, limit: float | None) -> tuple[dict[str, Any], list[bytes]]:
        deadline = None if limit is None else time.monotonic() + limit
        if self.deadline is not None:
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        try:
            return self.channel.receive(deadline)
        except Late:
            raise SandboxStopped("timed out", "no answer in time") from None
        except TooLarge as error:
            raise SandboxStopped("too large", f"{error}") from None
        except ProtocolError as error:
            raise SandboxStopped("error", f"{error}") from None

    def _send(self, message: dict[str, Any], blobs: list[bytes]) -> None:
        deadline = self.deadline or time.monotonic() + START
        try:
            self.channel.send(message, blobs, deadline)
        except Late:
            raise SandboxStopped("timed out", "the sandbox stopped reading") from None
        except Closed as error:
            raise SandboxStopped("error", str(error)) from None

    def request(self, message: dict[str, Any], blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        # the checker's functions get arrays no larger than those the checker sent: a
        # callback cannot make the judge compute on (and allocate for) arrays it chose
        limit = max(sum(map(len, blobs)), SMALLEST_CALLBACK_LIMIT)
        self._send(message, blobs)
        while True:
            reply, blobs = self.receive(None)
            if reply.get("op") == "reply":
                return reply, blobs
            if reply.get("op") != "callback":
                raise SandboxStopped("error", f"an unexpected message {reply.get('op')!r}")
            if sum(map(len, blobs)) > limit:
                raise SandboxStopped(
                    "too large",
                    f"arrays of {sum(map(len, blobs)) / 2**20:.1f} MiB passed to the checker's "
                    f"function, more than the {limit / 2**20:.1f} MiB it was given to work on",
                )
            key = reply.get("id")
            out: list[bytes] = []
            try:
                if type(key) is not int or not 0 <= key < len(self.callbacks):
                    raise ValueError("no such function")
                args = decode(reply.get("args"), blobs, trusted=True)
                if type(args) is not tuple:
                    raise ValueError("arguments that are not a tuple")
                value = encode(self.callbacks[key](*args), out)
                answer = {"op": "callback_result", "ok": True, "value": value}
            except (SandboxStopped, ReferenceCalled):
                raise
            except Exception as error:
                out = []
                answer = {"op": "callback_result", "ok": False, "error": str(error)[:500]}
            self._send(answer, out)

    def callback(self, function: Any) -> int:
        self.callbacks.append(function)
        return len(self.callbacks) - 1


def _raised(reply: dict[str, Any]) -> BaseException:
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    name, text = str(error.get("type", "Exception")), str(error.get("message", ""))[:2000]
    if name in RAISED:
        return RAISED[name](text)
    safe = name if name.isidentifier() else "Exception"
    return type(safe, (LearnerError,), {})(text)


class Remote:
    """A learner's object that stays in the sandbox: calling it, or reading an attribute,
    is a round trip in plain data (see the module docstring)."""

    def __init__(
        self, connection: Connection, exercise: str, target: int | None, name: str
    ) -> None:
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_exercise", exercise)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "__name__", name)

    def _ask(self, message: dict[str, Any], blobs: list[bytes], args: tuple = ()) -> Any:
        connection: Connection = self._connection
        message = {**message, "exercise": self._exercise, "target": self._target}
        reply, blobs = connection.request(message, blobs)
        if reply.get("references"):
            used = ", ".join(str(r) for r in reply["references"][:3])
            raise ReferenceCalled(used)
        if not reply.get("ok"):
            raise _raised(reply)

        def handle(tree: dict[str, Any]) -> Remote:
            kind = str(tree.get("type", "object"))[:100]
            return Remote(connection, self._exercise, tree["id"], kind)

        def arg(index: int) -> Any:
            if not 0 <= index < len(args):
                raise ProtocolError("a reference to an argument that was not passed")
            return args[index]

        try:
            value = decode(reply.get("value"), blobs, trusted=True, handle=handle, arg=arg)
            for index, state in reply.get("mutated") or []:
                if type(index) is int and 0 <= index < len(args):
                    _update(args[index], state, blobs)
        except (ProtocolError, TypeError, ValueError, RecursionError) as error:
            raise SandboxStopped("error", f"an answer that is not plain data ({error})") from None
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        blobs: list[bytes] = []
        connection: Connection = self._connection
        encoded_args = encode(args, blobs, callback=connection.callback, pickle_object=True)
        encoded_kwargs = encode(kwargs, blobs, callback=connection.callback, pickle_object=True)
        return self._ask(
            {"op": "call", "args": encoded_args, "kwargs": encoded_kwargs}, blobs, args
        )

    def _value(self) -> Any:
        """The learner's value itself (a prediction exercise's), as plain data."""
        return self._ask({"op": "value"}, [])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask({"op": "getattr", "name": name}, [])

    def __repr__(self) -> str:
        return f"<the learner's {self.__name__}, in the sandbox>"


def _update(original: Any, state: Any, blobs: list[bytes]) -> None:
    """Copy what the sandbox's copy of an argument became into the judge's own."""
    import numpy as np
    import torch

    if isinstance(state, dict) and state.get("$module") is True:
        if not isinstance(original, torch.nn.Module):
            return
        modules = dict(original.named_modules())
        for name, training in (state.get("training") or {}).items():
            if name in modules and type(training) is bool:
                modules[name].training = training
        parameters = dict(original.named_parameters())
        for name, flag in (state.get("requires_grad") or {}).items():
            if name in parameters and type(flag) is bool:
                parameters[name].requires_grad_(flag)
        own = {**dict(original.named_parameters()), **dict(original.named_buffers())}
        with torch.no_grad():
            for key, tree in (state.get("state") or {}).items():
                value = decode(tree, blobs, trusted=True)
                if key in own and isinstance(value, torch.Tensor):
                    if own[key].shape == value.shape:
                        own[key].copy_(value.to(own[key].dtype))
        return
    value = decode(state, blobs, trusted=True)
    if isinstance(original, np.ndarray) and isinstance(value, np.ndarray):
        if original.shape == value.shape and original.flags.writeable:
            original[...] = value.astype(original.dtype, copy=False)
    elif isinstance(original, torch.Tensor) and isinstance(value, torch.Tensor):
        if original.shape == value.shape:
            with torch.no_grad():
                original.copy_(value.to(original.dtype))


def autograd_proxy(remote: Remote, name: str) -> type:
    """A ``torch.autograd.Function`` of the judge's named ``name`` that stands in for the
    learner's: ``apply`` runs the learner's Function in the sandbox on tensors that require
    gradients, and the output's backward asks the sandbox for ``torch.autograd.grad`` of it.
    The output's ``grad_fn`` is named after the sandbox's node (``<name>Backward`` for one
    node of the learner's Function, the operation's node otherwise)."""
    import torch

    def apply(*args: Any) -> Any:
        blobs: list[bytes] = []
        reply, out = remote._connection.request(
            {
                "op": "apply",
                "exercise": remote._exercise,
                "target": None,
                "args": encode(args, blobs),
            },
            blobs,
        )
        if reply.get("references"):
            raise ReferenceCalled(", ".join(str(r) for r in reply["references"][:3]))
        if not reply.get("ok"):
            raise _raised(reply)
        try:
            value = decode(reply.get("value"), out, trusted=True)
        except ProtocolError as error:
            raise SandboxStopped("error", f"an answer that is not plain data ({error})") from None
        node, session = reply.get("node"), reply.get("session")
        if not isinstance(value, torch.Tensor) or not isinstance(node, str):
            return value
        wanted = [isinstance(a, torch.Tensor) and a.requires_grad for a in args]

        def forward(ctx: Any, *inner: Any) -> Any:
            return value.detach().clone()

        def backward(ctx: Any, grad: Any) -> Any:
            blobs: list[bytes] = []
            message = {"op": "grad", "session": session, "grad": encode(grad, blobs)}
            grads = remote._ask(message, blobs)
            if not isinstance(grads, tuple):
                raise RuntimeError("the sandbox gave no gradients")
            found, it = [], iter(grads)
            for needed in wanted:
                found.append(next(it, None) if needed else None)
            return tuple(found)

        node_name = node[: -len("Backward")] if node.endswith("Backward") else node + "_"
        function = type(
            node_name,
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(backward)},
        )
        return function.apply(*args)

    return type(name, (torch.autograd.Function,), {"apply": staticmethod(apply)})


# --------------------------------------------------------------------------------------------
# One notebook
# --------------------------------------------------------------------------------------------
def _copy_folder(source: Path | None, target: Path, budget: list[int] | None = None) -> None:
    """Regular files of the learner's folder (not links, devices or FIFOs, by lstat), up to
    :data:`COPIED_FILES` files and folders and :data:`COPIED_BYTES` bytes in all."""
    budget = [COPIED_FILES, COPIED_BYTES] if budget is None else budget
    target.mkdir(parents=True, exist_ok=True)
    if source is None:
        return
    try:
        entries = list(source.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.lstat()
        except OSError:
            continue
        if budget[0] <= 0:
            return
        if stat.S_ISDIR(info.st_mode) and entry.name not in SKIPPED_FOLDERS:
            if len(target.parts) < 40:
                budget[0] -= 1  # a folder counts as a file: thousands of empty ones are no copy
                _copy_folder(entry, target / entry.name, budget)
        elif stat.S_ISREG(info.st_mode) and info.st_size <= min(LARGEST_COPIED, budget[1]):
            if entry.suffix == ".ipynb":
                continue  # the notebooks: only the one graded, from the bytes read before
            budget[0] -= 1
            budget[1] -= info.st_size
            try:
                shutil.copyfile(entry, target / entry.name, follow_symlinks=False)
            except OSError:
                pass


class Notebook:
    """A sandbox for one notebook, started again (serving only) after a timeout."""

    def __init__(self, submission: Submission, private: Path) -> None:
        self.submission = submission
        self.ends = time.monotonic() + submission.deadline  # then every row is "timed out"
        self.private = private
        self.work = private / "work"
        self.candidates = private / "candidates"
        self.candidates.mkdir(mode=0o700)
        _copy_folder(submission.folder, self.work)
        (self.work / submission.filename).write_bytes(submission.data)
        self.connection: Connection | None = None
        self.described: dict[str, Any] = {}
        self.starts = 0
        self.log = ""  # the end of the last ended runner's stderr

    def _start(self, mode: str) -> Connection:
        self.starts += 1
        box = sandbox.start(
            self.work,
            self.candidates,
            mode,
            int(self.submission.deadline + START),
            self.submission.isolated,
            self.submission.filename,
        )
        connection = Connection(box)
        request = {
            "filename": self.submission.filename,
            "exercises": self.submission.exercises,
            "timeout": self.submission.timeout,
        }
        try:
            connection.channel.send(request, deadline=time.monotonic() + START)
        except (Closed, Late):
            pass
        return connection

    def run(self) -> tuple[list[str], str, tuple[str, str] | None]:
        """Run the notebook: (notes, the executed notebook's JSON, None or the (status,
        message) of every exercise when the run did not finish)."""
        connection = self.connection = self._start("run")
        step = START
        while True:
            left = self.ends - time.monotonic()
            if left <= 0:
                return [], "", self._stopped("over time")
            try:
                message, blobs = connection.receive(min(step + GRACE, left))
            except SandboxStopped as stopped:
                status = stopped.status
                if status == "timed out" and time.monotonic() >= self.ends:
                    status = "over time"
                return [], "", self._stopped(status, str(stopped))
            if message.get("op") == "alive":  # (the sandbox can forge any message: check all)
                step = _finite(message.get("seconds"), START)
                step = min(max(step, 1.0), self.submission.deadline)
                continue
            if message.get("op") == "ran":
                self._keep(message.get("kept"), blobs)
                notes = message.get("notes")
                notes = [str(n)[:300] for n in notes][:50] if isinstance(notes, list) else []
                executed = message.get("executed")
                return notes, executed if isinstance(executed, str) else "", None
            return [], "", self._stopped("error")

    def _keep(self, kept: Any, blobs: list[bytes]) -> None:
        """Write the functions the runner sent (bytes, never read here) where a runner
        started again reads them: only the names this notebook's exercises give."""
        if not isinstance(kept, dict):
            return
        names = {f"{i}{suffix}" for i in self.submission.exercises for suffix in SUFFIXES}
        for name, index in kept.items():
            if name in names and type(index) is int and 0 <= index < len(blobs):
                (self.candidates / name).write_bytes(blobs[index])

    def _stopped(self, status: str, why: str = "") -> tuple[str, str]:
        code = self.end()
        if status == "too large":
            return "error", f"refused: {why}"
        if status == "over time":
            return "timed out", self.over_time()
        if status == "timed out":
            return status, (
                "grading this notebook stopped making progress (a cell that neither finished "
                "nor could be interrupted, or one that broke the kernel) and was ended"
            )
        return "error", (
            f"the process running this notebook was killed or ended while it ran (exit status "
            f"{code}): does a cell kill its parent process or its process group? " + _tail(self.log)
        ).strip()

    def over_time(self) -> str:
        return (
            f"grading this notebook reached its time limit ({self.submission.deadline:g} s in "
            "all: the grader's --notebook-timeout) and was ended; this exercise was not "
            "checked to the end"
        )

    def ready(self) -> dict[str, Any] | None:
        """Wait for the runner to load the functions (starting a serving one if needed)."""
        if self.connection is None:
            self.connection = self._start("serve")
        try:
            message, _ = self.connection.receive(min(START + GRACE, self.ends - time.monotonic()))
        except SandboxStopped:
            self.end()
            return None
        described = message.get("candidates")
        if message.get("op") != "ready" or not isinstance(described, dict):
            self.end()
            return None
        self.described = described
        return described

    def end(self) -> int | None:
        if self.connection is None:
            return None
        box, self.connection = self.connection.box, None
        box.end()
        self.log = box.log_tail()
        return box.process.returncode


def _decide(exercise_id: str, candidate: Any) -> Verdict:
    """Run the checker on ``candidate`` (a :class:`Remote`, or the judge's stand-in): the
    verdict, decided here."""
    from ..checks import EXERCISES, judge
    from ..exercises.base import CheckFailed, NotAttempted

    ex = EXERCISES[exercise_id]
    try:
        return Verdict("passed", judge(ex, candidate))
    except NotAttempted:
        return Verdict("not attempted", "not attempted yet")
    except CheckFailed as failure:
        cause = failure.cause or "a wrong answer the checker does not name"
        return Verdict("failed", str(failure), float(failure.credit), cause)
    except ReferenceCalled as used:
        return _reference(ex, str(used))
    except (SandboxStopped, KeyboardInterrupt):
        raise
    except BaseException as error:  # an error of the checker itself
        return Verdict("error", f"the checker failed ({type(error).__name__}: {error})")


def _reference(ex: Any, used: str) -> Verdict:
    return Verdict(
        "failed",
        f"uses the reference: {ex.function} calls (or is) {used}, which this exercise asks "
        "you to write yourself",
        0.0,
        "used the course's reference instead of writing it",
    )


def _judge_one(notebook: Notebook, exercise_id: str, timeout: float) -> Verdict:
    from ..checks import EXERCISES

    entry = notebook.described.get(exercise_id)
    if not isinstance(entry, dict):
        return Verdict("error", "the sandbox did not describe this exercise's function")
    name = str(entry.get("name") or EXERCISES[exercise_id].function)[:200]
    if entry.get("problem"):
        return Verdict("error", str(entry["problem"])[:2000])
    if entry.get("reference"):
        return _reference(EXERCISES[exercise_id], str(entry["reference"])[:200])
    connection = notebook.connection
    assert connection is not None
    candidate: Any = Remote(connection, exercise_id, None, name)
    prediction = EXERCISES[exercise_id].prediction
    if prediction:
        pass  # the value itself is read below, within the time limit
    elif entry.get("kind") == "autograd_function":
        candidate = autograd_proxy(candidate, name)
    elif entry.get("kind") not in ("function", "class"):
        return Verdict("failed", f"{name} is not a function (got a value)")
    with CHECKING:  # (the time limit starts when this check does)
        connection.deadline = min(time.monotonic() + timeout, notebook.ends)
        try:
            if prediction:
                candidate = candidate._value()
            return _decide(exercise_id, candidate)
        finally:
            connection.deadline = None


def _finite(value: Any, default: float) -> float:
    """``value`` as a finite float, or ``default`` (a bool, a string, NaN, 10**400, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        number = float(value)
    except OverflowError:
        return default
    return number if math.isfinite(number) else default


def grade_submission(submission: Submission) -> tuple[dict[str, Verdict], list[str], str]:
    """Run and judge one notebook: ({exercise id: verdict}, notes, executed notebook JSON)."""
    private = Path(tempfile.mkdtemp(prefix="bncourse-grade-"))
    verdicts: dict[str, Verdict] = {}
    try:
        notebook = Notebook(submission, private)
        notes, executed, failure = notebook.run()
        if failure is not None:
            for exercise_id in submission.exercises:
                verdicts[exercise_id] = Verdict(*failure)
            return verdicts, notes, executed
        for exercise_id in submission.exercises:
            start = time.monotonic()
            if start >= notebook.ends:
                verdicts[exercise_id] = Verdict("timed out", notebook.over_time())
                continue
            if notebook.connection is None or not notebook.described:
                if notebook.ready() is None:
                    verdicts[exercise_id] = Verdict(
                        "error",
                        "the sandbox could not load this notebook's functions "
                        + _tail(notebook.log),
                    )
                    continue
            try:
                verdict = _judge_one(notebook, exercise_id, submission.timeout)
            except SandboxStopped as stopped:
                notebook.end()
                notebook.described = {}
                if stopped.status == "timed out" and time.monotonic() >= notebook.ends:
                    verdict = Verdict("timed out", notebook.over_time())
                elif stopped.status == "timed out":
                    verdict = Verdict(
                        "timed out",
                        f"the check did not finish within {submission.timeout:g} s: an "
                        "infinite loop?",
                    )
                elif stopped.status == "too large":
                    verdict = Verdict(
                        "error",
                        f"refused: {stopped}; an answer (or an argument of the checker's "
                        "function) should have the shape the exercise asks for",
                    )
                else:
                    verdict = Verdict(
                        "error",
                        f"the process running your function ended without an answer ({stopped})",
                    )
            verdict.seconds = round(time.monotonic() - start, 3)
            verdicts[exercise_id] = verdict
        return verdicts, notes, executed
    finally:
        if "notebook" in locals():
            if notebook.connection is not None:
                try:
                    notebook.connection.channel.send({"op": "end"}, deadline=time.monotonic() + 1)
                except (Closed, Late):
                    pass
            notebook.end()
        shutil.rmtree(private, ignore_errors=True)


def _tail(log: str) -> str:
    """The last line of a runner's stderr (:meth:`sandbox.Sandbox.log_tail`), in brackets."""
    lines = log.strip().splitlines()
    return f"({lines[-1][:300]})" if lines else ""
