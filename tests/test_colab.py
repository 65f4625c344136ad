"""A learner on Colab: the exercise notebook's first cell installs the course, then it runs.

Colab opens one notebook, with its own Python that has torch, numpy, matplotlib,
scikit-learn and ipykernel preinstalled and no ``bncourse``. The first code cell of every
chapter (and so of every exercise notebook) installs ``bncourse`` from the repository set in
``_config.yml`` (``repository.url``; tests/test_project.py checks that the two agree). Here a
fresh virtual environment holds only what Colab preinstalls (from the package index pip is
configured with), the install cell's URL is pointed at this checkout (``git+file://``: the
committed tree, as GitHub would serve it), and chapter 2's exercise notebook runs in that
environment's kernel from its first cell on: the install must succeed, and every exercise
must report "not attempted yet" (the stubs), nothing else.

About 5 minutes on two busy cores (most of it installing torch); marked slow, and bounded.
``BNCOURSE_REUSE_COLAB_ENV=DIR`` (development only) reuses the environment a run left in
``DIR`` (its ``bin/python``), after uninstalling ``bncourse`` from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "exercises" / "02_numpy_forward.ipynb"
COLAB_PREINSTALLED = ["torch", "numpy", "matplotlib", "scikit-learn", "ipykernel"]
INSTALL_TIMEOUT = 900  # seconds, torch included
CELL_TIMEOUT = 300  # seconds per cell; the install cell is the slowest

pytestmark = pytest.mark.slow


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _committed() -> bool:
    status = subprocess.run(
        [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "bncourse",
            "pyproject.toml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return status.returncode == 0 and status.stdout.strip() == ""


def run_python(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` run by the environment's ``python`` in ``cwd``, without this checkout on
    PYTHONPATH (Colab's working folder holds nothing of the course)."""
    return subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


@pytest.fixture(scope="module")
def colab_python(tmp_path_factory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("the install cell is run against this checkout's git history; none here")
    outside = tmp_path_factory.mktemp("outside")  # a folder without the course in it
    reuse = os.environ.get("BNCOURSE_REUSE_COLAB_ENV")
    if reuse:
        python = Path(reuse) / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "uninstall", "--quiet", "-y", "bncourse"],
            capture_output=True,
            cwd=outside,
        )
        return python
    folder = tmp_path_factory.mktemp("colab")
    venv.create(folder / "env", with_pip=True, clear=True)
    python = folder / "env" / ("Scripts" if os.name == "nt" else "bin") / "python"
    wanted = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if name in COLAB_PREINSTALLED and "==" in line:
            wanted[name] = line.split(";")[0].strip()  # the tested pins, as Colab has its own
    packages = [wanted.get(name, name) for name in COLAB_PREINSTALLED]
    install = subprocess.run(
        # --no-compile: Python compiles what is imported when it is imported; pip's byte-
        # compiling every file of torch took most of this step (torch alone: 54 s, 21 s without)
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *packages],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    missing = run_python(
        python, "import importlib.util; print(importlib.util.find_spec('bncourse'))", outside
    )
    assert missing.stdout.strip() == "None", "the fresh environment must not have bncourse"
    return python


def test_the_install_cell_installs_from_the_configured_repository():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert f"git+{repository_url()}" in first.source, first.source


def test_chapter_2_runs_from_its_install_cell_in_a_colab_like_environment(colab_python, tmp_path):
    if not _committed():
        pytest.skip("bncourse/ has uncommitted changes: the install takes the committed tree")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    here = f"git+file://localhost{ROOT}"  # (pip 23 refuses file:/// with an empty host)
    first.source = first.source.replace(f"git+{repository_url()}", here)
    assert here in first.source
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(colab_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Colab-like",
                "language": "python",
            }
        )
    )
    work = tmp_path / "content"  # Colab's working folder: nothing of the course in it
    work.mkdir()
    environment = {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter")}
    environment.pop("PYTHONPATH", None)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        NotebookClient(
            nb,
            kernel_name="colab",
            timeout=CELL_TIMEOUT,
            allow_errors=True,
            resources={"metadata": {"path": str(work)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [
        (cell.source.splitlines()[0], output.get("ename"), output.get("evalue"))
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    installed = "".join(o.get("text", "") for o in first.outputs)
    for first_line, name, value in errors:
        assert name == "NotAttempted", (first_line, name, value, installed[-3000:])
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check(")]
    assert checks and len(errors) == len(checks), errors
    where = run_python(colab_python, "import bncourse; print(bncourse.__file__)", work)
    assert str(ROOT) not in where.stdout, "bncourse must come from the install, not this folder"
    assert "site-packages" in where.stdout, where.stdout + where.stderr
    assert sys.executable != str(colab_python)
