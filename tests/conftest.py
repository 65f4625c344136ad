"""Shared test configuration and fixtures.

* Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with
  enough examples to cover shapes of 2 to 5 dimensions and every option combination. (A
  machine without hypothesis can still run the tests that do not use it, such as
  tests/test_triton_bn.py on a GPU machine.)
* ``built_book``: the book built once per test session, strictly, into a temporary folder,
  from the outputs committed with the notebooks (nbval re-executes them: conftest.py);
  used by the build test and the browser tests. While developing the browser tests,
  ``BNCOURSE_REUSE_BOOK=DIR`` points the fixture at a book already built into ``DIR/_build``
  instead (CI never sets it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course import BOOK_BUILD  # noqa: E402  (the one definition of the strict build)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the course's environment always has it
    settings = None

if settings is not None:
    settings.register_profile(
        "course",
        derandomize=True,
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))


@dataclass
class BuiltBook:
    """The result of ``jupyter-book build . -W -n --keep-going`` into a fresh folder."""

    returncode: int
    log: str
    html: Path


def run_jupyter_book(arguments: list[str], out: Path) -> subprocess.CompletedProcess:
    """This environment's ``jupyter-book *arguments --path-output out``, run from the project
    root with its output captured: the suite's two builds, the HTML one (``built_book``) and
    the PDF one (tests/test_pdf.py, through the ``jupyter_book`` fixture)."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("jupyter-book")),
            *arguments,
            "--path-output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.fixture(scope="session")
def jupyter_book():
    """:func:`run_jupyter_book`, for test modules (which cannot import a conftest)."""
    return run_jupyter_book


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> BuiltBook:
    reuse = os.environ.get("BNCOURSE_REUSE_BOOK")  # development only: a folder holding _build/html
    if reuse:
        return BuiltBook(0, "(reused)", Path(reuse) / "_build" / "html")
    out = tmp_path_factory.mktemp("book")
    result = run_jupyter_book(BOOK_BUILD, out)
    return BuiltBook(result.returncode, result.stdout + result.stderr, out / "_build" / "html")


# --------------------------------------------------------------------------------------------
# Scheduling on several cores (pytest-xdist, `-n auto` in pyproject.toml)
# --------------------------------------------------------------------------------------------
# The longest work goes first, in this order (``--no-loadscope-reorder`` in pyproject.toml keeps
# it), so that no worker is left running one of them at the end: the book build and the browser
# tests (one group, about 3 minutes on one worker), chapter 7 under nbval (about 100 s), the
# PDF (its own group), chapter 5 (torch.compile), the Colab-like run, then the other chapters
# and the exercise notebooks (seconds each: the grader skips the long demonstrations).
FIRST = (
    "tests/test_book.py",
    "tests/test_site.py",
    "notebooks/07_bn_in_training.ipynb",
    "tests/test_pdf.py",
    "notebooks/05_pytorch_module.ipynb",
    "tests/test_colab.py",
    "notebooks/",
    "tests/test_notebooks.py::test_generated",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, prefix in enumerate(FIRST) if item.nodeid.startswith(prefix)), len(FIRST)
        )

    items.sort(key=rank)  # stable: the order within each rank is pytest's
