"""Learner notebooks: ``exercises/`` generated from the chapters in ``notebooks/``.

A chapter notebook holds each exercise as (see CONTRIBUTING.md)::

    markdown  ```{exercise} Title            <- kept: the statement
              :label: ex-<exercise id>
    markdown  ```{solution-start} ex-<id>    <- removed
    code      def f(...):                     <- kept, with the region between
                  \"\"\"docstring\"\"\"             ### BEGIN SOLUTION and ### END SOLUTION
                  ### BEGIN SOLUTION              replaced by raise NotImplementedError(...)
                  ...
                  ### END SOLUTION
    markdown  ```{solution-end}              <- removed
    code      check("<id>", f)                <- kept

Everything else (the chapter's prose and demonstrations) is kept, every output is cleared,
and a short note on how to work and grade is put at the top. The prose is turned from the
book's MyST into plain Markdown (:mod:`bncourse.plain_markdown`): a learner opens these
notebooks in Jupyter or Colab, which would show directives and roles raw. Markdown between
``solution-start`` and ``solution-end`` (solution prose) and plain ``{solution}`` blocks are
removed. The transformation is a pure function of the chapter notebook, so generating twice
gives identical files, and a test fails when ``exercises/`` is out of sync.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from .notebooks import normalize
from .plain_markdown import Labels, collect_labels, leftover_markup, to_markdown

__all__ = [
    "BEGIN",
    "END",
    "stub_source",
    "make_exercise_notebook",
    "check_folders",
    "is_generated",
    "write_exercises",
    "out_of_sync",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
SOLUTION_START = re.compile(r"^\s*(```+|:::+)\{solution-start\}\s*(\S+)")
SOLUTION_END = re.compile(r"^\s*(```+|:::+)\{solution-end\}")
SOLUTION_BLOCK = re.compile(r"^(```+|:::+)\{solution\}.*?^\1\s*$\n?", re.S | re.M)
NOTE_ID = "bncourse-exercise-note"
PREDICTION = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)")  # name = ..., name: T = ...


def stub_source(source: str, exercise_id: str) -> str:
    """Replace each BEGIN/END SOLUTION region of a code cell by a NotImplementedError stub.

    The stub is indented like the ``### BEGIN SOLUTION`` line, so a region inside a function
    body keeps the ``def`` line and the docstring above it intact. A region at the cell's top
    level is a prediction's (``predicted_std = 1.0171``): each variable it assigns becomes
    ``predicted_std = None``, which the check reports as not attempted, and the cells after
    it still run.
    """
    out: list[str] = []
    inside = False
    top_level = False  # a prediction's region: assignments at the cell's top level
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{exercise_id}: nested '{BEGIN}'")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            top_level = not indent
            if not top_level:
                out.append(
                    f'{indent}raise NotImplementedError("{exercise_id}: write your solution here")'
                )
        elif stripped == END:
            if not inside:
                raise ValueError(f"{exercise_id}: '{END}' without '{BEGIN}'")
            inside = False
        elif inside and top_level:
            assigned = PREDICTION.match(line)
            if assigned:
                out.append(f"{assigned.group(1)} = None  # {exercise_id}: your prediction here")
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{exercise_id}: '{BEGIN}' without '{END}'")
    return "\n".join(out)


def _note(chapter: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(
        f"> **Exercise notebook**, generated from `notebooks/{chapter}.ipynb` by "
        f"`python -m bncourse make-exercises`. Each exercise's function raises "
        f"`NotImplementedError`: replace that line with your code and run the check cell "
        f"below it. Grade the whole notebook with "
        f"`python -m bncourse grade exercises/{chapter}.ipynb`."
    )
    cell["id"] = NOTE_ID
    return cell


ROOT = Path(__file__).resolve().parents[1]


def make_exercise_notebook(
    nb: nbformat.NotebookNode, chapter: str, labels: Labels | None = None
) -> nbformat.NotebookNode:
    """The learner version of chapter notebook ``nb`` (a new notebook; ``nb`` is unchanged).

    ``labels``: what the chapter's cross-references point at (by default, collected from
    the repository this package is in)."""
    if labels is None:
        labels = collect_labels(ROOT)
    counter = [0]  # the chapter's exercises so far, numbered as in the book
    cells = []
    solution: str | None = None  # the exercise id whose solution we are inside
    for cell in nb.cells:
        source = cell.source
        if cell.cell_type == "markdown":
            start = SOLUTION_START.match(source)
            if start:
                if solution is not None:
                    raise ValueError(f"{chapter}: solution-start inside the solution of {solution}")
                solution = start.group(2).removeprefix("ex-")
                continue
            if SOLUTION_END.match(source):
                if solution is None:
                    raise ValueError(f"{chapter}: solution-end without solution-start")
                solution = None
                continue
            if solution is not None:
                continue  # solution prose
            without = SOLUTION_BLOCK.sub("", source)
            if without != source:  # a plain {solution} block: drop it, and the cell if empty
                source = without.strip()
                if not source:
                    continue
            source = to_markdown(source, chapter, labels, counter)
            leftover = leftover_markup(source)
            if leftover:
                raise ValueError(
                    f"{chapter}: MyST markup with no plain-Markdown rule "
                    f"(bncourse/plain_markdown.py): {leftover}"
                )
            new = nbformat.v4.new_markdown_cell(source)
        elif cell.cell_type == "code":
            if solution is not None:
                source = stub_source(source, solution)
            new = nbformat.v4.new_code_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        if "id" in cell:
            new["id"] = cell["id"]
        if "tags" in cell.metadata:
            new.metadata["tags"] = list(cell.metadata["tags"])
        cells.append(new)
    if solution is not None:
        raise ValueError(f"{chapter}: the solution of {solution} is never closed")
    out = nbformat.v4.new_notebook()
    out.cells = cells[:1] + [_note(chapter)] + cells[1:]  # the title, then how to work here
    return normalize(out)


def _render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def _expected(source_dir: Path) -> dict[str, str]:
    """File name -> the exercise notebook's text, for every chapter in ``source_dir``."""
    expected = {}
    labels = collect_labels(Path(source_dir).resolve().parent)
    for path in sorted(Path(source_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        expected[path.name] = _render(make_exercise_notebook(nb, path.stem, labels))
    return expected


def is_generated(path: Path) -> bool:
    """Whether ``path`` is a notebook this module wrote: one holding the note cell that
    :func:`make_exercise_notebook` puts at the top (cell id ``NOTE_ID``). A learner's own
    notebook, a chapter, or a file that is not a notebook at all is not."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # not JSON, not a notebook, unreadable: not ours
        return False
    return any(cell.get("id") == NOTE_ID for cell in nb.get("cells", []))


def check_folders(source_dir: Path, target_dir: Path) -> None:
    """A ``ValueError`` saying why generating ``target_dir`` from ``source_dir`` would lose
    work, found before anything is written: the source is not a folder or holds no chapter
    notebook (every exercise notebook would then count as stale), the target is the source or
    a folder inside it (the chapters would lose their solutions), or the target is a file."""
    source, target = Path(source_dir), Path(target_dir)
    if not source.is_dir():
        raise ValueError(f"--source {source_dir} is not a folder of chapter notebooks")
    if not any(source.glob("*.ipynb")):
        raise ValueError(f"--source {source_dir} holds no chapter notebooks (*.ipynb)")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--target {target_dir} is a file, not a folder")
    source, target = source.resolve(), target.resolve()
    if target == source or source in target.parents:
        raise ValueError(
            f"--target {target_dir} is the --source folder {source_dir} or inside it: the "
            "exercise notebooks would replace the chapters, solutions lost"
        )


def write_exercises(source_dir: Path, target_dir: Path) -> list[Path]:
    """(Re)write ``target_dir`` from ``source_dir``; remove exercise notebooks with no chapter.

    Only notebooks this module wrote (:func:`is_generated`) are replaced or removed: a
    ``ValueError`` (before anything is written) if a chapter's name in ``target_dir`` is taken
    by another notebook, and a learner's own notebook there is left alone."""
    check_folders(source_dir, target_dir)
    target_dir = Path(target_dir)
    expected = _expected(source_dir)
    foreign = [
        name
        for name in expected
        if (target_dir / name).exists() and not is_generated(target_dir / name)
    ]
    if foreign:
        raise ValueError(
            f"refusing to overwrite {', '.join(str(target_dir / n) for n in foreign)}: not an "
            "exercise notebook written by make-exercises (move it away first)"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    for stale in target_dir.glob("*.ipynb"):
        if stale.name not in expected and is_generated(stale):
            stale.unlink()
    written = []
    for name, text in expected.items():
        path = target_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def out_of_sync(source_dir: Path, target_dir: Path) -> list[str]:
    """Names of exercise notebooks that are missing, stale or have no chapter any more."""
    expected = _expected(source_dir)
    target_dir = Path(target_dir)
    problems = []
    for name, text in expected.items():
        path = target_dir / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text() != text:
            problems.append(f"{name}: differs from what notebooks/{name} generates")
    for path in sorted(target_dir.glob("*.ipynb")):
        if path.name not in expected:
            problems.append(f"{path.name}: has no chapter in notebooks/")
    return problems
