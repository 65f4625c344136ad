"""Grading learner notebooks: ``python -m bncourse grade PATH...``.

For each notebook the grader

1. finds its exercises: the ``{exercise}`` blocks and their ``:label: ex-<id>``;
2. executes every code cell in a fresh ``python3`` kernel, from the notebook's folder, on an
   in-memory copy (the learner's file is only read, never written), with a per-cell timeout:
   a cell that runs too long is interrupted and execution goes on with the next cell; if the
   kernel dies or cannot be interrupted, a new kernel re-runs the notebook without that cell;
3. then, in that kernel, checks each exercise's function by name with
   :func:`bncourse.checks.grade_in_namespace`, so every exercise is graded even after another
   one failed, and whatever the learner did to the check cells.

Results are ``passed``, ``failed`` (with the checker's message), ``not attempted`` (the stub
still raises ``NotImplementedError``), ``error`` (e.g. the function is not defined) or
``timed out``. The grader prints a table, can write JSON, JUnit XML and a Markdown table (for a
CI job summary), and exits 0 only when every exercise of every notebook passed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from .checks import RESULT_PREFIX
from .notebooks import KERNEL
from .reproducible import reproducible_env

__all__ = [
    "Result",
    "Run",
    "GradingError",
    "exercise_ids",
    "grade_notebook",
    "run_notebook",
    "grade",
    "main",
]

EXERCISE_LABEL = re.compile(
    r"^(```+|:::+)\{exercise\}[^\n]*\n(?::[a-z-]+:[^\n]*\n)*?:label: ex-([a-z0-9-]+)", re.M
)
TIMEOUT_NAME = "CellTimeoutError"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


_QUIET = logging.getLogger("bncourse.grader.kernel")  # timeouts are reported in the table
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class GradingError(Exception):
    """A path that cannot be graded (not a notebook); the message says why."""


@dataclass
class Result:
    """The grade of one exercise."""

    notebook: str
    exercise: str
    status: str  # passed | failed | not attempted | error | timed out
    message: str
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def exercise_ids(nb: nbformat.NotebookNode) -> list[str]:
    """Exercise ids of a notebook, in order, from its ``{exercise}`` blocks' labels."""
    ids = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            ids += [match.group(2) for match in EXERCISE_LABEL.finditer(cell.source)]
    return ids


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook or raise :class:`GradingError` with a message for the learner."""
    if path.is_dir():
        raise GradingError(f"{path} is a folder; pass notebooks (.ipynb files) or a folder of them")
    if not path.exists():
        raise GradingError(f"{path} does not exist")
    if path.suffix != ".ipynb":
        raise GradingError(f"{path} is not a notebook: the grader takes .ipynb files")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # invalid JSON, not a notebook schema, ...
        raise GradingError(
            f"{path} is not a valid Jupyter notebook ({type(error).__name__}: {error})"
        ) from None


def _kernel_env() -> dict[str, str]:
    """The learner's kernel imports the same bncourse as the grader, installed or not."""
    env = reproducible_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


def _grader_cell(exercise_id: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(
        "import bncourse.checks as _bncourse_checks\n"
        f"_bncourse_checks.grade_in_namespace({exercise_id!r}, globals())"
    )


def _error_name(cell: nbformat.NotebookNode) -> str | None:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            return output.ename
    return None


def _execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> dict[int, str]:
    """Execute the code cells of ``nb`` in place; return {cell index: problem} for cells that
    timed out or killed the kernel. A cell that kills the kernel, or leaves it unresponsive
    after a timeout, is skipped in a re-run from a fresh kernel."""
    skipped: dict[int, str] = {}
    for _attempt in range(len(nb.cells) + 1):
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=KERNEL["name"],
            allow_errors=True,
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": TIMEOUT_NAME,
                "evalue": f"the cell did not finish within {timeout} s",
                "traceback": [],
            },
            resources={"metadata": {"path": str(cwd)}},
            log=_QUIET,
        )
        problems = dict(skipped)
        restart_without: int | None = None
        with client.setup_kernel(env=_kernel_env()):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or index in skipped:
                    continue
                started = time.monotonic()
                try:
                    client.execute_cell(cell, index)
                except DeadKernelError:
                    restart_without, why = index, "the kernel died while running this cell"
                    break
                # After a timeout the kernel is interrupted: the cell shows KeyboardInterrupt.
                if time.monotonic() - started >= timeout and _error_name(cell) in (
                    TIMEOUT_NAME,
                    "KeyboardInterrupt",
                ):
                    problems[index] = f"timed out after {timeout} s"
                    probe = nbformat.v4.new_code_cell("pass")
                    client.timeout = min(timeout, 10)
                    try:
                        client.execute_cell(probe, index)
                        responsive = _error_name(probe) is None
                    except DeadKernelError:
                        responsive = False
                    client.timeout = timeout
                    if not responsive:
                        restart_without, why = (
                            index,
                            f"timed out after {timeout} s and could not be interrupted",
                        )
                        break
        if restart_without is None:
            return problems
        skipped[restart_without] = why
    return skipped


@dataclass
class Run:
    """A graded notebook: its results, and its own cells as they executed (the grader's
    cells removed), which the tests compare with the committed outputs."""

    results: list[Result]
    executed: nbformat.NotebookNode


def grade_notebook(path: Path, timeout: int = 120) -> list[Result]:
    """Grade every exercise of the notebook at ``path`` (see the module docstring)."""
    return run_notebook(path, timeout).results


def run_notebook(path: Path, timeout: int = 120) -> Run:
    """Execute and grade the notebook at ``path``: :func:`grade_notebook`, keeping the run."""
    path = Path(path)
    nb = read_notebook(path)
    ids = exercise_ids(nb)
    name = str(path)
    if not ids:
        return Run(
            [
                Result(
                    name,
                    "(none)",
                    "error",
                    "no exercises found: no {exercise} block with :label: ex-<id>",
                )
            ],
            nb,
        )
    work = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy to execute
    first_grader_cell = len(work.cells)
    work.cells += [_grader_cell(exercise_id) for exercise_id in ids]
    start = time.perf_counter()
    problems = _execute(work, path.resolve().parent, timeout)

    notes = [
        f"cell {index + 1} {why}"
        for index, why in sorted(problems.items())
        if index < first_grader_cell
    ]
    results = []
    for offset, exercise_id in enumerate(ids):
        index = first_grader_cell + offset
        cell = work.cells[index]
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
        if lines:
            found = json.loads(lines[-1][len(RESULT_PREFIX) :])
            message = found["message"]
            if found["status"] == "error" and notes:
                message += " (" + "; ".join(notes) + ")"
            results.append(Result(name, exercise_id, found["status"], message, found["seconds"]))
        elif index in problems and "timed out" in problems[index]:
            results.append(
                Result(
                    name,
                    exercise_id,
                    "timed out",
                    f"the check did not finish within {timeout} s: an infinite loop?",
                )
            )
        else:
            why = problems.get(index) or f"the check raised {_error_name(cell)}"
            results.append(Result(name, exercise_id, "error", why))
    elapsed = time.perf_counter() - start
    for result in results:  # a per-exercise time is only known for completed checks
        result.seconds = result.seconds or round(elapsed / len(results), 3)
    work.cells = work.cells[:first_grader_cell]
    return Run(results, work)


def expand(paths: list[str]) -> list[Path]:
    """Paths as given; a folder stands for the notebooks in it (sorted)."""
    expanded = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            notebooks = sorted(path.glob("*.ipynb"))
            if not notebooks:
                raise GradingError(f"{path} contains no notebooks (.ipynb files)")
            expanded += notebooks
        else:
            expanded.append(path)
    return expanded


def grade(paths: list[str], timeout: int = 120) -> list[Result]:
    """Grade notebooks (or folders of notebooks); every path is validated before any runs."""
    notebooks = expand(paths)
    for path in notebooks:
        read_notebook(path)
    results = []
    for path in notebooks:
        results += grade_notebook(path, timeout)
    return results


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
SYMBOL = {
    "passed": "PASS",
    "failed": "FAIL",
    "not attempted": "TODO",
    "error": "ERROR",
    "timed out": "TIMEOUT",
}
EMOJI = {"passed": "✅", "failed": "❌", "not attempted": "⏳", "error": "💥", "timed out": "⏱️"}


def summary_line(results: list[Result]) -> str:
    passed = sum(r.passed for r in results)
    counts = {status: sum(r.status == status for r in results) for status in SYMBOL}
    rest = ", ".join(f"{n} {status}" for status, n in counts.items() if n and status != "passed")
    return f"{passed}/{len(results)} exercises passed" + (f" ({rest})" if rest else "")


def format_table(results: list[Result], width: int = 100) -> str:
    """A plain-text table: exercise, notebook, status, message (wrapped)."""
    import textwrap

    rows = [("exercise", "notebook", "status", "message")]
    rows += [(r.exercise, Path(r.notebook).name, SYMBOL[r.status], r.message) for r in results]
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
        "results": [asdict(r) for r in results],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def write_junit(results: list[Result], path: Path) -> None:
    """JUnit XML: one test suite per notebook, one test case per exercise."""
    suites = ET.Element(
        "testsuites",
        name="bncourse exercises",
        tests=str(len(results)),
        failures=str(sum(not r.passed for r in results)),
    )
    by_notebook: dict[str, list[Result]] = {}
    for result in results:
        by_notebook.setdefault(result.notebook, []).append(result)
    for notebook, group in by_notebook.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=notebook,
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
                classname=Path(notebook).stem,
                name=result.exercise,
                time=f"{result.seconds:.3f}",
            )
            if not result.passed:
                failure = ET.SubElement(case, "failure", type=result.status, message=result.message)
                failure.text = f"{result.exercise}: {result.status}: {result.message}"
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
        message = r.message.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{r.exercise}` | {Path(r.notebook).name} | {EMOJI[r.status]} {r.status} "
            f"| {message} |"
        )
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(
    paths: list[str],
    json_path: str | None = None,
    junit_path: str | None = None,
    markdown_path: str | None = None,
    timeout: int = 120,
) -> int:
    """The ``grade`` command: returns the exit status (0 only if every exercise passed)."""
    try:
        results = grade(paths, timeout)
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    if json_path:
        write_json(results, Path(json_path))
    if junit_path:
        write_junit(results, Path(junit_path))
    if markdown_path:
        write_markdown(results, Path(markdown_path))
    return 0 if results and all(r.passed for r in results) else 1
