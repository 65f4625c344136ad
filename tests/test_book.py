"""The book builds strictly from a clean output folder: every notebook executes, no warning.

This is the same command as README's first one (``python3 course.py book``) minus the
environment setup: ``jupyter-book build . -W -n --keep-going``, into a temporary folder so the
execution cache starts empty and every notebook really runs (see ``built_book`` in conftest).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.xdist_group("book")  # with the browser tests, which use the same build
def test_strict_book_build(built_book):
    log = built_book.log
    assert built_book.returncode == 0, log[-5000:]
    assert "WARNING" not in log.replace("[IPKernelApp] WARNING | Kernel is running over TCP", ""), (
        log[-5000:]
    )
    html = built_book.html
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
