"""Executing the course notebooks in place, so that what is committed is what they print.

Chapter notebooks are committed *with* their outputs: the book shows them, and the tests run
every chapter again in a fresh kernel with nbval (``pytest --nbval notebooks/``), which fails
any cell that prints something else (conftest.py).

:func:`execute_in_place` runs a notebook top to bottom in a fresh kernel (working directory:
the notebook's folder, as for a learner and for nbval) and writes it back with the metadata
that changes from run to run removed (:func:`normalize`), so that re-running an unchanged
notebook gives an unchanged file.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .reproducible import reproducible_env

__all__ = ["KERNEL", "execute_in_place", "normalize"]

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def normalize(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-dependent metadata (timings, widget state) and pin the kernel spec."""
    nb.metadata["kernelspec"] = dict(KERNEL)
    nb.metadata.pop("widgets", None)
    language = nb.metadata.get("language_info", {})
    nb.metadata["language_info"] = {"name": language.get("name", "python")}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        cell.metadata.pop("collapsed", None)
    return nb


def execute_in_place(path: Path, timeout: int = 300) -> None:
    """Execute the notebook at ``path`` in a fresh ``python3`` kernel and save it normalized."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL["name"],
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    client.execute(env=reproducible_env())  # kernel environment: see bncourse/reproducible.py
    nbformat.write(normalize(nb), path)
