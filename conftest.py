"""pytest's configuration for every run in this repository: the chapters under nbval.

The chapters in ``notebooks/`` are committed with their outputs, and nbval checks them: it
executes each notebook in a fresh kernel from the notebook's folder, cell by cell, and fails a
cell whose outputs differ from the committed ones (strict mode: every text output, stream and
error; images only by their presence, since their bytes change with library versions). The
suite runs it on ``notebooks/`` (``testpaths`` and ``addopts`` in pyproject.toml), and so does
a plain ``pytest --nbval notebooks/``. This file adapts it to the suite:

* the only outputs allowed to differ are the ones :data:`SANITIZE` masks (memory addresses)
  and cells tagged ``nbval-ignore-output``, which only timings may carry (tests/test_project.py);
* the cells of one notebook are one xdist group, so that one worker runs them in order, in one
  kernel; they are ``slow`` (``course.py test --fast`` skips them);
* TorchInductor compiles into a cache of the run's own (``TORCHINDUCTOR_CACHE_DIR``, one
  folder per worker), removed when the run ends; where that variable is already set, the
  workers use a sub-folder of it each, which stays;
* with ``BNCOURSE_PERTURB_WEIGHTS`` set (CI's second CPU configuration, ``.ci/run``), every
  kernel starts with an IPython startup file that multiplies every initial weight that
  :func:`bncourse.training.init_weights` draws (every model chapter 7 trains) by
  ``1 + scale * z``: a stand-in for the last-bit differences of another machine, which a
  chaotic training run would grow into another printed number (chapter 7, "Why float64").

Several workers share the cores (pytest-xdist): each, and every kernel or process a test
starts, then computes on one thread. Two workers with two OpenMP threads each would make four
threads spin for two cores, which measurably slowed everything down. (A run in one process
keeps PyTorch's default; ``.ci/run`` re-runs the chapters with two threads.)
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest

INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR"
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:  # (set by xdist in its workers)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # TorchInductor's disk cache: one per worker (and the kernels it starts), inside the
    # run's own folder (pytest_configure). Two processes compiling the same passes at once
    # (chapter 5 under nbval, tests/test_compiled_bn.py) shared one cache folder, and a test
    # then ran code that computed garbage.
    os.environ[INDUCTOR_CACHE] = os.path.join(
        os.environ.get(INDUCTOR_CACHE) or tempfile.gettempdir(),
        f"worker-{os.environ['PYTEST_XDIST_WORKER']}",
    )

ROOT = Path(__file__).resolve().parent
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
PERTURB = "BNCOURSE_PERTURB_WEIGHTS"

PERTURBING_STARTUP = """\
# conftest.py: {variable}={scale!r} (every initial weight times 1 + scale * z)
def _perturb_initial_weights(scale):
    import functools

    import bncourse.training as training

    unperturbed = training.init_weights

    @functools.wraps(unperturbed)  # __wrapped__: the unperturbed function, for the suite's check
    def init_weights(model, init_scale=1.0, seed=0):
        return training.perturb(unperturbed(model, init_scale, seed), scale, seed=seed + 1)

    training.init_weights = init_weights


try:
    _perturb_initial_weights({scale!r})
except BaseException:  # a kernel that runs unperturbed must not pass: end it, loudly
    import os, traceback

    traceback.print_exc()
    os._exit(70)
del _perturb_initial_weights
"""


def perturbing_ipython_dir(scale: str, folder: Path) -> Path:
    """An IPython directory under ``folder`` whose startup file perturbs the initial weights
    (see the module docstring); point ``IPYTHONDIR`` at it before a kernel starts. A startup
    file that fails ends its kernel, so that no notebook runs unperturbed by mistake."""
    value = float(scale)
    if not math.isfinite(value):
        raise ValueError(f"{PERTURB} must be a finite number, got {scale!r}")
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-perturb-weights.py").write_text(
        PERTURBING_STARTUP.format(variable=PERTURB, scale=value)
    )
    return folder


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ and not os.environ.get(INDUCTOR_CACHE):
        # A TorchInductor cache of this run's own, removed after it: one kept from an earlier
        # run (of other code, or of a run beside this one) once gave a test a kernel that
        # aborted the process; a fresh cache is also what CI and a new clone start from
        cache = tempfile.mkdtemp(prefix="bncourse-inductor-")
        os.environ[INDUCTOR_CACHE] = cache  # the workers started after this inherit it
        config.add_cleanup(functools.partial(shutil.rmtree, cache, ignore_errors=True))
    if getattr(config.option, "nbval_sanitize_with", "unset") is None:
        config.option.nbval_sanitize_with = str(SANITIZE)
    scale = os.environ.get(PERTURB)
    if scale:
        folder = Path(tempfile.mkdtemp(prefix="bncourse-ipython-"))
        os.environ["IPYTHONDIR"] = str(perturbing_ipython_dir(scale, folder))
        config.add_cleanup(functools.partial(shutil.rmtree, folder, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":  # a cell that nbval runs
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(item.path.name))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than there are cores. About half of the suite's wall time
    is waiting (the timeouts the grader's tests wait out on purpose, processes starting, a
    browser loading pages), which a worker that waits does not use; the extra one does."""
    return (os.cpu_count() or 1) + 1
