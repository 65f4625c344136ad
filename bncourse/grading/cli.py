"""The ``grade`` command: which notebooks, which exercises, and the reports.

``python -m bncourse grade PATH...`` (:func:`main`). For each notebook the grader

1. checks the path and reads the bytes, once, before any notebook runs: a path inside a
   folder must be a regular file (by ``lstat``: no symbolic link, folder, FIFO or device)
   of at most :data:`LARGEST_NOTEBOOK` bytes, opened without following links; a bad one is
   that notebook's error row and the others are still graded;
2. takes the exercises it must hold from the course's registry, by chapter: the chapter
   whose id is the file's name (``02_numpy_forward.ipynb``) or shares its number (``02_...``);
   for any other name, every exercise of each chapter the notebook's ``{exercise}`` labels
   (or, in the plain-Markdown learner notebooks, ``<a id="ex-<id>"></a>`` anchors) belong
   to. An exercise whose ``:label: ex-<id>`` block (or anchor) is gone (deleted or
   relabelled) is ``missing``; a label given twice is one exercise;
3. grades it with :func:`bncourse.grading.judge.grade_submission`: the notebook runs in the
   sandbox, the checkers run here on stand-ins that call the learner's functions in the
   sandbox in plain data, and the verdicts are made here;
4. writes the reports (atomically, after every sandbox is gone).

Results are ``passed``, ``failed`` (with the checker's message and, when it names one, the
misconception), ``not attempted`` (the stub still raises ``NotImplementedError``),
``missing``, ``error`` or ``timed out``. Without a sandbox (:func:`bncourse.grading.sandbox.
isolation` says why) every result is marked ``isolated=False`` and every report says it is
a self-check, not tamper-proof; grading a class, or with ``--require-isolation``, then
refuses unless ``--allow-unisolated``.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from ..checks import EXERCISES, Exercise
from . import classroom, sandbox
from .judge import Submission, bounded, grade_submission

__all__ = [
    "Result",
    "Run",
    "GradingError",
    "exercise_ids",
    "required_exercises",
    "grade_notebook",
    "run_notebook",
    "grade",
    "one_per_chapter",
    "main",
    "NOT_TAMPER_PROOF",
]

EXERCISE_LABEL = re.compile(
    r"^(```+|:::+)\{exercise\}[^\n]*\n(?::[a-z-]+:[^\n]*\n)*?:label: ex-([a-z0-9-]+)", re.M
)
# The learner notebooks in exercises/ are plain Markdown: there an exercise is a heading with
# the anchor <a id="ex-<id>"></a> (bncourse/plain_markdown.py).
EXERCISE_ANCHOR = re.compile(r'^<a id="ex-([a-z0-9-]+)"></a>', re.M)
LARGEST_NOTEBOOK = 50 * 2**20  # bytes: a larger submission is refused (its error row)
NOT_TAMPER_PROOF = (
    "NOT TAMPER-PROOF: graded without a sandbox ({why}); the learner's code ran with your "
    "privileges and could have changed this result. This is a self-check, not a grade."
)


class GradingError(Exception):
    """A path that cannot be graded (not a notebook); the message says why."""


@dataclass
class Result:
    """The grade of one exercise (``learner``: the submission's name in a class).

    ``misconception``: what the checker recognised in a failed answer (a field the checker
    sets, never read out of the message); ``isolated``: whether the learner's code ran in
    the sandbox (False: a self-check, not tamper-proof)."""

    notebook: str
    exercise: str
    status: str  # passed | failed | not attempted | missing | error | timed out
    message: str
    seconds: float = 0.0
    learner: str = ""
    credit: float = 0.0  # of a failed answer with independent parts: the fraction right
    misconception: str = ""
    isolated: bool = True

    def __post_init__(self) -> None:  # (every report is written from these)
        self.message = bounded(self.message)
        self.misconception = bounded(self.misconception, 300)

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
            ids += [match.group(1) for match in EXERCISE_ANCHOR.finditer(cell.source)]
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


def read_submission(path: Path, follow: bool = False) -> bytes:
    """The bytes of a submitted notebook, or :class:`GradingError`: a regular file (checked
    with ``lstat``, opened with ``O_NOFOLLOW``, checked again with ``fstat``; ``follow``: a
    path the teacher named may be a link) of at most :data:`LARGEST_NOTEBOOK` bytes."""
    path = Path(path)
    try:
        info = path.stat() if follow else path.lstat()
    except OSError:
        raise GradingError(f"{path} does not exist") from None
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    for test, what in kinds:
        if test(info.st_mode):
            raise GradingError(f"{path} is {what}, not a notebook file: hand in the .ipynb itself")
    if not stat.S_ISREG(info.st_mode):
        raise GradingError(f"{path} is not a regular file")
    if info.st_size > LARGEST_NOTEBOOK:
        raise GradingError(
            f"{path} is {info.st_size / 2**20:.0f} MiB, more than a notebook may be "
            f"({LARGEST_NOTEBOOK // 2**20} MiB): clear its outputs"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise GradingError(f"{path} cannot be read ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GradingError(f"{path} is not a regular file")
        data = handle.read(LARGEST_NOTEBOOK + 1)
    if len(data) > LARGEST_NOTEBOOK:
        raise GradingError(f"{path} grew past {LARGEST_NOTEBOOK // 2**20} MiB while read")
    return data


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
    return parse_notebook(path, read_submission(path, follow=True))


def _rows(name: str, exercises: list[Exercise], status: str, message: str, learner: str):
    return [Result(name, ex.id, status, message, 0.0, learner) for ex in exercises]


NOTEBOOK_TIMEOUT = 1800.0  # seconds: grading one notebook, at least (see notebook_limit)


def notebook_limit(timeout: float, notebook_timeout: float | None = None) -> float:
    """Seconds grading one notebook may take in all, its run and its checks: the teacher's
    ``--notebook-timeout``, else 30 minutes or 5 per-cell timeouts, whichever is longer.
    Past it, every exercise not yet decided is "timed out": a notebook of many slow cells
    cannot hold a class run for hours."""
    if notebook_timeout is not None:
        return float(notebook_timeout)
    return max(NOTEBOOK_TIMEOUT, 5 * timeout)


def _deadline(nb: nbformat.NotebookNode, exercises: int, timeout: float, limit: float) -> float:
    cells = sum(cell.cell_type == "code" for cell in nb.cells) + 1
    # each cell: its timeout, the probe, and a re-run of the notebook without a stuck cell
    return min(cells * (2 * timeout + 10) + exercises * (timeout + 10) + 300, limit)


def run_notebook(
    path: Path,
    timeout: float = 120,
    *,
    data: bytes | None = None,
    learner: str = "",
    isolated: bool | None = None,
    notebook_timeout: float | None = None,
) -> Run:
    """Execute and grade the notebook at ``path`` (its bytes: ``data``, read now if not
    given); ``isolated``: in the sandbox (by default, wherever it works);
    ``notebook_timeout``: seconds for all of it (:func:`notebook_limit`)."""
    if timeout <= 0:
        raise ValueError(f"the timeout must be a positive number of seconds, got {timeout}")
    if notebook_timeout is not None and not notebook_timeout > 0:
        raise ValueError(f"the notebook timeout must be positive, got {notebook_timeout}")
    path = Path(path)
    name = str(path)
    why = sandbox.isolation()
    isolated = why is None if isolated is None else isolated
    if isolated and why is not None:
        raise GradingError(f"no sandbox: {why}")
    empty = nbformat.v4.new_notebook()
    try:
        data = read_submission(path, follow=True) if data is None else data
        nb = parse_notebook(path, data)
    except GradingError as error:
        row = Result(name, "(notebook)", "error", str(error), 0.0, learner, isolated=isolated)
        return Run([row], empty)
    labels = exercise_ids(nb)
    exercises = required_exercises(path, labels)
    if not exercises:
        message = "no exercises found: no {exercise} block with :label: ex-<id> of the course"
        return Run([Result(name, "(none)", "error", message, 0.0, learner, isolated=isolated)], nb)
    present = {ex.id: ex.function for ex in exercises if ex.id in labels}
    start = time.monotonic()
    verdicts, notes, executed_json = {}, [], ""
    if present:
        submission = Submission(
            name=name,
            data=data,
            # a learner's own folder in a class; a notebook alone otherwise (the folder it
            # lies in may be the teacher's, or hold other learners' files)
            folder=path.parent if learner else None,
            filename=path.name if path.name.endswith(".ipynb") else "notebook.ipynb",
            exercises=present,
            timeout=float(timeout),
            deadline=_deadline(
                nb, len(present), timeout, notebook_limit(timeout, notebook_timeout)
            ),
            isolated=isolated,
        )
        verdicts, notes, executed_json = grade_submission(submission)
    elapsed = time.monotonic() - start
    executed = nb
    if executed_json:
        try:
            executed = nbformat.reads(executed_json, as_version=4)
        except Exception:
            pass
    results = []
    for ex in exercises:
        if ex.id not in labels:
            message = (
                f"the exercise block (:label: ex-{ex.id}) is not in the notebook: deleted "
                "or relabelled? Restore it from the course's exercises/ folder"
            )
            results.append(Result(name, ex.id, "missing", message, 0.0, learner))
            continue
        verdict = verdicts.get(ex.id)
        if verdict is None:
            results.append(Result(name, ex.id, "error", "the judge gave no verdict", 0, learner))
            continue
        message = verdict.message
        if verdict.status in ("error", "timed out") and notes:
            message += " (" + "; ".join(notes) + ")"
        results.append(
            Result(
                name,
                ex.id,
                verdict.status,
                message,
                verdict.seconds,
                learner,
                verdict.credit if verdict.status == "failed" else 0.0,
                verdict.misconception if verdict.status == "failed" else "",
            )
        )
    for result in results:
        result.isolated = isolated
        result.seconds = result.seconds or round(elapsed / len(results), 3)
    return Run(results, executed, notes)


def grade_notebook(
    path: Path, timeout: float = 120, notebook_timeout: float | None = None
) -> list[Result]:
    """Grade every exercise of the notebook at ``path`` (see the module docstring)."""
    return run_notebook(path, timeout, notebook_timeout=notebook_timeout).results


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as error:
        raise GradingError(f"{folder} cannot be read ({error.strerror})") from None


def expand(paths: list[str]) -> list[tuple[str, Path, bool]]:
    """``(learner, notebook, named)`` triples (``named``: the path was given, not found in a
    folder). A notebook stands for itself (learner ``""``); a folder of notebooks for the
    notebooks in it; a folder of folders is a class: each subfolder holding notebooks is one
    learner, named by the subfolder (see README, "Grading a class"). Inside folders nothing
    is followed: an entry named ``*.ipynb`` that is not a regular file (a link, a folder, a
    FIFO) is still listed, and gets its error row."""
    expanded: list[tuple[str, Path, bool]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            expanded.append(("", path, True))
            continue
        entries = _entries(path)
        notebooks = [e for e in entries if e.name.endswith(".ipynb")]
        learners = [
            e
            for e in entries
            if e.is_dir(follow_symlinks=False)
            and any(n.name.endswith(".ipynb") for n in _entries(Path(e.path)))
        ]
        if notebooks:
            expanded += [("", Path(e.path), False) for e in notebooks]
        elif learners:
            for folder in learners:
                for entry in _entries(Path(folder.path)):
                    if entry.name.endswith(".ipynb"):
                        expanded.append((folder.name, Path(entry.path), False))
        else:
            raise GradingError(f"{path} contains no notebooks (.ipynb files)")
    return expanded


def one_per_chapter(
    notebooks: list[tuple[str, Path, bool]], sources: dict[int, bytes | GradingError]
) -> dict[int, str]:
    """In a class, one notebook per learner and chapter counts, decided before any runs (a
    learner who hands in several copies must not get the best of their results): the one
    named as in ``exercises/`` (``02_numpy_forward.ipynb``), or the only one for that
    chapter. ``{index: why it is not graded}`` for each other notebook of the chapter (all
    of them when none has the chapter's name): its error row says so."""
    covers: dict[tuple[str, str], list[int]] = {}
    for index, (learner, path, _) in enumerate(notebooks):
        source = sources[index]
        if not learner or isinstance(source, GradingError):
            continue
        try:
            labels = exercise_ids(parse_notebook(path, source))
        except GradingError:
            continue  # (its own error row)
        for chapter in dict.fromkeys(ex.chapter for ex in required_exercises(path, labels)):
            covers.setdefault((learner, chapter), []).append(index)
    refused: dict[int, str] = {}
    for (learner, chapter), indices in covers.items():
        if len(indices) < 2:
            continue
        canonical = [i for i in indices if notebooks[i][1].name == f"{chapter}.ipynb"]
        names = ", ".join(notebooks[i][1].name for i in indices)
        for index in indices:
            if index in canonical or index in refused:
                continue
            if canonical:
                refused[index] = (
                    f"not graded: another notebook for chapter {chapter}; only {learner}'s "
                    f"{chapter}.ipynb counts (one notebook per learner and chapter)"
                )
            else:
                refused[index] = (
                    f"not graded: {len(indices)} notebooks for chapter {chapter} ({names}) "
                    f"and none named {chapter}.ipynb: hand in one, with that name"
                )
    return refused


def refuse_unisolated(allow_unisolated: bool) -> None:
    """:class:`GradingError` where there is no sandbox, unless ``allow_unisolated``."""
    why = sandbox.isolation()
    if why is not None and not allow_unisolated:
        raise GradingError(
            f"no sandbox to grade in: {why}. A class run (or --require-isolation) needs one; "
            "pass --allow-unisolated to grade anyway, as a self-check whose reports say they "
            "are not tamper-proof"
        )


def grade(
    paths: list[str],
    timeout: float = 120,
    jobs: int = 1,
    *,
    require_isolation: bool = False,
    allow_unisolated: bool = False,
    notebook_timeout: float | None = None,
) -> list[Result]:
    """Grade notebooks, folders of notebooks, or a class (see :func:`expand`). Every path is
    checked and read before any notebook runs; ``jobs`` notebooks are graded at a time. A
    class (learners' folders), or ``require_isolation``, needs the sandbox unless
    ``allow_unisolated``."""
    if timeout <= 0:
        raise GradingError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if notebook_timeout is not None and not notebook_timeout > 0:
        raise GradingError(f"--notebook-timeout must be positive, got {notebook_timeout:g}")
    notebooks = expand(paths)
    if require_isolation or any(learner for learner, _, _ in notebooks):
        refuse_unisolated(allow_unisolated)
    isolated = sandbox.isolation() is None
    sources: dict[int, bytes | GradingError] = {}
    for index, (_learner, path, named) in enumerate(notebooks):
        if named:
            read_notebook(path)  # a path the teacher typed: a wrong one stops here
        try:
            sources[index] = read_submission(path, follow=named)
        except GradingError as error:
            sources[index] = error

    for index, why in one_per_chapter(notebooks, sources).items():
        sources[index] = GradingError(why)

    def one(index: int) -> list[Result]:
        learner, path, _ = notebooks[index]
        source = sources[index]
        if isinstance(source, GradingError):
            row = Result(str(path), "(notebook)", "error", str(source), 0.0, learner)
            row.isolated = isolated
            return [row]
        try:
            return run_notebook(
                path,
                timeout,
                data=source,
                learner=learner,
                isolated=isolated,
                notebook_timeout=notebook_timeout,
            ).results
        except Exception as error:  # the grader's own failure on one notebook: its row only
            message = f"the grader failed on this notebook ({type(error).__name__}: {error})"
            row = Result(str(path), "(notebook)", "error", message[:500], 0.0, learner)
            row.isolated = isolated
            return [row]

    results: list[Result] = []
    if jobs <= 1:
        for index in range(len(notebooks)):
            results += one(index)
        return results
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each notebook: its own sandbox
        for found in pool.map(one, range(len(notebooks))):
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
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
    # invisible characters that reorder or hide text (bidirectional overrides and isolates,
    # zero-width characters, line and paragraph separators, the byte-order mark): a name
    # like "ada\u202egnp.exe" would show as another learner's, or as nothing at all
    "\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with control characters, what XML 1.0 cannot hold and the invisible
    characters that reorder or hide text (bidirectional controls, zero-width characters)
    written as ``\\xNN`` / ``\\uNNNN``: a learner's message or name can then go into a
    terminal, JUnit XML, Markdown and CSV as it is, and reads as what it is."""
    return _CONTROL.sub(_escaped, str(text))


def unisolated_warning(results: list[Result]) -> str | None:
    """The sentence every report carries when any result was graded without the sandbox."""
    if all(r.isolated for r in results):
        return None
    return NOT_TAMPER_PROOF.format(why=sandbox.isolation() or "it was turned off")


def markdown_text(text: str) -> str:
    """``text`` for one line of Markdown: control characters shown, line breaks made spaces,
    and every character Markdown or HTML gives a meaning to escaped (no heading, link, image,
    table cell or tag can come out of a learner's text)."""
    text = printable(str(text).replace("\n", " ").replace("\r", " "))
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~&:\"'=])", r"\\\1", text)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file in its folder, then a rename)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def summary_line(results: list[Result]) -> str:
    passed = sum(r.passed for r in results)
    counts = {status: sum(r.status == status for r in results) for status in SYMBOL}
    rest = ", ".join(f"{n} {status}" for status, n in counts.items() if n and status != "passed")
    line = f"{passed}/{len(results)} exercises passed" + (f" ({rest})" if rest else "")
    if any(0 < r.points < 1 for r in results):  # partial credit: say what it adds up to
        line += f"; {sum(r.points for r in results):.2f} of {len(results)} points"
    if unisolated_warning(results):
        line += " -- NOT TAMPER-PROOF (no sandbox)"
    return line


def format_table(results: list[Result], width: int = 100) -> str:
    """A plain-text table: exercise, notebook, status, message (wrapped)."""
    import textwrap

    def where(r: Result) -> str:
        name = f"{r.learner}/{Path(r.notebook).name}" if r.learner else Path(r.notebook).name
        return printable(name)

    rows = [("exercise", "notebook", "status", "message")]
    rows += [(r.exercise, where(r), SYMBOL[r.status], printable(r.message)) for r in results]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = sum(w) + 6
    lines = []
    warning = unisolated_warning(results)
    if warning:
        lines += textwrap.wrap(warning, width) + [""]
    for k, row in enumerate(rows):
        wrapped = textwrap.wrap(row[3], max(30, width - indent)) or [""]
        lines.append(f"{row[0]:<{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {wrapped[0]}")
        lines += [" " * indent + more for more in wrapped[1:]]
        if k == 0:
            lines.append("-" * min(width, indent + max(len(r[3]) for r in rows)))
    lines.append(summary_line(results))
    return "\n".join(lines)


def write_json(results: list[Result], path: Path) -> None:
    warning = unisolated_warning(results)
    data = {
        "passed": all(r.passed for r in results) and bool(results),
        "summary": summary_line(results),
        "points": round(sum(r.points for r in results), 4),
        "tamper_proof": warning is None,
        **({"warning": warning} if warning else {}),
        "results": [{**asdict(r), "points": round(r.points, 4)} for r in results],
    }
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def write_junit(results: list[Result], path: Path) -> None:
    """JUnit XML: one test suite per notebook, one test case per exercise; every text goes
    through :func:`printable` (ElementTree escapes the rest), so the file is valid XML
    whatever a message holds. Without the sandbox, every suite has a property
    ``tamper-proof=false`` and says why in its ``system-err``."""
    warning = unisolated_warning(results)
    suites = ET.Element(
        "testsuites",
        name="bncourse exercises" + (" (NOT TAMPER-PROOF)" if warning else ""),
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
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(
            properties, "property", name="tamper-proof", value="false" if warning else "true"
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
        if warning:
            ET.SubElement(suite, "system-err").text = warning
    ET.indent(suites)
    buffer = io.BytesIO()
    ET.ElementTree(suites).write(buffer, encoding="utf-8", xml_declaration=True)
    atomic_write(path, buffer.getvalue())


def write_markdown(results: list[Result], path: Path) -> None:
    """Append a Markdown table (e.g. to ``$GITHUB_STEP_SUMMARY``); learner text escaped."""
    lines = ["## Exercise results", ""]
    warning = unisolated_warning(results)
    if warning:
        lines += [f"> **{warning}**", ""]  # (the grader's own words)
    lines += [
        f"**{summary_line(results)}**",
        "",
        "| exercise | notebook | status | message |",
        "|---|---|---|---|",
    ]
    for r in results:
        where = f"{r.learner}/{Path(r.notebook).name}" if r.learner else Path(r.notebook).name
        lines.append(
            f"| `{r.exercise}` | {markdown_text(where)} | {EMOJI[r.status]} {r.status} | "
            f"{markdown_text(r.message)} |"
        )
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
    require_isolation: bool = False,
    allow_unisolated: bool = False,
    notebook_timeout: float | None = None,
) -> int:
    """The ``grade`` command: returns the exit status (0 only if every exercise passed).
    Every report is written after the last sandbox has ended."""
    try:
        if (gradebook_path or class_report_path) and not allow_unisolated:
            refuse_unisolated(False)
        results = grade(
            paths,
            timeout,
            jobs,
            require_isolation=require_isolation,
            allow_unisolated=allow_unisolated,
            notebook_timeout=notebook_timeout,
        )
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
    if gradebook_path:
        classroom.write_gradebook(results, Path(gradebook_path))
    if class_report_path:
        classroom.write_class_report(results, Path(class_report_path))
    if not results or not all(r.passed for r in results):
        return 1
    return 0 if all(r.isolated for r in results) or not require_isolation else 1
