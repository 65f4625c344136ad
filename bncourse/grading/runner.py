"""The untrusted side: runs in the sandbox, runs the notebook, calls the learner's functions.

``python -m bncourse.grading.runner MODE WORK CANDIDATES READ_FD WRITE_FD`` is started by the
judge (:mod:`bncourse.grading.judge`) through :func:`bncourse.grading.sandbox.start`. It
talks to the judge only through the two pipes, in plain data
(:mod:`bncourse.grading.protocol`). Everything here may be changed by the learner's code --
the notebook runs in this process's kernel, and the functions it calls run in this process --
so nothing here decides anything: it only *answers*, and the judge checks the answers.

``run`` mode executes the notebook in ``WORK`` in a kernel (:mod:`.kernel`), sending
``{"op": "alive", "seconds": s}`` before each cell (the judge ends a runner that misses its
step), then writes each exercise's function into ``CANDIDATES`` by value (cloudpickle, in
the kernel: :mod:`.capture`; it is only ever read back here, in the sandbox) and sends
``{"op": "ran", "notes", "executed"}``. Both modes then load the functions and *serve*:
``{"op": "ready", "candidates": {id: {"kind", "name", "reference", "problem"}}}``, then one
reply per request:

* ``call`` ``{"exercise", "target": handle or null (the function), "args", "kwargs"}``: the
  value returned (objects that are not plain data stay here as handles), the new value of
  every array, tensor or module argument (``"mutated"``: the function may change them in
  place), and ``"references"``: the course's references the call used (:mod:`.references`);
* ``getattr`` ``{"target", "name"}``: an attribute of a handle;
* ``apply`` / ``grad``: a ``torch.autograd.Function``'s forward on tensors that require
  gradients, and ``torch.autograd.grad`` of its output for a given gradient;
* ``end``: exit.

A function of the checker passed as an argument (``numerical_gradient``'s ``f``) is a
callback: calling it here sends ``{"op": "callback", "id", "args"}`` and waits for the
judge's answer.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .protocol import Channel, decode, encode

__all__ = ["main"]

LARGEST_EXECUTED = 8 * 2**20  # bytes of the executed notebook sent back


class Runner:
    def __init__(self, channel: Channel, candidates: Path) -> None:
        self.channel = channel
        self.candidates_dir = candidates
        self.functions: dict[str, Any] = {}
        self.objects: dict[int, Any] = {}
        self.sessions: dict[int, tuple[Any, list[Any]]] = {}

    # -- plain data ------------------------------------------------------------------------
    def _handle(self, value: Any) -> dict[str, Any]:
        key = len(self.objects) + 1
        self.objects[key] = value
        return {"$": "handle", "id": key, "type": type(value).__name__[:100]}

    def _callback(self, key: Any) -> Any:
        channel = self.channel

        def call_back(*args: Any) -> Any:
            blobs: list[bytes] = []
            channel.send({"op": "callback", "id": key, "args": encode(args, blobs)}, blobs)
            message, blobs = channel.receive()
            if not message.get("ok"):
                raise RuntimeError(str(message.get("error", "the checker's function failed")))
            return decode(message.get("value"), blobs, trusted=False)

        return call_back

    def _decode(self, tree: Any, blobs: list[bytes]) -> Any:
        return decode(tree, blobs, trusted=False, callback=self._callback)

    def _reply(self, message: dict[str, Any], blobs: list[bytes]) -> None:
        self.channel.send({"op": "reply", **message}, blobs)

    # -- loading the functions -------------------------------------------------------------
    def load(self, exercises: dict[str, str]) -> dict[str, dict[str, Any]]:
        import cloudpickle

        from .references import references_for, resolve

        found: dict[str, dict[str, Any]] = {}
        for exercise_id, name in exercises.items():
            pickled = self.candidates_dir / f"{exercise_id}.pkl"
            problem = self.candidates_dir / f"{exercise_id}.problem.json"
            entry: dict[str, Any] = {"kind": None, "name": name, "reference": None, "problem": None}
            try:
                if pickled.exists():
                    function = cloudpickle.loads(pickled.read_bytes())
                elif problem.exists():
                    entry["problem"] = str(json.loads(problem.read_text())["message"])[:2000]
                    found[exercise_id] = entry
                    continue
                else:
                    entry["problem"] = (
                        f"{name} could not be read from the kernel: the grader's last cell did "
                        "not run (did the notebook end the kernel?)"
                    )
                    found[exercise_id] = entry
                    continue
            except Exception as error:
                entry["problem"] = (
                    f"{name} could not be loaded to be graded ({type(error).__name__}: "
                    f"{str(error)[:300]}); define it with def/class in the notebook"
                )
                found[exercise_id] = entry
                continue
            self.functions[exercise_id] = function
            entry["kind"] = "function"
            if isinstance(function, type):
                entry["kind"] = "class"
                torch = sys.modules.get("torch")
                if torch is not None and issubclass(function, torch.autograd.Function):
                    entry["kind"] = "autograd_function"
            elif not callable(function):
                entry["kind"] = "value"
            entry["name"] = str(getattr(function, "__name__", name))[:200]
            for dotted in references_for(exercise_id):
                owner, attribute = resolve(dotted)
                if owner.__dict__.get(attribute) is function:
                    entry["reference"] = dotted
            found[exercise_id] = entry
        return found

    # -- references taken away while a function runs ----------------------------------------
    def _without_references(self, exercise_id: str, used: list[str]):
        """While the candidate of ``exercise_id`` runs: its references swapped for stubs that
        raise, and -- however the candidate got hold of a reference (a name bound before
        the swap, ``from ... import ... as``, a copy of its code, ``torch.ops.aten``) --
        every run of a reference's code (:func:`_watch_code`) and every PyTorch operator it
        forbids (:func:`_watch_operators`) recorded in ``used``."""
        import contextlib

        from .references import forbidden_operators, references_for, resolve

        @contextlib.contextmanager
        def scope():
            swapped = []
            originals = {}
            for dotted in references_for(exercise_id):
                try:
                    owner, name = resolve(dotted)
                    original = owner.__dict__[name]
                except (ImportError, AttributeError, KeyError):
                    continue
                originals[dotted] = original

                def stub(*args: Any, _dotted: str = dotted, **kwargs: Any) -> Any:
                    used.append(_dotted)
                    raise RuntimeError(
                        f"{_dotted} is the course's reference for what this exercise asks you "
                        "to write; it is not available while your function is graded"
                    )

                _set(owner, name, stub)
                swapped.append((owner, name, original))
            try:
                with (
                    _watch_code(originals, used),
                    _watch_operators(forbidden_operators(exercise_id), used),
                ):
                    yield
            finally:
                for owner, name, original in swapped:
                    _set(owner, name, original)

        return scope()

    # -- requests ----------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            message, blobs = self.channel.receive()
            op = message.get("op")
            if op == "end":
                return
            used: list[str] = []
            try:
                with self._without_references(str(message.get("exercise", "")), used):
                    reply, out = self._answer(op, message, blobs)
            except BaseException as error:  # the learner's code raised: say what, as text
                if isinstance(error, KeyboardInterrupt | SystemExit) and op == "end":
                    return
                out = []
                reply = {
                    "ok": False,
                    "error": {
                        "type": type(error).__name__[:100],
                        "message": _text(error),
                    },
                }
            reply["references"] = list(dict.fromkeys(used))
            self._reply(reply, out)

    def _answer(self, op: Any, message: dict[str, Any], blobs: list[bytes]):
        out: list[bytes] = []
        target = message.get("target")
        if target is None:
            subject = self.functions[str(message.get("exercise"))]
        else:
            subject = self.objects[int(target)]
        if op == "value":  # a prediction exercise: the learner's value, as plain data
            return {"ok": True, "value": encode(_plain(subject), out, handle=self._handle)}, out
        if op == "getattr":
            value = getattr(subject, str(message.get("name")))
            return {"ok": True, "value": encode(value, out, handle=self._handle)}, out
        if op == "call":
            args = self._decode(message.get("args"), blobs)
            kwargs = self._decode(message.get("kwargs"), blobs)
            result = subject(*args, **kwargs)
            value = None
            for index, arg in enumerate(args):
                if result is arg and not isinstance(arg, (int, float, str, bool, type(None))):
                    value = {"$": "arg", "index": index}
            if value is None:
                value = encode(result, out, handle=self._handle)
            mutated = [[i, self._state(a, out)] for i, a in enumerate(args) if _mutable(a)]
            return {"ok": True, "value": value, "mutated": mutated}, out
        if op == "apply":
            args = self._decode(message.get("args"), blobs)
            result = subject.apply(*args)
            grad_fn = getattr(result, "grad_fn", None)
            node = None if grad_fn is None else type(grad_fn).__name__[:200]
            key = len(self.sessions) + 1
            self.sessions[key] = (result, list(args))
            value = encode(result, out, handle=self._handle)
            return {"ok": True, "value": value, "node": node, "session": key}, out
        if op == "grad":
            import torch

            result, args = self.sessions[int(message["session"])]
            grad = self._decode(message.get("grad"), blobs)
            inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            grads = torch.autograd.grad(result, inputs, grad, allow_unused=True)
            return {"ok": True, "value": encode(tuple(grads), out, handle=self._handle)}, out
        raise ValueError(f"unknown request {op!r}")

    def _state(self, value: Any, out: list[bytes]) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.nn.Module):
            return {
                "$module": True,
                "training": {n: bool(m.training) for n, m in value.named_modules()},
                "requires_grad": {n: bool(p.requires_grad) for n, p in value.named_parameters()},
                "state": {
                    k: encode(v, out)
                    for k, v in [*value.named_parameters(), *value.named_buffers()]
                    if v is not None
                },
            }
        return encode(value, out)


def _code_of(value: Any) -> Any:
    """The code object of a function, a method, a static or class method, a wrapper."""
    import inspect

    value = getattr(value, "__func__", value)
    try:
        value = inspect.unwrap(value)
    except ValueError:
        pass
    return getattr(value, "__code__", None)


def _where(code: Any) -> tuple[str, int, str]:
    return (code.co_filename, code.co_firstlineno, code.co_name)


class _watch_code:
    """Records in ``used`` every Python frame that runs a reference's code, recognised by its
    file, line and name (not by the function object: a name bound before the swap, a
    ``functools.partial`` or a new function made from the reference's ``__code__`` all run
    that code). The candidate runs in this process and could remove the hook: one that is
    gone when the call ends is recorded too."""

    def __init__(self, references: dict[str, Any], used: list[str]) -> None:
        self.codes = {}
        for dotted, value in references.items():
            code = _code_of(value)
            if code is not None:
                self.codes[_where(code)] = dotted
        self.used = used

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            found = self.codes.get(_where(frame.f_code))
            if found is not None:
                self.used.append(found)

    def __enter__(self) -> None:
        import threading

        self.before = sys.getprofile(), threading.getprofile()
        if self.codes:
            sys.setprofile(self._profile)
            threading.setprofile(self._profile)  # threads the candidate starts

    def __exit__(self, *exc: Any) -> None:
        import threading

        if self.codes:
            if sys.getprofile() != self._profile:
                self.used.append("(the grader's check for the reference, switched off)")
            sys.setprofile(self.before[0])
            threading.setprofile(self.before[1])


class _watch_operators:
    """Records in ``used`` every PyTorch operator whose name holds one of ``names``
    (``batch_norm``: ``F.batch_norm``, ``torch.batch_norm``, ``nn.BatchNorm*d``,
    ``torch.ops.aten.native_batch_norm``, ...), however it was reached: a dispatch mode sees
    every operator that runs, below every Python name for it."""

    def __init__(self, names: tuple[str, ...], used: list[str]) -> None:
        self.names, self.used, self.mode = names, used, None

    def __enter__(self) -> None:
        torch = sys.modules.get("torch")
        if not self.names or torch is None:
            return
        from torch.utils._python_dispatch import TorchDispatchMode

        names, used = self.names, self.used

        class Watch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                text = str(func)
                if any(name in text for name in names):
                    used.append(f"torch.ops.{text}")
                return func(*args, **(kwargs or {}))

        self.mode = Watch()
        self.mode.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.mode is None:
            return
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        if _get_current_dispatch_mode() is not self.mode:
            self.used.append("(the grader's check for PyTorch's operators, switched off)")
            return
        self.mode.__exit__(*exc)


def _mutable(value: Any) -> bool:
    import numpy as np

    torch = sys.modules.get("torch")
    if isinstance(value, np.ndarray):
        return True
    return torch is not None and isinstance(value, torch.Tensor | torch.nn.Module)


def _set(owner: Any, name: str, value: Any) -> None:
    if isinstance(owner, type):
        type.__setattr__(owner, name, value)
    else:
        setattr(owner, name, value)


def _text(error: BaseException) -> str:
    try:
        return str(error)[:2000]
    except Exception:
        return "(an exception whose message cannot be shown)"


def _run(channel: Channel, work: Path, candidates: Path, request: dict[str, Any]) -> None:
    import nbformat

    from .kernel import execute, skipped_cells

    source = (work / request["filename"]).read_bytes()
    nb = nbformat.reads(source.decode("utf-8"), as_version=4)
    functions = {str(k): str(v) for k, v in request["exercises"].items()}
    learner_cells = len(nb.cells)
    skipped_text = "\n".join(nb.cells[i].source for i in skipped_cells(nb))
    skipped = tuple(name for name in functions.values() if name in skipped_text)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import bncourse.grading.capture as _bncourse_capture\n"
            f"_bncourse_capture.capture({functions!r}, globals(), {str(candidates)!r}, "
            f"{skipped!r})"
        )
    )

    def alive(seconds: float) -> None:
        channel.send({"op": "alive", "seconds": float(seconds)})

    problems = execute(nb, work, float(request["timeout"]), dict(os.environ), alive)
    notes = [f"cell {i + 1} {why}" for i, why in sorted(problems.items()) if i < learner_cells]
    nb.cells = nb.cells[:learner_cells]
    executed = nbformat.writes(nb)
    if len(executed.encode()) > LARGEST_EXECUTED:
        executed = ""
    kept, blobs = {}, []  # the functions, for the judge to keep (a tmpfs ends with the sandbox)
    for exercise_id in functions:
        for name in (f"{exercise_id}.pkl", f"{exercise_id}.problem.json"):
            try:
                blobs.append((candidates / name).read_bytes())
            except OSError:
                continue
            kept[name] = len(blobs) - 1
    channel.send({"op": "ran", "notes": notes, "executed": executed, "kept": kept}, blobs)


def _plain(value: Any) -> Any:
    """A predicted value as the plain data the judge reads, as the notebook's ``check`` would
    take it: a fraction, decimal or subclass of a number as a number, a subclass of ``str``
    as a ``str``, a set of letters as a sorted list (anything else as it is)."""
    import decimal
    import fractions

    if isinstance(value, bool) or type(value) in (int, float, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (float, fractions.Fraction, decimal.Decimal)):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (set, frozenset)) and all(isinstance(v, str) for v in value):
        return sorted(str.__str__(v) for v in value)
    return value


def _imports(exercise_ids: list[str]) -> None:
    """The modules of the references the exercises take away (:mod:`.references`): PyTorch
    only for the chapters whose references are PyTorch's."""
    import numpy  # noqa: F401

    from .references import references_for, resolve

    for exercise_id in exercise_ids:
        for dotted in references_for(exercise_id):
            resolve(dotted)


def main(argv: list[str]) -> int:
    import threading

    mode, work, candidates = argv[0], Path(argv[1]), Path(argv[2])
    channel = Channel(int(argv[3]), int(argv[4]))
    copy = os.environ.get("BNCOURSE_WORK_COPY")
    if copy and Path(copy).is_dir():  # the learner's folder, into the sandbox's bounded tmpfs
        import shutil

        notebook = {p.name for p in Path(copy).iterdir() if p.suffix == ".ipynb"}
        shutil.copytree(
            copy,
            work,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=lambda folder, names: notebook if Path(folder) == Path(copy) else (),
        )
    fonts, cache = os.environ.get("BNCOURSE_FONT_CACHE"), os.environ.get("MPLCONFIGDIR")
    if fonts and cache and Path(fonts).is_dir():  # matplotlib's font list, built outside
        import shutil

        shutil.copytree(fonts, cache, dirs_exist_ok=True)
    request, _ = channel.receive()
    if mode == "run":  # what starts the kernel, before the thread below: imports hold the GIL
        from . import kernel  # noqa: F401
    importing = threading.Thread(target=_imports, args=(list(request["exercises"]),), daemon=True)
    importing.start()  # while the kernel runs the notebook
    if mode == "run":
        _run(channel, work, candidates, request)
    importing.join()
    runner = Runner(channel, candidates)
    try:
        described = runner.load({str(k): str(v) for k, v in request["exercises"].items()})
    except BaseException:
        traceback.print_exc()
        described = {}
    channel.send({"op": "ready", "candidates": described})
    runner.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
