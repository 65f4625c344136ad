"""The PDF of the book (``python3 course.py pdf``): every chapter, every figure, nothing
unresolved, no missing glyph.

``built_pdf`` builds it once per session with Jupyter Book's LaTeX builder (XeLaTeX) into a
temporary folder: about 100 s on two cores, the time this module adds to the suite. It needs
``xelatex``, ``latexmk`` and poppler's ``pdftotext`` / ``pdfimages`` (``course.py test``
installs Debian's packages where it may); without them the tests skip, except under CI.
``BNCOURSE_REUSE_BOOK=DIR`` reuses ``DIR/_build/latex/book.pdf`` while developing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course import PDF_BUILD, TEX_PROGRAMS  # noqa: E402  (the one definition of the build)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pdf")]
PAGES = range(100, 400)  # 156 pages in December 2026; a chapter lost or a runaway table fails
# Lines still broken with ↪ (5 in December 2026: output lines over 140 characters, in
# chapters 7 and 9). A higher count means something wide came back.
MOST_BROKEN_LINES = 5


@dataclass
class BuiltPdf:
    returncode: int
    log: str  # the build's output
    latex_log: str  # XeLaTeX's book.log
    pdf: Path


@pytest.fixture(scope="module")
def built_pdf(tmp_path_factory, jupyter_book) -> BuiltPdf:
    missing = [p for p in [*TEX_PROGRAMS, "pdfimages"] if shutil.which(p) is None]
    if missing:
        message = f"the PDF needs {', '.join(missing)} (Debian: course.TEX_PACKAGES)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    reuse = os.environ.get("BNCOURSE_REUSE_BOOK")
    if reuse and (Path(reuse) / "_build" / "latex" / "book.pdf").exists():
        latex = Path(reuse) / "_build" / "latex"
        return BuiltPdf(
            0, "(reused)", (latex / "book.log").read_text(errors="replace"), latex / "book.pdf"
        )
    out = tmp_path_factory.mktemp("pdf")
    result = jupyter_book(PDF_BUILD, out)
    latex = out / "_build" / "latex"
    log = latex / "book.log"
    return BuiltPdf(
        result.returncode,
        result.stdout + result.stderr,
        log.read_text(errors="replace") if log.exists() else "",
        latex / "book.pdf",
    )


@pytest.fixture(scope="module")
def text(built_pdf) -> str:
    assert built_pdf.returncode == 0 and built_pdf.pdf.exists(), built_pdf.log[-5000:]
    out = subprocess.run(
        ["pdftotext", str(built_pdf.pdf), "-"], capture_output=True, text=True, check=True
    )
    return out.stdout


def _words(s: str) -> str:
    return " ".join(re.sub(r"[`*$]", "", s).split()).lower()


def chapter_titles() -> list[str]:
    """The title (first ``# `` heading) of every page in _toc.yml after the root, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    titles = []
    for file in files:
        path = ROOT / file
        if path.with_suffix(".ipynb").exists():
            cells = json.loads(path.with_suffix(".ipynb").read_text())["cells"]
            source = "".join(cells[0]["source"])
        else:
            source = path.with_suffix(".md").read_text()
        titles.append(re.search(r"^# (.+)$", source, re.M).group(1))
    return titles


def test_the_pdf_builds_with_every_page_count_in_range(built_pdf, text):
    pages = text.count("\f")
    assert pages in PAGES, f"{pages} pages"


def test_every_chapter_title_in_order(text):
    # The References page is LaTeX's bibliography in the PDF (book/_ext/course_assets.py).
    titles = ["Bibliography" if t == "References" else t for t in chapter_titles()]
    body = _words(text)
    body = body[body.index(_words(titles[-1])) + 1 :]  # past the table of contents
    position = 0
    for title in titles:
        found = body.find(_words(title), position)
        assert found >= 0, f"chapter {title!r} missing or out of order"
        position = found


def test_every_figure_is_in_the_pdf(built_pdf):
    """pdfimages lists each image once (its transparency as a separate 'smask')."""
    listing = subprocess.run(
        ["pdfimages", "-list", str(built_pdf.pdf)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]
    images = sum(line.split()[2] == "image" for line in listing)
    figures = sum(
        "image/png" in output.get("data", {})
        for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
        for cell in json.loads(path.read_text())["cells"]
        for output in cell.get("outputs", [])
    )
    assert images == figures, f"{images} images in the PDF, {figures} figures in the notebooks"


def test_no_unresolved_reference(text):
    assert "??" not in text, text[max(0, text.find("??") - 200) : text.find("??") + 50]


def test_no_missing_glyph(built_pdf, text):
    """XeLaTeX logs a character no font has (\\tracinglostchars=2 in _config.yml), and
    pdftotext would show the replacement box."""
    assert "Missing character" not in built_pdf.latex_log, re.findall(
        r"Missing character: .*", built_pdf.latex_log
    )[:10]
    assert "\ufffd" not in text  # (a box, U+25A1, is legitimate: it ends every proof)


def test_math_code_exercises_and_bibliography_come_out(text):
    assert "Exercise 2.1" in text
    assert "Proposition" in text and "Proof." in text
    assert "Ioffe and Szegedy" in text and "Bibliography" in text
    assert "√" in text and "∑" in text, "math typeset"
    assert "Fig. 1.1" in text, "figures numbered per chapter as on the site"


def test_no_markup_leaks(text):
    """No raw directive or role, solution or nbval marker, or LaTeX command from the book's
    math in the text (tests/markup_scan.py)."""
    from markup_scan import pdf_leaks

    assert pdf_leaks(text) == []


def test_laid_out_for_print(text):
    """Solutions left out, each with where it is; exercises numbered as on the site (chapter,
    then place in the chapter: 2.1, never 2.9.1); no domain index; the reference pages
    unnumbered after the chapters, and no empty References chapter before LaTeX's
    bibliography."""
    assert "Solution to Exercise" not in text
    from bncourse.checks import EXERCISES

    notes = " ".join(text.split()).count("Solution: in the web version of the book")
    assert notes == len(EXERCISES), (notes, len(EXERCISES))  # one per exercise
    assert not re.search(r"Exercise \d+\.\d+\.\d+", text), re.findall(
        r"Exercise \d+\.\d+\.\d+", text
    )[:5]
    assert "Proof Index" not in text and "prf-prf" not in text
    body = text[text.index("Bibliography") :] if "Bibliography" in text else ""
    assert body, "LaTeX's bibliography"
    for numbered in ("Chapter Ten", "Chapter Eleven", "Chapter Twelve", "Chapter Thirteen"):
        assert numbered not in text, f"{numbered}: the reference pages are back matter"
    first_pages = text.split("\f")[:12]
    assert any(p.lstrip().startswith("INTRODUCTION") for p in first_pages), "the intro's heading"


def test_wide_code_and_outputs_fit_the_text_width(text):
    """A code line or output line too wide for the text width is set in a smaller type
    (book/_ext/course_assets.py) instead of being broken with a continuation mark (↪); only
    lines wider than the smallest size still break."""
    broken = text.count("↪")
    assert broken <= MOST_BROKEN_LINES, broken
