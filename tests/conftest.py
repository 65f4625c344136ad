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


@pytest.fixture(scope="module", autouse=True)
def compiled_code_of_this_module_only():
    """Each test module starts with nothing compiled by ``torch.compile`` in its process
    (``compiled_bn.reset``, or ``torch._dynamo.reset``). What earlier modules compiled stays
    cached on their functions and modules (``nn.Module.__call__`` among them), and every later
    compile went through it: in one process after tests/test_torch_bn.py, tests/test_triton_bn.py's
    three ``torch.compile`` tests took 77 s, and 4 s with this reset."""
    compiled_bn = sys.modules.get("bncourse.compiled_bn")
    if compiled_bn is not None:
        compiled_bn.reset()
    elif "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()
    yield


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


# Tests of seconds each on a quiet machine (a compilation, a grader run, a process group),
# marked ``slow`` here, so that ``course.py test --fast`` (``-m "not slow"``) stays a quick
# loop of under 3 minutes; the whole suite runs them. (Modules and tests that execute
# notebooks, build the book or drive the browser carry the mark themselves.)
SLOW = (
    "tests/test_batchnorm_interface.py::test_modules_match_torch_nn_over_many_steps",
    "tests/test_batchnorm_interface.py::test_pytorch_module_inputs[compiled_bn",
    "tests/test_compiled_bn.py::test_generated_code_matches_torch_nn_over_steps",
    "tests/test_compiled_bn.py::test_no_cpp_compiler_warns_once_and_runs_eager",
    "tests/test_compiled_bn.py::test_split_reduction_compiled_equals_torch_nn",
    "tests/test_compiled_bn.py::test_the_compiled_passes_run_and_agree_with_eager_formulas",
    "tests/test_compiled_bn.py::test_under_a_path_with_a_space",
    "tests/test_distributed.py::test_a_sync_bn_training_step_starts_three_collectives",
    "tests/test_distributed.py::test_sync_bn_equals_one_bn_over_the_global_batch",
    "tests/test_grader.py::test_a_dead_kernel",
    "tests/test_grader.py::test_a_wrong_answer_fails",
    "tests/test_grader.py::test_an_infinite_loop",
    "tests/test_grader.py::test_an_invalid_notebook",
    "tests/test_grader.py::test_cells_tagged_grader_skip",
    "tests/test_grader.py::test_refuses_what_is_not_a_notebook",
    "tests/test_grader.py::test_the_command_reports",
    "tests/test_grading_robustness.py",
    "tests/test_notebooks.py::test_nbval_fails_what_differs",
    "tests/test_torch_bn.py::test_an_eval_forward_keeps_its_backward",
    "tests/test_torch_bn.py::test_torch_compile_of_a_model_holding_ours",
    "tests/test_triton_bn.py::test_every_launch_compiles_for_an_h100",
    "tests/test_triton_bn.py::test_importing_sets_nothing",
    "tests/test_triton_bn.py::test_torch_compile_with_fullgraph",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, prefix in enumerate(FIRST) if item.nodeid.startswith(prefix)), len(FIRST)
        )

    items.sort(key=rank)  # stable: the order within each rank is pytest's
