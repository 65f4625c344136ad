"""The book builds strictly from a clean output folder, without a warning, every chapter with
its exercises, solutions and figures.

This is the same command as README's first one (``python3 course.py book``) minus the
environment setup: ``jupyter-book build . -W -n --keep-going``, into a temporary folder, so
that nothing of an earlier build is reused (see ``built_book`` in conftest). The build shows
the outputs committed with each notebook (``execute_notebooks: "off"`` in ``_config.yml``);
that they are what the code prints is nbval's part (tests/test_notebooks.py).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
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


# --------------------------------------------------------------------------------------------
# Every figure describes itself: a caption and an alt text
# --------------------------------------------------------------------------------------------
# The metadata of a figure cell (CONTRIBUTING.md, "Chapters"): myst-nb turns
# mystnb.figure into a numbered <figure> with a <figcaption>, and mystnb.image.alt into the
# image's alt attribute in the HTML (the PDF has the caption).
MIN_ALT_WORDS = 12  # "what a screen-reader user needs": the axes, what is plotted, the finding


def figure_problems(nb: dict) -> list[str]:
    """What is missing from the figure cells (code cells with an image output) of a notebook
    given as its JSON."""
    problems = []
    for cell in nb["cells"]:
        outputs = cell.get("outputs", [])
        if cell["cell_type"] != "code" or not any(
            "image/png" in o.get("data", {}) for o in outputs
        ):
            continue
        meta = cell.get("metadata", {}).get("mystnb", {})
        where = f"cell {cell.get('id')}: {''.join(cell['source'])[:50]!r}"
        caption = meta.get("figure", {}).get("caption", "").strip()
        name = meta.get("figure", {}).get("name", "")
        alt = meta.get("image", {}).get("alt", "").strip()
        if not caption:
            problems.append(f"{where}: no mystnb.figure.caption")
        if not re.fullmatch(r"fig-ch\d+-[a-z0-9-]+", name):
            problems.append(f"{where}: mystnb.figure.name {name!r} is not fig-chN-what")
        if len(alt.split()) < MIN_ALT_WORDS or alt.lower().rstrip(".") == caption.lower().rstrip(
            "."
        ):
            problems.append(f"{where}: mystnb.image.alt {alt!r} does not say what the figure shows")
    return problems


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_figure_has_a_caption_and_an_alt_text(path):
    problems = figure_problems(json.loads(path.read_text()))
    assert not problems, "\n".join(problems)


def test_the_figure_check_fails_on_a_figure_without_alt_text():
    figure = {
        "cell_type": "code",
        "id": "x",
        "source": ["plt.show()"],
        "outputs": [{"output_type": "display_data", "data": {"image/png": "iVBOR"}}],
        "metadata": {"mystnb": {"figure": {"caption": "A caption.", "name": "fig-ch1-x"}}},
    }
    assert figure_problems({"cells": [figure]}) == [
        "cell x: 'plt.show()': mystnb.image.alt '' does not say what the figure shows"
    ]
    figure["metadata"] = {}
    assert len(figure_problems({"cells": [figure]})) == 3


class _Figures(HTMLParser):
    """The images of a page's <main> that Sphinx copied from the chapter's outputs (under
    ``_images/``; the launch buttons' logos are the theme's), each with its alt and whether it
    sits in a <figure> with a <figcaption>."""

    def __init__(self):
        super().__init__()
        self.images, self._figure, self._in_main = [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "main":
            self._in_main = True
        elif tag == "figure" and self._in_main:
            self._figure = {"caption": False, "images": []}
        elif tag == "figcaption" and self._figure is not None:
            self._figure["caption"] = True
        elif tag == "img" and self._in_main and "_images/" in attrs.get("src", ""):
            image = {"alt": attrs.get("alt") or "", "src": attrs.get("src", ""), "figure": None}
            self.images.append(image)
            if self._figure is not None:
                image["figure"] = self._figure

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "main":
            self._in_main = False


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_every_image_of_the_site_has_alt_text_and_a_caption(built_book):
    """The built pages: every chapter image is in a captioned <figure>, with an alt text that
    is not a file name."""
    problems = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        parser = _Figures()
        parser.feed((built_book.html / "notebooks" / f"{notebook.stem}.html").read_text())
        assert parser.images, notebook.stem
        for image in parser.images:
            alt = image["alt"]
            if len(alt.split()) < MIN_ALT_WORDS or alt.endswith((".png", ".svg")):
                problems.append(f"{notebook.stem}: {image['src']}: alt {alt[:60]!r}")
            if image["figure"] is None or not image["figure"]["caption"]:
                problems.append(f"{notebook.stem}: {image['src']}: not in a captioned <figure>")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# What a reader sees: no leaked markup; the page's surroundings
# --------------------------------------------------------------------------------------------
def _pages(html: Path) -> list[Path]:
    return [
        p
        for p in sorted(html.rglob("*.html"))
        if not {"_static", "_sources"} & set(p.relative_to(html).parts)
        and p.name not in ("genindex.html", "search.html")
    ]


def test_the_search_index_scan_finds_latex_in_a_title():
    """The check can fail: a search index as Sphinx writes it, with a heading's math kept as
    its source in one title."""
    from markup_scan import searchindex_leaks

    index = {
        "titles": ["Running statistics, train and eval"],
        "alltitles": {"\\gamma and \\beta have shape (C,)": [[3, "shape"]], "ε inside": []},
    }
    js = "Search.setIndex(" + json.dumps(index) + ")"
    assert searchindex_leaks(js) == ["\\gamma and \\beta have shape (C,)"]


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_no_markup_leaks_into_the_pages(built_book):
    """No raw directive or role, no solution or nbval marker, no LaTeX command outside math,
    no \\text{..\\_..} without MathJax's textmacros (tests/markup_scan.py)."""
    from markup_scan import html_leaks, searchindex_leaks

    leaks = {
        str(p.relative_to(built_book.html)): html_leaks(p.read_text())
        for p in _pages(built_book.html)
    }
    leaks["searchindex.js"] = searchindex_leaks((built_book.html / "searchindex.js").read_text())
    leaks = {page: found for page, found in leaks.items() if found}
    assert not leaks, leaks
    unexplained = [
        str(p.relative_to(built_book.html))
        for p in _pages(built_book.html)
        if "Show code cell source" in p.read_text()
    ]
    assert not unexplained, (
        f"a folded cell's bar says what it holds (nb_code_prompt_show): {unexplained}"
    )


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_every_page_has_edit_discussion_and_last_changed(built_book):
    """'Edit this page' (the source on the repository), a link to the repository's
    discussions about the page, and the date the page's source last changed (from git)."""
    import yaml

    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for page in _pages(built_book.html):
        if page.parent.name not in ("book", "notebooks"):
            continue  # the root's redirect, the proof index: no source of their own
        text = page.read_text()
        name = page.relative_to(built_book.html)
        assert f'href="{repository}/edit/' in text, f"{name}: no 'edit this page'"
        assert f'href="{repository}/discussions?discussions_q=' in text, f"{name}: no discussion"
        assert re.search(r"Last updated on \d{1,2} [A-Z][a-z]+ \d{4}\.", text), name
    setup = (built_book.html / "book" / "setup.html").read_text()
    assert "discussions_q=Setting%20up" in setup
