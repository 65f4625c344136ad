"""Markup that leaks to a reader: what the book's HTML pages and the PDF's text must not show.

The book is written in MyST with LaTeX math; a reader sees the rendered result. What leaks
when something goes wrong:

- a directive or a role printed raw (```` ```{exercise} ````, ``{cite}`...```);
- the solution markers of the exercise cells (``### BEGIN SOLUTION``), which exist for
  ``make-exercises`` only, and nbval's comment markers (``# NBVAL_IGNORE_OUTPUT``);
- a LaTeX command outside math (``\\gamma`` in a link text made from a heading with math);
- ``\\text{running\\_var}`` in math without MathJax's textmacros, which MathJax shows with
  its backslash.

:func:`html_leaks` reads a built page (the text a reader sees, math and code apart),
:func:`searchindex_leaks` the search index (the section titles a search lists, taken from the
headings as source text: ``$\\gamma$`` in a heading is ``\\gamma`` there), and
:func:`pdf_leaks` the PDF's text as pdftotext gives it.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

EVERYWHERE = [
    re.compile(r"(```|:::)\{[\w:-]+\}"),  # a directive
    re.compile(r"\{(cite|ref|numref|prf:ref|doc|eq|term)\}`"),  # a role
    re.compile(r"(BEGIN|END) SOLUTION"),
    re.compile(r"NBVAL"),
    re.compile(r"^\([\w-]+\)=$", re.M),  # a MyST target
]
# A LaTeX command in the prose (outside math and code): a backslash and a word.
COMMAND = re.compile(r"\\[A-Za-z]{2,}")
TEXT_WITH_ESCAPES = re.compile(r"\\text\{[^}]*\\[_&%#$]")


class _Text(HTMLParser):
    """The page's text in three parts: prose (outside math, code, scripts, the search
    index), code (``pre`` and ``code``) and math (MathJax's source)."""

    SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.prose: list[str] = []
        self.code: list[str] = []
        self.math: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr", "source", "wbr"):
            return
        classes = (dict(attrs).get("class") or "").split()
        kind = tag
        if "math" in classes:
            kind = "math"
        self.stack.append(kind)

    def handle_endtag(self, tag):
        if tag in ("br", "img", "meta", "link", "input", "hr", "source", "wbr"):
            return
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if any(t in self.SKIP for t in self.stack):
            return
        if "math" in self.stack:
            self.math.append(data)
        elif "pre" in self.stack or "code" in self.stack:
            self.code.append(data)
        else:
            self.prose.append(data)


def _context(text: str, match: re.Match) -> str:
    return " ".join(text[max(0, match.start() - 40) : match.end() + 40].split())


def html_leaks(html: str) -> list[str]:
    """What leaks on one built page, each with a few words around it."""
    parser = _Text()
    parser.feed(html)
    prose, code, math = "\n".join(parser.prose), "\n".join(parser.code), "\n".join(parser.math)
    found = []
    for pattern in EVERYWHERE:
        for text in (prose, code):
            found += [_context(text, m) for m in pattern.finditer(text)]
    found += [_context(prose, m) for m in COMMAND.finditer(prose)]
    if "textmacros" not in html:
        found += [_context(math, m) for m in TEXT_WITH_ESCAPES.finditer(math)]
    return found


def searchindex_leaks(js: str) -> list[str]:
    """The section titles of a built ``searchindex.js`` (``Search.setIndex({...})``) that
    hold a LaTeX command: a search lists them as they are."""
    index = json.loads(js[js.index("(") + 1 : js.rindex(")")])
    titles = [*index.get("titles", []), *index.get("alltitles", {})]
    return [title for title in titles if COMMAND.search(title)]


def pdf_leaks(text: str) -> list[str]:
    """What leaks in the PDF's text (pdftotext). Code listings keep their backslashes (a
    ``\\n`` in a string), so a command is a leak only where it is a LaTeX command the book
    uses in its math (``\\gamma``, ``\\sigma``, ``\\text``, ...)."""
    found = []
    for pattern in EVERYWHERE:
        found += [_context(text, m) for m in pattern.finditer(text)]
    latex = re.compile(
        r"\\(text|mathrm|frac|sqrt|sum|gamma|beta|sigma|mu|epsilon|hat|partial|cdot|"
        r"qquad|quad|left|right|mathbb|operatorname)\b"
    )
    found += [_context(text, m) for m in latex.finditer(text)]
    return found
