"""A learner on Colab: the exercise notebook's first cell installs the course, then it runs.

Colab opens one notebook, with its own Python that has torch, numpy, matplotlib,
scikit-learn and ipykernel preinstalled and no ``bncourse``. The first code cell of every
chapter (and so of every exercise notebook) installs ``bncourse`` from the repository set in
``_config.yml`` (``repository.url``; tests/test_project.py checks that the two agree). Here a
fresh virtual environment holds only what Colab preinstalls (this environment's files of
the same pins, linked: :func:`preinstall`), the install cell's URL is pointed at this
checkout (``git+file://``: the committed tree, as GitHub would serve it), and chapter 2's
exercise notebook runs in that environment's kernel from its first cell on: the install must
succeed, and every exercise must report "not attempted yet" (the stubs), nothing else.

About a minute on two busy cores (most of it the install cell and chapter 2); marked slow.
``BNCOURSE_REUSE_COLAB_ENV=DIR`` (development only) reuses the environment a run left in
``DIR`` (its ``bin/python``), after uninstalling ``bncourse`` from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "exercises" / "02_numpy_forward.ipynb"
COLAB_PREINSTALLED = ["torch", "numpy", "matplotlib", "scikit-learn", "ipykernel"]
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


def distributions(names: list[str]) -> list[metadata.Distribution]:
    """The distributions of ``names`` in this environment and everything they require (no
    extras), each once."""
    found, todo = {}, list(names)
    while todo:
        dist = metadata.distribution(todo.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in found:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def preinstall(names: list[str], site: Path) -> None:
    """Put ``names`` and their requirements into the ``site``-packages of a fresh environment,
    as Colab has them preinstalled: the files this environment installed from the same
    pins (requirements.txt), linked, not copied, with their ``.dist-info`` (so that pip sees
    them installed). Installing them from the index took about a minute of the suite's time
    (torch alone: 21 s to unpack) for nothing that the test is about."""
    for dist in distributions(names):
        root = Path(dist.locate_file(""))
        for file in dist.files or []:
            source = root / file
            if ".." in file.parts or not source.is_file():  # scripts in bin/: not needed
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)


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
    venv.create(folder / "env", clear=True)
    python = folder / "env" / ("Scripts" if os.name == "nt" else "bin") / "python"
    site = run_python(python, "import sysconfig; print(sysconfig.get_path('purelib'))", outside)
    preinstall(["pip", *COLAB_PREINSTALLED], Path(site.stdout.strip()))
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
