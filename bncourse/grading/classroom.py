"""For teachers: a class's gradebook and the misconceptions to reteach.

A class is a folder of submissions, one subfolder per learner holding that learner's
exercise notebooks (named as in ``exercises/``: ``02_numpy_forward.ipynb``, ...)::

    submissions/
      ada/01_what_batchnorm_does.ipynb  ada/02_numpy_forward.ipynb
      ben/02_numpy_forward.ipynb
      ...

``python -m bncourse grade submissions/ --gradebook grades.csv --class-report class.md``
grades every notebook (each in its own processes, ``--jobs N`` at a time) and writes:

* :func:`write_gradebook`: a CSV with a row per learner, one column per exercise (1 point for
  a pass; for a failed answer to an exercise with independent parts, such as ``dx``,
  ``dgamma`` and ``dbeta``, the fraction of the parts that are right, to 2 decimals; 0
  otherwise, and for an exercise of a chapter the learner did not hand in), the total and the
  maximum -- plain comma-separated UTF-8 that spreadsheets and LMS import;
* :func:`write_class_report`: Markdown that lists, per exercise, how many learners passed and
  the misconceptions the checkers named across the class, most frequent first, each with a
  link to the book section that teaches it (the exercise's chapter, at the exercise).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["BOOK_URL", "misconception", "write_gradebook", "write_class_report"]

BOOK_URL = "https://bncourse.github.io/batchnorm-course"
"""Where the book is published (the links of the class report)."""


def misconception(result: Any) -> str | None:
    """The misconception of a failed result: the field the judge set (never read out of the
    message, which may quote the learner), else what kind of failure it is; else None."""
    if result.status != "failed":
        return None
    return getattr(result, "misconception", "") or "a wrong answer the checker does not name"


def csv_cell(value: Any) -> str:
    """A spreadsheet cell that stays text and shows what it holds: control and invisible
    characters escaped (:func:`.cli.printable`), and one starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return (a formula to Excel, LibreOffice and Sheets) gets a
    leading ``'``."""
    from .cli import printable

    text = printable(str(value))  # (no bidirectional override or zero-width character)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _learner(result: Any) -> str:
    return result.learner or str(Path(result.notebook).parent.name or "learner")


def _points(value: float) -> str:
    """``1``, ``0`` or ``0.67``: whole points without decimals, a part to 2 decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def write_gradebook(results: list[Any], path: Path) -> None:
    """The gradebook CSV (see the module docstring)."""
    from ..checks import EXERCISES

    seen = {r.exercise for r in results if r.exercise in EXERCISES}
    columns = [ex_id for ex_id in EXERCISES if ex_id in seen]
    learners: dict[str, dict[str, float]] = {}
    for result in results:
        row = learners.setdefault(_learner(result), {})
        if result.exercise in EXERCISES:
            row[result.exercise] = max(row.get(result.exercise, 0.0), result.points)
    from .cli import atomic_write, unisolated_warning

    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    warning = unisolated_warning(results)
    if warning:
        writer.writerow([csv_cell("# " + warning)])
    writer.writerow(["learner", *columns, "total", "max"])
    for learner in sorted(learners):
        points = [learners[learner].get(ex_id, 0.0) for ex_id in columns]
        row = [learner, *map(_points, points), _points(sum(points)), len(columns)]
        writer.writerow([csv_cell(cell) for cell in row])
    atomic_write(path, handle.getvalue().encode("utf-8"))


def write_class_report(results: list[Any], path: Path, book_url: str = BOOK_URL) -> None:
    """The class report in Markdown (see the module docstring)."""
    from ..checks import EXERCISES
    from .cli import atomic_write, markdown_text, unisolated_warning

    lines = ["# Class report", ""]
    warning = unisolated_warning(results)
    if warning:
        lines += [f"> **{warning}**", ""]  # (the grader's own words)
    learners = sorted({_learner(r) for r in results})
    lines += [f"{len(learners)} learners: {', '.join(map(markdown_text, learners))}.", ""]
    by_exercise: dict[str, list[Any]] = {}
    for result in results:
        by_exercise.setdefault(result.exercise, []).append(result)
    ranked = []
    for ex_id, group in by_exercise.items():
        causes = Counter(c for c in map(misconception, group) if c)
        ranked.append((-sum(causes.values()), ex_id, group, causes))
    ranked.sort(
        key=lambda item: (item[0], list(EXERCISES).index(item[1]) if item[1] in EXERCISES else 0)
    )
    lines += ["| exercise | passed | failed | not attempted | other |", "|---|---|---|---|---|"]
    for _, ex_id, group, _ in ranked:
        statuses = Counter(r.status for r in group)
        other = len(group) - statuses["passed"] - statuses["failed"] - statuses["not attempted"]
        lines.append(
            f"| `{ex_id}` | {statuses['passed']} | {statuses['failed']} | "
            f"{statuses['not attempted']} | {other} |"
        )
    lines += ["", "## Misconceptions to reteach, most frequent first", ""]
    for _, ex_id, group, causes in ranked:
        if not causes:
            continue
        ex = EXERCISES.get(ex_id)
        title = f"{ex.title} (`{ex_id}`)" if ex else f"`{ex_id}`"
        lines.append(f"### {title}")
        if ex:
            link = f"{book_url}/notebooks/{ex.chapter}.html#ex-{ex_id}"
            lines.append(
                f"Reteach: [{ex.chapter}, the exercise and the sections before it]({link})"
            )
        lines.append("")
        for cause, count in causes.most_common():
            who = sorted({_learner(r) for r in group if misconception(r) == cause})
            names = ", ".join(map(markdown_text, who))
            lines.append(f"- **{count}** x {cause} ({names})")  # (the checker's own words)
        lines.append("")
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------------
# GitHub Classroom: the autograding workflow
# --------------------------------------------------------------------------------------------
def passed(exercise_id: str, report: Path) -> tuple[bool, str]:
    """Whether ``exercise_id`` passed in a ``grade --json`` report, and its message."""
    import json

    for result in json.loads(Path(report).read_text())["results"]:
        if result["exercise"] == exercise_id:
            return result["status"] == "passed", f"{result['status']}: {result['message']}"
    return False, f"{exercise_id} is not in {report}"


COURSE_REPOSITORY = "bncourse/batchnorm-course"  # _config.yml's repository (a test checks)
COURSE_REF = "main"  # the course's branch, tag or commit whose grader the workflow runs
GRADER_COPY = ".course-grader"  # where the workflow checks it out, beside the learner's files


def classroom_workflow(repository: str = COURSE_REPOSITORY, ref: str = COURSE_REF) -> str:
    """``.github/workflows/classroom.yml``: GitHub Classroom's autograding convention (one
    ``education/autograding-command-grader`` step per exercise, worth one point, then the
    ``autograding-grading-reporter``), after one step that grades ``exercises/`` once.

    The grader (and its requirements) is the course's own, checked out from ``repository``
    at ``ref``, not the learner's copy of ``bncourse/``; Python runs it isolated (``-I``: the
    learner's folder is not on its path). The learner can still edit this workflow in their
    repository: Classroom's points are a self-check, only as trustworthy as that repository
    (the README says so); a grade that counts is the teacher's own class run."""
    from ..checks import EXERCISES

    steps = []
    for ex in EXERCISES.values():
        steps.append(
            f"""      - name: {ex.id}
        id: {ex.id}
        uses: education/autograding-command-grader@v1
        with:
          test-name: {ex.id}
          command: python -I -m bncourse.grading.classroom --passed {ex.id} grade-report.json
          timeout: 1
          max-score: 1
"""
        )
    names = ",".join(EXERCISES)
    results = "".join(
        f'          {ex.id.upper()}_RESULTS: "${{{{steps.{ex.id}.outputs.result}}}}"\n'
        for ex in EXERCISES.values()
    )
    return f"""# GitHub Classroom autograding, generated by
#   python -m bncourse.grading.classroom --workflow > .github/workflows/classroom.yml
# The grader runs once over exercises/ (every notebook isolated, as in grade.yml); then one
# command-grader step per exercise turns its verdict into a point, and the reporter sends the
# points to GitHub Classroom. Regenerate when exercises are added (a test checks it is in sync).
#
# The grader is the course's own: {repository} at {ref}, checked out into
# {GRADER_COPY}/ (not the learner's copy of bncourse/) and run with `python -I`, so that the
# learner's folder is not on its path: only exercises/ is taken from the learner. Pin a tag
# or commit of the course for reproducible grades (classroom_workflow(ref=...)).
# Still, this file lives in the learner's repository and the learner can edit it: these
# points are a self-check, only as trustworthy as that repository. A grade that counts is
# the teacher's own run (python -m bncourse grade submissions/ --gradebook grades.csv).
name: Autograding Tests

on:
  push:
  repository_dispatch:
  workflow_dispatch:

permissions:
  checks: write
  actions: read
  contents: read

jobs:
  run-autograding-tests:
    runs-on: ubuntu-latest
    if: github.actor != 'github-classroom[bot]'
    timeout-minutes: 40
    steps:
      - uses: actions/checkout@v4

      - name: Check out the course's grader (not the learner's copy of it)
        uses: actions/checkout@v4
        with:
          repository: {repository}
          ref: {ref}
          path: {GRADER_COPY}

      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
          cache: pip
          cache-dependency-path: {GRADER_COPY}/requirements.txt

      - name: Install the course's pinned requirements and grader (CPU build of PyTorch)
        run: |
          python -m pip install --upgrade pip
          python -m pip install -r {GRADER_COPY}/requirements.txt --extra-index-url https://download.pytorch.org/whl/cpu
          python -m pip install --no-deps -e {GRADER_COPY}

      - name: Install the grader's sandbox (bubblewrap)
        run: |
          sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap
          # Ubuntu 24.04 lets only profiled programs make user namespaces: allow bwrap's
          sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 || true

      - name: Grade exercises/
        run: python -I -m bncourse grade exercises --json grade-report.json || true

{"".join(steps)}
      - name: Autograding Reporter
        uses: education/autograding-grading-reporter@v1
        env:
{results}        with:
          runners: {names}
"""


def main(argv: list[str] | None = None) -> int:
    """``--workflow``: print the Classroom workflow; ``--passed ID REPORT``: exit 0 only if
    exercise ID passed in the JSON report (the command of each autograding step)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--workflow"]:
        print(classroom_workflow(), end="")
        return 0
    if len(argv) == 3 and argv[0] == "--passed":
        ok, message = passed(argv[1], Path(argv[2]))
        print(message)
        return 0 if ok else 1
    print("usage: python -m bncourse.grading.classroom --workflow | --passed ID REPORT.json")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
