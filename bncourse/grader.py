"""Grading learner notebooks: ``python -m bncourse grade PATH...``.

What the learner's code can reach does not decide anything (:mod:`bncourse.grading` has the
process model). For each notebook the grader

1. reads it (the bytes, once, before any notebook runs) and validates it; a file that is not
   a valid notebook gets its own report row and the other notebooks are still graded;
2. takes the exercises it must hold from the course's registry, by chapter: the chapter
   whose id is the file's name (``02_numpy_forward.ipynb``) or shares its number (``02_...``);
   for any other name, every exercise of each chapter the notebook's ``{exercise}`` labels
   belong to. An exercise whose ``:label: ex-<id>`` block is gone (deleted or relabelled) is
   ``missing``; a label given twice is one exercise;
3. grades it in a worker process of its own, in a new session, under a deadline: the worker
   runs the notebook in a temporary copy of its folder with a per-cell timeout, and the
   judge, a fresh process, decides each exercise (:mod:`bncourse.grading.worker`). A worker
   that is killed, or runs past its deadline, leaves report rows that say so, and every
   process the notebook started is ended;
4. verifies the hash manifest of ``bncourse/`` after each notebook and stops the run
   (:class:`~bncourse.grading.manifest.PackageChanged`) if the package changed.

Results are ``passed``, ``failed`` (with the checker's message), ``not attempted`` (the stub
still raises ``NotImplementedError``), ``missing`` (the exercise is not in the notebook),
``error`` (e.g. the function is not defined) or ``timed out``. The grader prints a table, can
write JSON, JUnit XML and a Markdown table (for a CI job summary), and for a class a gradebook
CSV and a class report (:mod:`bncourse.grading.classroom`); it exits 0 only when every
exercise of every notebook passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .checks import EXERCISES, Exercise
from .grading import classroom
from .grading.manifest import PACKAGE, PackageChanged, changes, manifest
from .grading.processes import TOKEN_VARIABLE, end_processes, new_token

__all__ = [
    "Result",
    "Run",
    "GradingError",
    "PackageChanged",
    "exercise_ids",
    "required_exercises",
    "grade_notebook",
    "run_notebook",
    "grade",
    "main",
]

EXERCISE_LABEL = re.compile(
    r"^(```+|:::+)\{exercise\}[^\n]*\n(?::[a-z-]+:[^\n]*\n)*?:label: ex-([a-z0-9-]+)", re.M
)
PACKAGE_ROOT = PACKAGE.parent
GRACE = 20.0  # seconds a worker gets beyond the sum of its limits (starting kernels, imports)


class GradingError(Exception):
    """A path that cannot be graded (not a notebook); the message says why."""


@dataclass
class Result:
    """The grade of one exercise (``learner``: the submission's name in a class)."""

    notebook: str
    exercise: str
    status: str  # passed | failed | not attempted | missing | error | timed out
    message: str
    seconds: float = 0.0
    learner: str = ""
    credit: float = 0.0  # of a failed answer with independent parts: the fraction right

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def points(self) -> float:
        """1 for a pass; for a failure, the fraction of its independent parts that are right."""
        return 1.0 if self.passed else (self.credit if self.status == "failed" else 0.0)


@dataclass
class Run:
    """A graded notebook: its results, and its own cells as they executed (the grader's
    cell removed), which the tests compare with the committed outputs."""

    results: list[Result]
    executed: nbformat.NotebookNode
    notes: list[str] = field(default_factory=list)


def exercise_ids(nb: nbformat.NotebookNode) -> list[str]:
    """Exercise ids of a notebook, in order, from its ``{exercise}`` blocks' labels (once each)."""
    ids = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and isinstance(cell.source, str):
            ids += [match.group(2) for match in EXERCISE_LABEL.finditer(cell.source)]
    return list(dict.fromkeys(ids))


def required_exercises(path: Path, labels: list[str]) -> list[Exercise]:
    """The exercises a notebook must hold, from the course (see step 2 of the docstring)."""
    chapters = list(dict.fromkeys(ex.chapter for ex in EXERCISES.values()))
    stem = Path(path).stem
    chosen = [c for c in chapters if c == stem]
    number = re.match(r"(\d+)_", stem)
    if not chosen and number:
        chosen = [c for c in chapters if c.split("_", 1)[0] == number.group(1)]
    if not chosen:
        chosen = list(dict.fromkeys(EXERCISES[i].chapter for i in labels if i in EXERCISES))
    return [ex for ex in EXERCISES.values() if ex.chapter in chosen]


def parse_notebook(path: Path, data: bytes) -> nbformat.NotebookNode:
    """The notebook in ``data``, validated, or :class:`GradingError` saying what is wrong."""
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # invalid JSON, not the notebook schema, not UTF-8, ...
        text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise GradingError(
            f"{path} is not a valid Jupyter notebook ({type(error).__name__}: {text})"
        ) from None
    return nb


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook or raise :class:`GradingError` with a message for the learner."""
    path = Path(path)
    if path.is_dir():
        raise GradingError(f"{path} is a folder; pass notebooks (.ipynb files) or a folder of them")
    if not path.exists():
        raise GradingError(f"{path} does not exist")
    if path.suffix != ".ipynb":
        raise GradingError(f"{path} is not a notebook: the grader takes .ipynb files")
    return parse_notebook(path, path.read_bytes())


def _rows(name: str, exercises: list[Exercise], status: str, message: str, learner: str):
    return [Result(name, ex.id, status, message, 0.0, learner) for ex in exercises]


def _deadline(nb: nbformat.NotebookNode, exercises: int, timeout: float) -> float:
    cells = sum(cell.cell_type == "code" for cell in nb.cells) + 1
    # each cell: its timeout, the probe, and a re-run of the notebook without a stuck cell
    return cells * (2 * timeout + 10) + exercises * (timeout + 10) + 300 + GRACE


def run_notebook(
    path: Path,
    timeout: float = 120,
    *,
    data: bytes | None = None,
    learner: str = "",
    reference_manifest: dict[str, str] | None = None,
) -> Run:
    """Execute and grade the notebook at ``path`` (its bytes: ``data``, read now if not given)."""
    if timeout <= 0:
        raise ValueError(f"the timeout must be a positive number of seconds, got {timeout}")
    path = Path(path)
    name = str(path)
    data = path.read_bytes() if data is None else data
    empty = nbformat.v4.new_notebook()
    try:
        nb = parse_notebook(path, data)
    except GradingError as error:
        return Run([Result(name, "(notebook)", "error", str(error), 0.0, learner)], empty)
    labels = exercise_ids(nb)
    exercises = required_exercises(path, labels)
    if not exercises:
        message = "no exercises found: no {exercise} block with :label: ex-<id> of the course"
        return Run([Result(name, "(none)", "error", message, 0.0, learner)], nb)
    before = manifest() if reference_manifest is None else reference_manifest
    token = new_token()
    private = Path(tempfile.mkdtemp(prefix="bncourse-grade-"))
    try:
        (private / "notebook.ipynb").write_bytes(data)
        out = private / "out"
        out.mkdir()
        request = {
            "name": name,
            "notebook": str(private / "notebook.ipynb"),
            "folder": str(path.resolve().parent),
            "filename": path.name,
            "exercises": [
                {"id": ex.id, "function": ex.function, "present": ex.id in labels}
                for ex in exercises
            ],
            "timeout": timeout,
            "manifest": before,
            "package": str(PACKAGE_ROOT),
            "out": str(out),
            "token": token,
        }
        (private / "request.json").write_text(json.dumps(request))
        start = time.monotonic()
        status, why = _run_worker(private, token, _deadline(nb, len(exercises), timeout))
        report = _read_report(out)
        executed = nb
        if (out / "executed.ipynb").exists():
            try:
                executed = nbformat.read(out / "executed.ipynb", as_version=4)
            except Exception:
                pass
        elapsed = time.monotonic() - start
    finally:
        end_processes(token)
        import shutil

        shutil.rmtree(private, ignore_errors=True)
    if report is None:
        return Run(_rows(name, exercises, status, why, learner), executed)
    if report["package_changed"]:
        raise PackageChanged(_package_message(name, report["package_changed"]))
    notes = [str(n) for n in report["notes"]]
    results = []
    for ex in exercises:
        found = report["results"].get(ex.id)
        if ex.id not in labels:
            results.append(
                Result(
                    name,
                    ex.id,
                    "missing",
                    f"the exercise block (:label: ex-{ex.id}) is not in the notebook: deleted "
                    "or relabelled? Restore it from the course's exercises/ folder",
                    0.0,
                    learner,
                )
            )
            continue
        if not isinstance(found, dict):
            found = {"status": "error", "message": "the judge gave no verdict", "seconds": 0.0}
        message = str(found.get("message", ""))
        if found.get("status") in ("error", "timed out") and notes:
            message += " (" + "; ".join(notes) + ")"
        status_found = str(found.get("status", "error"))
        if status_found not in SYMBOL:
            status_found = "error"
        seconds, credit = float(found.get("seconds", 0.0)), float(found.get("credit", 0.0))
        results.append(Result(name, ex.id, status_found, message, seconds, learner, credit))
    for result in results:
        result.seconds = result.seconds or round(elapsed / len(results), 3)
    after = manifest()
    changed = changes(before, after)
    if changed:
        raise PackageChanged(_package_message(name, changed))
    return Run(results, executed, notes)


def _package_message(name: str, changed: list[str]) -> str:
    return (
        f"bncourse/ changed while {name} was graded ({', '.join(changed[:5])}): the grading "
        "stopped, since later results would come from a changed package. Restore the package "
        "(git checkout bncourse/, or reinstall it) and grade again."
    )


def _run_worker(private: Path, token: str, deadline: float) -> tuple[str, str]:
    """Run the worker on ``private/request.json`` under ``deadline``; (status, why) for rows
    when it gives no report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env[TOKEN_VARIABLE] = token
    with open(private / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bncourse.grading.worker", str(private / "request.json")],
            cwd=private,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        started, heartbeat = time.monotonic(), private / "out" / "alive"
        while True:
            try:
                code = worker.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            late = now - started > deadline
            try:  # the worker's heartbeat: the most seconds its current step may take
                allowed = float(heartbeat.read_text() or "inf")
                late = late or time.time() - heartbeat.stat().st_mtime > allowed + GRACE
            except (OSError, ValueError):
                late = late or now - started > 300 + GRACE  # starting: no heartbeat yet
            if late:
                end_processes(token, group=worker.pid)
                worker.wait()
                return (
                    "timed out",
                    "grading this notebook stopped making progress (a cell that neither "
                    "finished nor could be interrupted, or one that broke the kernel) and "
                    "was ended",
                )
    end_processes(token, group=worker.pid)
    if code < 0:
        return (
            "error",
            f"the process grading this notebook was killed (signal {-code}) while it ran: "
            "does a cell kill its parent process or its process group?",
        )
    tail = (private / "worker.log").read_text(errors="replace").strip().splitlines()[-1:]
    return "error", f"the grading of this notebook failed (exit status {code}) {' '.join(tail)}"


def _read_report(out: Path) -> dict | None:
    try:
        report = json.loads((out / "report.json").read_text())
        if not isinstance(report.get("results"), dict):
            return None
        return report
    except (OSError, ValueError, AttributeError):
        return None


def grade_notebook(path: Path, timeout: float = 120) -> list[Result]:
    """Grade every exercise of the notebook at ``path`` (see the module docstring)."""
    return run_notebook(path, timeout).results


def expand(paths: list[str]) -> list[tuple[str, Path]]:
    """``(learner, notebook)`` pairs. A notebook stands for itself (learner ``""``); a folder
    of notebooks for the notebooks in it; a folder of folders is a class: each subfolder
    holding notebooks is one learner, named by the subfolder (see README, "Grading a class")."""
    expanded: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            expanded.append(("", path))
            continue
        notebooks = sorted(path.glob("*.ipynb"))
        learners = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
        if notebooks:
            expanded += [("", nb) for nb in notebooks]
        elif learners:
            for folder in learners:
                expanded += [(folder.name, nb) for nb in sorted(folder.glob("*.ipynb"))]
        else:
            raise GradingError(f"{path} contains no notebooks (.ipynb files)")
    return expanded


def grade(paths: list[str], timeout: float = 120, jobs: int = 1) -> list[Result]:
    """Grade notebooks, folders of notebooks, or a class (see :func:`expand`). Every path is
    checked and read before any notebook runs; ``jobs`` notebooks are graded at a time."""
    if timeout <= 0:
        raise GradingError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    notebooks = expand(paths)
    sources = {}
    for _learner, path in notebooks:
        if path.is_dir() or not path.exists() or path.suffix != ".ipynb":
            read_notebook(path)  # raises the message for this kind of path
        sources[path] = path.read_bytes()
    reference = manifest()

    def one(item: tuple[str, Path]) -> list[Result]:
        learner, path = item
        return run_notebook(
            path, timeout, data=sources[path], learner=learner, reference_manifest=reference
        ).results

    results: list[Result] = []
    if jobs <= 1:
        for item in notebooks:
            results += one(item)
        return results
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each notebook: its own processes
        for found in pool.map(one, notebooks):
            results += found
    return results


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
SYMBOL = {
    "passed": "PASS",
    "failed": "FAIL",
    "not attempted": "TODO",
    "missing": "MISSING",
    "error": "ERROR",
    "timed out": "TIMEOUT",
}
EMOJI = {
    "passed": "✅",
    "failed": "❌",
    "not attempted": "⏳",
    "missing": "🚫",
    "error": "💥",
    "timed out": "⏱️",
}
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with control characters (and what XML 1.0 cannot hold) written as ``\\xNN``:
    a learner's message can then go into a terminal, JUnit XML and Markdown as it is."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def summary_line(results: list[Result]) -> str:
    passed = sum(r.passed for r in results)
    counts = {status: sum(r.status == status for r in results) for status in SYMBOL}
    rest = ", ".join(f"{n} {status}" for status, n in counts.items() if n and status != "passed")
    line = f"{passed}/{len(results)} exercises passed" + (f" ({rest})" if rest else "")
    if any(0 < r.points < 1 for r in results):  # partial credit: say what it adds up to
        line += f"; {sum(r.points for r in results):.2f} of {len(results)} points"
    return line


def format_table(results: list[Result], width: int = 100) -> str:
    """A plain-text table: exercise, notebook, status, message (wrapped)."""
    import textwrap

    def where(r: Result) -> str:
        return f"{r.learner}/{Path(r.notebook).name}" if r.learner else Path(r.notebook).name

    rows = [("exercise", "notebook", "status", "message")]
    rows += [(r.exercise, where(r), SYMBOL[r.status], printable(r.message)) for r in results]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = sum(w) + 6
    lines = []
    for k, row in enumerate(rows):
        wrapped = textwrap.wrap(row[3], max(30, width - indent)) or [""]
        lines.append(f"{row[0]:<{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {wrapped[0]}")
        lines += [" " * indent + more for more in wrapped[1:]]
        if k == 0:
            lines.append("-" * min(width, indent + max(len(r[3]) for r in rows)))
    lines.append(summary_line(results))
    return "\n".join(lines)


def write_json(results: list[Result], path: Path) -> None:
    data = {
        "passed": all(r.passed for r in results) and bool(results),
        "summary": summary_line(results),
        "points": round(sum(r.points for r in results), 4),
        "results": [{**asdict(r), "points": round(r.points, 4)} for r in results],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def write_junit(results: list[Result], path: Path) -> None:
    """JUnit XML: one test suite per notebook, one test case per exercise; every text goes
    through :func:`printable`, so the file is valid XML whatever a message holds."""
    suites = ET.Element(
        "testsuites",
        name="bncourse exercises",
        tests=str(len(results)),
        failures=str(sum(not r.passed for r in results)),
    )
    by_notebook: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        by_notebook.setdefault((result.learner, result.notebook), []).append(result)
    for (learner, notebook), group in by_notebook.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=printable(f"{learner}/{notebook}" if learner else notebook),
            tests=str(len(group)),
            failures=str(sum(not r.passed for r in group)),
            errors="0",
            skipped="0",
            time=f"{sum(r.seconds for r in group):.3f}",
        )
        for result in group:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=printable(Path(notebook).stem),
                name=printable(result.exercise),
                time=f"{result.seconds:.3f}",
            )
            if not result.passed:
                message = printable(result.message)
                failure = ET.SubElement(case, "failure", type=result.status, message=message)
                failure.text = printable(f"{result.exercise}: {result.status}: {message}")
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_markdown(results: list[Result], path: Path) -> None:
    """Append a Markdown table (e.g. to ``$GITHUB_STEP_SUMMARY``)."""
    lines = [
        "## Exercise results",
        "",
        f"**{summary_line(results)}**",
        "",
        "| exercise | notebook | status | message |",
        "|---|---|---|---|",
    ]
    for r in results:
        message = printable(r.message).replace("|", "\\|").replace("\n", " ")
        where = f"{r.learner}/{Path(r.notebook).name}" if r.learner else Path(r.notebook).name
        lines.append(f"| `{r.exercise}` | {where} | {EMOJI[r.status]} {r.status} | {message} |")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(
    paths: list[str],
    json_path: str | None = None,
    junit_path: str | None = None,
    markdown_path: str | None = None,
    timeout: float = 120,
    jobs: int = 1,
    gradebook_path: str | None = None,
    class_report_path: str | None = None,
) -> int:
    """The ``grade`` command: returns the exit status (0 only if every exercise passed)."""
    try:
        results = grade(paths, timeout, jobs)
    except (GradingError, PackageChanged) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    if json_path:
        write_json(results, Path(json_path))
    if junit_path:
        write_junit(results, Path(junit_path))
    if markdown_path:
        write_markdown(results, Path(markdown_path))
    if gradebook_path:
        classroom.write_gradebook(results, Path(gradebook_path))
    if class_report_path:
        classroom.write_class_report(results, Path(class_report_path))
    return 0 if results and all(r.passed for r in results) else 1
