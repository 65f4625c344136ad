"""One notebook, graded from start to end in a process of its own.

``python -m bncourse.grading.worker REQUEST.json`` is started by the grader
(:func:`bncourse.grader.run_notebook`) in a new session, with its output on ``/dev/null``.
It

1. copies the notebook's folder into a new temporary folder and writes the learner's
   notebook there from the bytes the grader read before anything ran (the learner's own
   files are never opened for writing, and a notebook graded earlier cannot change them);
2. executes the notebook there (:mod:`bncourse.grading.kernel`), with one more cell that
   writes each exercise's function as bytes (:mod:`bncourse.grading.capture`);
3. ends every process the notebook started (:mod:`bncourse.grading.processes`);
4. verifies the package manifest (:mod:`bncourse.grading.manifest`): if ``bncourse/``
   changed, it stops and says so instead of judging;
5. starts the judge (:mod:`bncourse.grading.judge`) on the candidates and writes the report.

Request: ``{"name", "notebook": file of the learner's bytes, "folder": the learner's folder,
"filename", "exercises": [{"id", "function", "present"}], "timeout", "manifest", "package",
"out": folder for the report, "token"}``. Report (``out/report.json``): ``{"results": {id:
{"status", "message", "seconds"}}, "notes": [...], "package_changed": [...]}``, and
``out/executed.ipynb``, the notebook as it ran (without the grader's cell).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from ..reproducible import reproducible_env
from . import judge
from .kernel import execute
from .manifest import changes, manifest
from .processes import TOKEN_VARIABLE, end_processes

__all__ = ["main"]

SKIPPED_FOLDERS = {
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "node_modules",
    "_build",
    ".ipynb_checkpoints",
}
LARGEST_COPIED = 50 * 2**20  # bytes: a larger data file is left out of the copy


def _ignore(folder: str, names: list[str]) -> list[str]:
    ignored = []
    for name in names:
        path = Path(folder) / name
        if name in SKIPPED_FOLDERS or path.is_symlink():
            ignored.append(name)
        elif path.is_file() and path.stat().st_size > LARGEST_COPIED:
            ignored.append(name)
    return ignored


def _copy_folder(source: Path, target: Path) -> None:
    try:
        shutil.copytree(source, target, ignore=_ignore, dirs_exist_ok=True)
    except (OSError, shutil.Error):  # unreadable files: grade with what could be copied
        target.mkdir(parents=True, exist_ok=True)


def _kernel_env(package: str, token: str) -> dict[str, str]:
    env = reproducible_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package, env.get("PYTHONPATH")]))
    env[TOKEN_VARIABLE] = token
    return env


def _capture_cell(functions: dict[str, str], folder: Path) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(
        "import bncourse.grading.capture as _bncourse_capture\n"
        f"_bncourse_capture.capture({functions!r}, globals(), {str(folder)!r})"
    )


def _judge(request: dict[str, Any], candidates: Path, private: Path) -> dict[str, Any]:
    entries = []
    for ex in request["exercises"]:
        if not ex["present"]:
            continue
        pickled, problem = candidates / f"{ex['id']}.pkl", candidates / f"{ex['id']}.problem.json"
        entry: dict[str, Any] = {"id": ex["id"], "candidate": None, "problem": None}
        if pickled.exists():
            entry["candidate"] = str(pickled)
        elif problem.exists():
            try:
                found = json.loads(problem.read_text())
                entry["problem"] = {"status": "error", "message": str(found["message"])}
            except (ValueError, KeyError, TypeError):
                entry["problem"] = {"status": "error", "message": "the grader's cell failed"}
        else:
            entry["problem"] = {
                "status": "error",
                "message": f"{ex['function']} could not be read from the kernel: the grader's "
                "last cell did not run (did the notebook end the kernel?)",
            }
        entries.append(entry)
    if not entries:
        return {}
    results = private / "verdicts.json"
    job = private / "judge-request.json"
    timeout = float(request["timeout"])
    job.write_text(
        json.dumps(
            {"timeout": timeout, "results": str(results), "exercises": entries},
        )
    )
    empty = Path(tempfile.mkdtemp(prefix="judge-", dir=private))
    env = reproducible_env({k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE})
    env["OMP_NUM_THREADS"] = "1"
    limit = len(entries) * (timeout + 10) + 300  # + importing torch on a busy machine
    try:
        subprocess.run(
            judge.command(Path(request["package"]), job),
            cwd=empty,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pass
    try:
        return json.loads(results.read_text())
    except (OSError, ValueError):
        return {
            e["id"]: {"status": "error", "message": "the judge did not report", "seconds": 0.0}
            for e in entries
        }


def grade(request: dict[str, Any]) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; the report."""
    out = Path(request["out"])
    private = Path(tempfile.mkdtemp(prefix="bncourse-grade-"))
    try:
        work = private / "work" / Path(request["folder"]).name
        _copy_folder(Path(request["folder"]), work)
        source = Path(request["notebook"]).read_bytes()
        (work / request["filename"]).write_bytes(source)
        nb = nbformat.reads(source.decode("utf-8"), as_version=4)
        candidates = private / "candidates"
        candidates.mkdir()
        functions = {e["id"]: e["function"] for e in request["exercises"] if e["present"]}
        learner_cells = len(nb.cells)
        nb.cells.append(_capture_cell(functions, candidates))
        heartbeat = out / "alive"

        def alive(seconds: float) -> None:
            heartbeat.write_text(f"{seconds:.0f}")

        problems = execute(
            nb,
            work,
            float(request["timeout"]),
            _kernel_env(request["package"], request["token"]),
            alive,
        )
        end_processes(request["token"])
        notes = [
            f"cell {index + 1} {why}"
            for index, why in sorted(problems.items())
            if index < learner_cells
        ]
        nb.cells = nb.cells[:learner_cells]
        nbformat.write(nb, out / "executed.ipynb")
        changed = changes(request["manifest"], manifest(Path(request["package"]) / "bncourse"))
        if changed:
            return {"results": {}, "notes": notes, "package_changed": changed}
        alive(len(functions) * (float(request["timeout"]) + 10) + 330)
        results = _judge(request, candidates, private)
        changed = changes(request["manifest"], manifest(Path(request["package"]) / "bncourse"))
        return {"results": results, "notes": notes, "package_changed": changed}
    finally:
        end_processes(request["token"])
        shutil.rmtree(private, ignore_errors=True)


def main(argv: list[str]) -> int:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <worker>` prints where it is (the log)
    request = json.loads(Path(argv[0]).read_text())
    report = grade(request)
    target = Path(request["out"]) / "report.json"
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    partial.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
