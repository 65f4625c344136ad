"""The book builds strictly from a clean output folder: every notebook executes, no warning.

This is the same command as README's first one (``python3 course.py book``) minus the
environment setup: ``jupyter-book build . -W -n --keep-going``, into a temporary folder so the
execution cache starts empty and every notebook really runs.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course import BOOK_BUILD  # noqa: E402  (the one definition of the strict build)


@pytest.mark.slow
def test_strict_book_build(tmp_path):
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), *BOOK_BUILD, "--path-output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "WARNING" not in log.replace("[IPKernelApp] WARNING | Kernel is running over TCP", ""), log[-5000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = html / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), page
        text = page.read_text()
        assert "Executing notebook" not in text
        assert 'class="solution dropdown' in text, f"{page.name}: solutions fold into dropdowns"
        assert 'class="exercise' in text
        assert "<img" in text, f"{page.name}: at least one figure"
        assert "Traceback" not in text
