"""Executing the course notebooks, and checking that what is committed is what they print.

Chapter notebooks are committed *with* their outputs: the book shows them, and the tests run
every chapter again in a fresh kernel and compare (:func:`output_differences`).

* :func:`execute_in_place` runs a notebook top to bottom in a fresh kernel (working directory:
  the notebook's folder, as for a learner) and writes it back with the metadata that changes
  from run to run removed, so that re-running an unchanged notebook gives an unchanged file.
* :func:`output_differences` lists where a fresh run printed something else than the committed
  notebook. The rules are nbval's strict mode: every output is compared (streams merged per
  name, every MIME type of every result, error names and values) except images, whose bytes
  change with library versions (only that a cell still shows one is compared), execution
  counts and metadata; a cell whose first line is ``# NBVAL_IGNORE_OUTPUT`` is not compared
  (only timings may use it, which ``tests/test_project.py`` enforces); memory addresses are
  masked (:data:`SANITIZE`).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .reproducible import reproducible_env

__all__ = [
    "KERNEL",
    "IGNORE_OUTPUT",
    "SANITIZE",
    "execute_in_place",
    "normalize",
    "output_differences",
]

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
IGNORE_OUTPUT = "NBVAL_IGNORE_OUTPUT"  # nbval's marker, which editors and reviewers know
SANITIZE = [(re.compile(r"0x[0-9a-fA-F]{6,}"), "0xADDRESS")]  # only what is run-dependent by nature
IMAGES = ("image/png", "image/jpeg", "image/svg+xml")


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


def _sanitize(text: str) -> str:
    for pattern, replacement in SANITIZE:
        text = pattern.sub(replacement, text)
    return text


def comparable(outputs: list) -> list[str]:
    """A cell's outputs as the lines that are compared (see the module docstring)."""
    lines, streams = [], {}
    for output in outputs:  # streams are merged per name: how a print is split is timing
        if output["output_type"] == "stream":
            streams.setdefault(output["name"], []).append(output["text"])
    for name, texts in streams.items():
        lines += [f"[{name}] {line}" for line in _sanitize("".join(texts)).splitlines()]
    for output in outputs:
        kind = output["output_type"]
        if kind == "error":
            lines.append(f"[error] {output['ename']}: {_sanitize(output['evalue'])}")
        elif kind in ("execute_result", "display_data"):
            for mime, data in sorted(output.get("data", {}).items()):
                if mime in IMAGES:
                    lines.append(f"[{kind} {mime}] (an image)")
                else:
                    text = data if isinstance(data, str) else "".join(data)
                    lines += [f"[{kind} {mime}] {line}" for line in _sanitize(text).splitlines()]
    return lines


def output_differences(
    committed: nbformat.NotebookNode, executed: nbformat.NotebookNode
) -> list[str]:
    """Where ``executed`` (a fresh run of ``committed``) printed something else: one entry
    per code cell that differs, a unified diff of its outputs; empty when they agree."""
    if len(committed.cells) != len(executed.cells):
        return [
            f"the run has {len(executed.cells)} cells, the committed notebook "
            f"{len(committed.cells)}"
        ]
    differences = []
    for number, (ours, fresh) in enumerate(zip(committed.cells, executed.cells), start=1):
        if ours.cell_type != "code" or ours.source.lstrip().startswith(f"# {IGNORE_OUTPUT}"):
            continue
        expected, got = comparable(ours.get("outputs", [])), comparable(fresh.get("outputs", []))
        if expected != got:
            first_line = ours.source.strip().splitlines()[0] if ours.source.strip() else ""
            diff = difflib.unified_diff(expected, got, "committed", "this run", lineterm="", n=1)
            differences.append(f"cell {number} ({first_line[:60]}):\n" + "\n".join(diff))
    return differences
