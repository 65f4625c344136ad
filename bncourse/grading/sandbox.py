"""What a candidate may not do while the judge runs it: the guard around every call.

The judge (:mod:`bncourse.grading.judge`) runs the learner's function in a process of its
own, forked from a server that has never run learner code, one process per exercise. In that
process :class:`Guard` surrounds everything the learner wrote -- unpickling the function
(which can run code) and every call of it:

* **References taken away.** The exercise's references (:mod:`bncourse.grading.references`:
  ``bncourse.numpy_bn``, ``F.batch_norm``, ``nn.BatchNorm*``'s forward, ...) are swapped for
  stubs that raise :class:`ReferenceUsed` while the candidate runs, and swapped back for the
  checker, which computes its expected values with them. A candidate that *is* a reference
  (``from bncourse.numpy_bn import batch_stats``) is refused before it runs.
* **No side channels.** An audit hook (:func:`sys.addaudithook`, which cannot be removed)
  refuses, while the candidate runs, what could reach the judge's own state or the outside:
  threads, processes, signals, sockets, ``ctypes``, files opened for writing or by
  descriptor, ``gc``'s object walks, frames (``sys._getframe``, a traceback's ``tb_frame``)
  and assignments to class attributes; the functions of ``os`` that end or fork the process
  or write to a descriptor are removed for that time (``os.write`` is kept for stdout and
  stderr, which go to ``/dev/null``). The judge reports its verdict
  through a descriptor of its own, never through stdout.
* **Nothing patched behind the checker's back.** After every call (and after unpickling) the
  namespaces the checker relies on (every ``bncourse`` module, ``numpy``, ``torch``,
  ``builtins``, ...) are compared with a snapshot taken as the call started: a replaced
  ``numpy.allclose`` or ``checks.judge`` is put back and reported.
* **Plain answers.** What a function returns is rebuilt from base types
  (:func:`bncourse.grading.plain.plain`) before the checker compares it.

Anything refused is recorded: the exercise then fails with a message that says what was
refused (``tampering``), even when the candidate catches the exception.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .plain import NotPlain, plain

__all__ = ["Guard", "Tampered", "ReferenceUsed", "resolve"]


class Tampered(BaseException):
    """The candidate did something it may not do; a ``BaseException`` so that a checker's
    ``except Exception`` cannot swallow it."""


class ReferenceUsed(RuntimeError):
    """The candidate called a reference implementation that the exercise replaces."""


# Audit events refused while the learner's code runs (in both phases: loading and calling).
_REFUSED = (
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.truncate",
    "os.chmod",
    "os.symlink",
    "os.link",
    "os.putenv",
    "os.unsetenv",
    "subprocess.",
    "socket.",
    "ctypes.",
    "shutil.",
    "mmap.",
    "_thread.start_new_thread",
    "sys._getframe",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "sys._setprofileallthreads",
    "sys._settraceallthreads",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "signal.pthread_kill",
    "signal.",
    "resource.",
    "winreg.",
)
# Refused too while the learner's function is *called* (unpickling needs them).
_REFUSED_WHEN_CALLED = ("object.__getattr__", "object.__setattr__", "object.__delattr__")
# ... except reading what inspect.signature reads of a function, which leads to no frame or
# state: torch.autograd.Function.apply binds forward's signature at every call when the
# Function has a setup_context (PyTorch's newer form, and torch_bn's).
_READ_WHEN_CALLED = ("__code__", "__defaults__", "__kwdefaults__")
# os functions that write to a descriptor, end or fork the process: removed while it runs.
_OS_REMOVED = (
    "writev",
    "pwrite",
    "pwritev",
    "sendfile",
    "dup",
    "dup2",
    "fdopen",
    "_exit",
    "abort",
    "kill",
    "killpg",
    "fork",
    "forkpty",
    "system",
    "ftruncate",
    "truncate",
    "posix_spawn",
    "posix_spawnp",
    "execv",
    "execve",
    "register_at_fork",
)
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_APPEND", "O_CREAT", "O_TRUNC")
_WATCHED = ("numpy", "numpy.linalg", "numpy.testing", "torch", "torch.nn", "torch.nn.functional")
_WATCHED += ("torch.autograd", "torch.testing", "builtins", "math", "json", "sys", "os", "io")
_WATCHED += ("threading", "pickle", "copy", "functools", "operator", "numpy._core.numeric")
_WATCHED += ("numpy.core.numeric", "numpy._core.fromnumeric", "numpy.core.fromnumeric")


def resolve(dotted: str) -> tuple[Any, str]:
    """``"torch.nn.functional.batch_norm"`` -> (the object that holds it, ``"batch_norm"``):
    the longest importable module prefix, then attributes (a class's method included)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:-1]:
            owner = getattr(owner, attribute)
        return owner, parts[-1]
    raise ImportError(f"cannot resolve {dotted}")


def _unavailable(dotted: str, used: list[str]) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        used.append(dotted)
        raise ReferenceUsed(
            f"{dotted} is the course's reference for what this exercise asks you to write; "
            "it is not available while your function is graded"
        )

    return stub


def _stdout_only(refused: list[str]) -> Callable[..., int]:
    import io

    # Descriptors 1 and 2 only (both /dev/null in the judge's child): the real os.write is
    # not reachable from this function's closure.
    files = {fd: io.FileIO(fd, "wb", closefd=False) for fd in (1, 2)}

    def stdout_only(fd: int, data: bytes) -> int:
        if fd not in files:
            refused.append(f"os.write to descriptor {fd}")
            raise PermissionError("only stdout and stderr may be written while graded")
        return files[fd].write(data) or 0

    return stdout_only


def _no_threads(refused: list[str]) -> Callable[..., Any]:
    def no_threads(*args: Any, **kwargs: Any) -> Any:
        refused.append("starting a thread")
        raise PermissionError("threads may not be started while your function is graded")

    return no_threads


def _snapshot() -> dict[tuple[str, str], int]:
    names = [n for n in list(sys.modules) if n == "bncourse" or n.startswith("bncourse.")]
    names += [n for n in _WATCHED if n in sys.modules]
    found = {}
    for name in names:
        module = sys.modules.get(name)
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        found[(name, "<module>")] = id(module)
        for key, value in list(namespace.items()):
            found[(name, key)] = id(value)
    torch = sys.modules.get("torch")
    if torch is not None:  # torch.Tensor's methods are Python attributes (ndarray's are not)
        for cls in (torch.Tensor, torch.nn.Module, torch.autograd.Function):
            for key, value in list(vars(cls).items()):
                found[(f"{cls.__module__}.{cls.__qualname__}", key)] = id(value)
    return found


class Guard:
    """The rules of one judged exercise (see the module docstring).

    ``references`` are dotted names taken away while the candidate runs. Use::

        guard = Guard(references)          # snapshot, audit hook
        candidate = guard.load(lambda: cloudpickle.loads(data))
        verdict = checker(guard.wrap(candidate))
        guard.verify()                     # raises Tampered if anything was refused
    """

    def __init__(self, references: tuple[str, ...] = ()) -> None:
        self.refused: list[str] = []
        self.references_used: list[str] = []
        self._phase: list[str] = ["judge"]  # judge | load | call
        self._references: dict[str, tuple[Any, str, Any]] = {}
        for dotted in references:
            owner, name = resolve(dotted)
            original = owner.__dict__[name]
            self._references[dotted] = (owner, name, original)
            for alias, module in list(sys.modules.items()):  # other names bound to it
                if alias.startswith("bncourse") and getattr(module, "__dict__", None):
                    for key, value in list(module.__dict__.items()):
                        if value is original and (module, key) != (owner, name):
                            self._references[f"{alias}.{key}"] = (module, key, original)
        self._stdout_only = _stdout_only(self.refused)
        self._no_threads = _no_threads(self.refused)
        self._snapshot = _snapshot()
        self._values = self._namespaces()
        self._threads = set(threading.enumerate())
        sys.addaudithook(self._audit)

    # -- what the candidate may not do ------------------------------------------------------
    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        phase = self._phase[-1]
        if phase == "judge":
            return
        refused = event.startswith(_REFUSED)
        if phase == "call" and event in _REFUSED_WHEN_CALLED:
            refused = not (event == "object.__getattr__" and args[1] in _READ_WHEN_CALLED)
        if event == "open":
            refused = self._opens_for_writing(args)
        if refused:
            what = event if event != "open" else f"open({args[0]!r}) for writing"
            if event.startswith("object."):
                what = f"{event}({type(args[0]).__name__}.{args[1]})"
            self.refused.append(what)
            raise PermissionError(f"{what} is not allowed while your function is graded")

    @staticmethod
    def _opens_for_writing(args: tuple[Any, ...]) -> bool:
        import os

        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(path, int):
            return True
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        if isinstance(flags, int):
            return any(flags & getattr(os, f, 0) for f in _WRITE_FLAGS)
        return False

    @contextlib.contextmanager
    def _running(self, phase: str) -> Iterator[None]:
        import _imp
        import _posixsubprocess
        import _thread
        import os
        import posix

        self._snapshot = _snapshot()  # what the checker relies on, as the candidate starts
        self._values = self._namespaces()
        removed: list[tuple[Any, str, Any]] = []
        for owner, names in (
            (os, _OS_REMOVED),
            (posix, _OS_REMOVED),
            (_imp, ("create_builtin",)),
            (_posixsubprocess, ("fork_exec",)),
        ):
            for name in names:
                if name in owner.__dict__:
                    removed.append((owner, name, owner.__dict__.pop(name)))
        for owner, name in ((_thread, "start_new_thread"), (_thread, "start_joinable_thread")):
            if name in owner.__dict__:
                removed.append((owner, name, owner.__dict__.pop(name)))
                owner.__dict__[name] = self._no_threads
        for name in ("_start_new_thread", "_start_joinable_thread"):
            if name in threading.__dict__:
                removed.append((threading, name, threading.__dict__[name]))
                threading.__dict__[name] = self._no_threads
        for owner in (os, posix):  # printing is allowed (it goes to /dev/null), nothing else
            removed.append((owner, "write", owner.__dict__.pop("write")))
            owner.__dict__["write"] = self._stdout_only
        stubs = {}
        for dotted, (owner, name, _original) in self._references.items():
            stubs[dotted] = _unavailable(dotted, self.references_used)
            _setattr(owner, name, stubs[dotted])
        self._phase.append(phase)
        try:
            yield
        finally:
            self._phase.pop()
            for dotted, (owner, name, original) in self._references.items():
                if owner.__dict__.get(name) is not stubs[dotted]:
                    self.refused.append(f"{dotted} replaced")
                _setattr(owner, name, original)
            for owner, name, value in removed:
                owner.__dict__[name] = value
            self._restore_namespaces()

    # -- loading and calling ----------------------------------------------------------------
    def load(self, make: Callable[[], Any]) -> Any:
        """Run ``make`` (e.g. unpickling the candidate) under the rules; its result."""
        with self._running("load"):
            candidate = make()
        self._check_threads()
        self.refuse_references(candidate)
        return candidate

    def refuse_references(self, candidate: Any) -> None:
        originals = {id(original): dotted for dotted, (_, _, original) in self._references.items()}
        dotted = originals.get(id(candidate))
        if dotted is not None:
            self.references_used.append(dotted)

    def wrap(self, candidate: Any) -> Any:
        """``candidate`` with every call run under the rules. A class: a subclass of it whose
        own methods are wrapped (so the learner's class itself holds no reference to us)."""
        if isinstance(candidate, type):
            members: dict[str, Any] = {}
            for name, member in list(vars(candidate).items()):
                if isinstance(member, staticmethod):
                    members[name] = staticmethod(self._call(member.__func__, convert=False))
                elif isinstance(member, classmethod):
                    members[name] = classmethod(self._call(member.__func__, convert=False))
                elif callable(member) and not isinstance(member, type):
                    members[name] = self._call(member, convert=False)
            members["__qualname__"] = candidate.__qualname__
            members["__module__"] = candidate.__module__
            return type(candidate)(candidate.__name__, (candidate,), members)
        if callable(candidate):
            return self._call(candidate, convert=True)
        return candidate

    def _call(self, function: Callable[..., Any], convert: bool) -> Callable[..., Any]:
        guard = self

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            if guard._phase[-1] != "judge":  # a method calling another: already guarded
                return function(*args, **kwargs)
            try:
                with guard._running("call"):
                    result = function(*args, **kwargs)
            finally:
                guard._check_threads()
                guard.verify()
            if not convert:
                return result
            try:
                return plain(result)
            except NotPlain as error:
                raise TypeError(f"your function returned {error}") from None

        return call

    # -- after every call -------------------------------------------------------------------
    def _check_threads(self) -> None:
        new = [t for t in threading.enumerate() if t not in self._threads and t.is_alive()]
        if new:
            self.refused.append(f"a thread left running ({new[0].name})")

    def _namespaces(self) -> dict[tuple[str, str], Any]:
        values = {}
        for module_name, key in self._snapshot:
            holder = sys.modules.get(module_name)
            if key == "<module>":
                values[(module_name, key)] = holder
                continue
            if holder is not None and key in holder.__dict__:
                values[(module_name, key)] = holder.__dict__[key]
        torch = sys.modules.get("torch")
        if torch is not None:
            for cls in (torch.Tensor, torch.nn.Module, torch.autograd.Function):
                for key, value in vars(cls).items():
                    values[(f"{cls.__module__}.{cls.__qualname__}", key)] = value
        return values

    def _restore_namespaces(self) -> None:
        for (module_name, key), module in self._values.items():
            if key == "<module>" and sys.modules.get(module_name) is not module:
                self.refused.append(f"sys.modules[{module_name!r}] replaced")
                sys.modules[module_name] = module
        now = _snapshot()
        for place, identity in self._snapshot.items():
            if now.get(place) != identity and place in self._values and place[1] != "<module>":
                module_name, key = place
                self.refused.append(f"{module_name}.{key} replaced")
                holder = sys.modules.get(module_name)
                if holder is not None:
                    _setattr(holder, key, self._values[place])
                else:
                    self._set_class_attribute(module_name, key, self._values[place])
        for module_name, key in now.keys() - self._snapshot.keys():  # imports add modules
            holder = sys.modules.get(module_name)
            value = getattr(holder, "__dict__", {}).get(key)
            if module_name.startswith("bncourse") and not isinstance(value, type(sys)):
                self.refused.append(f"{module_name}.{key} added")

    @staticmethod
    def _set_class_attribute(qualified: str, key: str, value: Any) -> None:
        torch = sys.modules.get("torch")
        for cls in (torch.Tensor, torch.nn.Module, torch.autograd.Function) if torch else ():
            if f"{cls.__module__}.{cls.__qualname__}" == qualified:
                type.__setattr__(cls, key, value)

    def verify(self) -> None:
        """Raise :class:`Tampered` if anything was refused so far."""
        if self.refused:
            unique = list(dict.fromkeys(self.refused))
            raise Tampered(
                "tampering: your code did what is not allowed while it is graded: "
                + "; ".join(unique[:4])
                + (f" (and {len(unique) - 4} more)" if len(unique) > 4 else "")
            )


def _setattr(owner: Any, name: str, value: Any) -> None:
    if isinstance(owner, type):
        type.__setattr__(owner, name, value)
    else:
        setattr(owner, name, value)
