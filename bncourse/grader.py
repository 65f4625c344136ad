"""The grader's public names, kept where the chapters' tests and tools import them.

The grading code lives in :mod:`bncourse.grading` (the command line and reports in
:mod:`bncourse.grading.cli`; the design in the package's docstring).
"""

from __future__ import annotations

from .grading.cli import (
    NOT_TAMPER_PROOF,
    SYMBOL,
    GradingError,
    Result,
    Run,
    exercise_ids,
    expand,
    format_table,
    grade,
    grade_notebook,
    main,
    printable,
    read_notebook,
    required_exercises,
    run_notebook,
    summary_line,
    write_json,
    write_junit,
    write_markdown,
)

__all__ = [
    "NOT_TAMPER_PROOF",
    "SYMBOL",
    "GradingError",
    "Result",
    "Run",
    "exercise_ids",
    "expand",
    "format_table",
    "grade",
    "grade_notebook",
    "main",
    "printable",
    "read_notebook",
    "required_exercises",
    "run_notebook",
    "summary_line",
    "write_json",
    "write_junit",
    "write_markdown",
]
