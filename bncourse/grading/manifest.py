"""A hash manifest of the installed ``bncourse/``: what the grader verifies around each notebook.

A learner's notebook runs with write access to the files of the package it imports, so a
notebook could append an always-pass checker to ``checks.py`` and every later notebook (and
run) would be judged by it. The grader takes :func:`manifest` once before anything runs and
compares it (:func:`changes`) before judging each notebook and after it: any difference stops
the run (:class:`PackageChanged`) rather than grade with a changed package.

Conventions: paths are relative to the package folder, with ``/`` separators; byte-code
caches (``__pycache__``, ``*.pyc``) are left out, since Python rewrites them on its own, and
so is ``plots/`` (:data:`NOT_GRADING`): the book's figures, which no checker imports, and
which authors edit while they grade.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["PACKAGE", "PackageChanged", "manifest", "changes"]

PACKAGE = Path(__file__).resolve().parents[1]
"""The ``bncourse`` folder this grader was imported from."""
NOT_GRADING = ("plots",)
"""Top-level folders of the package that grading never imports (left out of the manifest)."""


class PackageChanged(RuntimeError):
    """``bncourse/`` changed while a notebook was graded; the message lists the files."""


def manifest(root: Path = PACKAGE) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` but byte-code caches."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        if relative.parts[0] in NOT_GRADING:
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs between two manifests: ``changed X``, ``added X``, ``removed X``."""
    found = [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    found += [f"added {p}" for p in sorted(after.keys() - before.keys())]
    found += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    return found
