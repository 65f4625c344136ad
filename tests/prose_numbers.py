"""Every number the prose quotes is one the reader sees printed: the rules, in one place.

A chapter's markdown cells may quote a number only if the same notebook prints it in the
section that holds the cell or in one the cell links to (in a checked output: not one of a
timing cell, whose output changes from run to run and which the notebook tests do not
compare). A FAQ answer may quote a number only if the sections it
links to (its ``{ref}`` links, in the chapter its ``##`` section names with "Chapter:
{doc}`../notebooks/NN_...`") print it, or, for an answer without such a link, the chapter.
The few numbers that are facts rather than results are listed in ``CONSTANTS``, each with
the reason it needs no output (a version number, a property of a number format).

What counts as "a number quoted" (:func:`quoted_numbers`): in prose and inline math, a
number with a decimal point (``0.34``, ``$0.0069$``), a multiple (``1.99x``, ``2 times``), a
percentage (``12%``), a power of ten written as a result (``1e-7``, ``3e-06``). Not counted:
plain integers (section and chapter numbers, years, batch sizes, seeds, counts of steps: the
parameters of an experiment, which the code cell shows), anything in a code span or a code
block (shapes, code), MyST roles and targets, link addresses, and display math (equations,
whose constants are part of a formula).

A number written in the code of the same notebook (a parameter the reader sees set, such as
a learning rate of 0.1) counts as shown, written exactly so (:func:`code_literals`).

A quoted number matches a printed one (:func:`printed_values`) when the printed value,
rounded to the quoted number's decimals, equals it: "0.13" matches a printed 0.13 or 0.1349
but not 0.125 printed as 0.12; "12%" matches a printed 0.12 or 12; "1.99x" a printed 1.99.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import nbformat

IGNORE_TAG = "nbval-ignore-output"  # nbval's tag for a cell whose output may vary

# Numbers a page may quote without a printed output, each with the reason. Keyed by
# (page, number as written).
CONSTANTS: dict[tuple[str, str], str] = {
    ("05_pytorch_module", "2.13"): "a version number: the torch release whose TorchInductor "
    "wrote the loops the chapter prints",
    ("08_gpu_triton", "9.8"): "a fact of the float32 format: numbers near 1e4 are "
    "2**-10 = 9.8e-4 apart",
}

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_CODE_SPAN = re.compile(r"(`+).*?\1", re.S)
_ROLE = re.compile(r"\{[a-z:-]+\}`[^`]*`")
_TARGET = re.compile(r"^\([^)\s]+\)=\s*$", re.M)
_LINK_URL = re.compile(r"\]\([^)]*\)")
_DIRECTIVE_OPTION = re.compile(r"^:[a-z-]+:.*$", re.M)
_MATH_CMD = re.compile(r"\\[A-Za-z]+")

# One number as prose writes it: sign, digits, decimals, an exponent, then what makes it a
# quoted result: a percent sign, an "x" or "times" after it.
_NUMBER = re.compile(
    r"(?<![\w.^_{/])(?<!\w-)(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
    r"(?P<suffix>\s*%|x(?![\w])|×|\s+times\b)?(?![\w.]*\d)(?!\^)"
)
_PRINTED = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?(?![\w])", re.I)


@dataclass(frozen=True)
class Quote:
    """A number quoted in prose: as written, its value, its decimals, and where it is."""

    text: str
    value: float
    decimals: int | None  # None: a power of ten written as 1e-7 (matches its exponent)
    percent: bool
    context: str


def prose_of(markdown: str) -> str:
    """The prose of a markdown text: code, display math, roles and addresses left out."""
    for pattern in (
        _FENCE,
        _DISPLAY_MATH,
        _CODE_SPAN,
        _ROLE,
        _TARGET,
        _LINK_URL,
        _DIRECTIVE_OPTION,
    ):
        markdown = pattern.sub(" ", markdown)
    return _MATH_CMD.sub(" ", markdown)


def quoted_numbers(markdown: str) -> list[Quote]:
    """The numbers ``markdown`` quotes as results (see the module docstring)."""
    prose = prose_of(markdown)
    quotes = []
    for match in _NUMBER.finditer(prose):
        text, suffix = match["num"], (match["suffix"] or "").strip()
        exponent = "e" in text
        if not ("." in text or exponent or suffix):
            continue  # a plain integer: a parameter, a count, a section number
        start = max(0, match.start() - 40)
        context = " ".join(prose[start : match.end() + 20].split())
        decimals = None if exponent else (len(text.split(".")[1]) if "." in text else 0)
        written = text + ("" if suffix in ("", "%", "x", "×") else " ") + suffix
        quotes.append(Quote(written, float(text), decimals, suffix == "%", context))
    return quotes


def _output_texts(cell) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append(output.get("text", ""))
        elif "data" in output:
            data = output["data"]
            for kind in ("text/plain", "text/markdown", "text/latex"):
                if kind in data and not ("image/png" in data and kind == "text/plain"):
                    texts.append(data[kind])
    return texts


def is_variable(cell) -> bool:
    """A cell whose output is not compared between runs (a timing): its numbers do not count."""
    return IGNORE_TAG in cell.get("metadata", {}).get("tags", [])


def printed_values(notebook) -> list[tuple[str, float]]:
    """Every number in the checked outputs of ``notebook`` (or of a list of its cells): (as
    printed, value)."""
    values = []
    for cell in getattr(notebook, "cells", notebook):
        if cell.cell_type != "code" or is_variable(cell):
            continue
        for text in _output_texts(cell):
            for match in _PRINTED.finditer(text):
                try:
                    values.append((match.group(), float(match.group())))
                except ValueError:
                    continue
    return values


_LITERAL = re.compile(r"(?<![\w.])\d+\.\d+(?:e[-+]?\d+)?(?![\w.])")


def code_literals(notebook) -> set[str]:
    """The decimal numbers written in the code cells of ``notebook`` (or of a list of its
    cells), as written."""
    return {
        match.group()
        for cell in getattr(notebook, "cells", notebook)
        if cell.cell_type == "code"
        for match in _LITERAL.finditer(cell.source)
    }


def _printed_decimals(printed: str) -> int:
    mantissa = printed.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def matches(quote: Quote, printed: list[tuple[str, float]]) -> bool:
    """Whether ``quote`` is one of the ``printed`` values, rounded as the prose rounds it."""
    for text, value in printed:
        if not math.isfinite(value):
            continue
        candidates = [abs(value)]
        if quote.percent:
            candidates.append(abs(value) * 100)
        for candidate in candidates:
            if quote.decimals is None:  # 1e-7 against a printed 1e-07, 1.0e-07 or 1e-7
                if candidate > 0 and math.isclose(candidate, quote.value, rel_tol=1e-9):
                    return True
                continue
            if candidate == abs(value) and _printed_decimals(text) < quote.decimals:
                if "e" not in text.lower():
                    continue  # printed with fewer decimals than the prose quotes
            rounded = Decimal(repr(candidate)).quantize(Decimal(1).scaleb(-quote.decimals))
            if rounded == Decimal(repr(quote.value)).quantize(Decimal(1).scaleb(-quote.decimals)):
                return True
    return False


@dataclass(frozen=True)
class Unmatched:
    page: str
    where: str
    quote: Quote

    def __str__(self) -> str:
        return f"{self.page} {self.where}: {self.quote.text!r} in ...{self.quote.context}..."


def check_notebook(path: Path) -> list[Unmatched]:
    """The numbers a chapter's markdown quotes that its section does not print.

    A markdown cell's numbers must be printed by a checked output of the sections that hold
    the cell (from its label to the next of the same level, so a subsection counts for its
    section) or of the sections it links to with ``{ref}``; a cell before the first label is
    held to the whole notebook. A number set in the notebook's code counts anywhere."""
    notebook = nbformat.read(path, as_version=4)
    literals = code_literals(notebook)
    sections = labelled_sections(notebook)
    spans = {
        label: {id(cell) for cell in cells} for label, cells in sections.items()
    }  # which cells each section holds
    page = path.stem
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        quotes = quoted_numbers(cell.source)
        if not quotes:
            continue
        labels = [label for label, cells in spans.items() if id(cell) in cells]
        labels += [label for label in _REF.findall(cell.source) if label in sections]
        shown = [c for label in labels for c in sections[label]] or notebook.cells
        printed = printed_values(shown)
        for quote in quotes:
            if (page, quote.text) in CONSTANTS or quote.text in literals or matches(quote, printed):
                continue
            missing.append(Unmatched(page, f"cell {index}", quote))
    return missing


_CHAPTER_LINK = re.compile(r"^Chapter: \{doc\}`\.\./notebooks/([\w]+)`", re.M)


def faq_sections(text: str) -> list[tuple[str | None, str]]:
    """The FAQ's ``##`` sections: (the chapter each links to, or None; its text)."""
    sections = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        link = _CHAPTER_LINK.search(part)
        sections.append((link.group(1) if link else None, part))
    return sections


_LABEL = re.compile(r"^\(([\w-]+)\)=[ \t]*\n+(?:(#+) )?", re.M)
_REF = re.compile(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`")


def labelled_sections(notebook) -> dict[str, list]:
    """{label: the cells of its section}: from the cell that holds the label to the cell that
    holds the next label of the same or a higher heading level (a label without a heading
    ends at the next label of any kind)."""
    marks = []  # (cell index, label, level)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            for match in _LABEL.finditer(cell.source):
                marks.append((index, match.group(1), len(match.group(2) or "#" * 9)))
    sections = {}
    for k, (index, label, level) in enumerate(marks):
        end = len(notebook.cells)
        for later, _, later_level in marks[k + 1 :]:
            if later_level <= level or level == 9:
                end = later + 1  # the cell holding the next label may end this section too
                break
        sections[label] = notebook.cells[index:end]
    return sections


def check_faq(path: Path, notebooks: Path) -> list[Unmatched]:
    """The numbers a FAQ answer quotes that the sections it links to do not print.

    An answer is a paragraph of the FAQ; its numbers must be printed by a checked output (or
    set in the code) of the sections its ``{ref}`` links point to, in the chapter its ``##``
    section names. An answer without such a link is held to its whole chapter."""
    missing = []
    for chapter, text in faq_sections(path.read_text()):
        notebook, sections = None, {}
        if chapter is not None:
            notebook = nbformat.read(notebooks / f"{chapter}.ipynb", as_version=4)
            sections = labelled_sections(notebook)
        heading = text.splitlines()[0]
        for answer in re.split(r"\n\s*\n", text):
            quotes = quoted_numbers(answer)
            if not quotes:
                continue
            linked = [sections[label] for label in _REF.findall(answer) if label in sections]
            if linked:
                shown = [cell for cells in linked for cell in cells]
            else:
                shown = notebook.cells if notebook is not None else []
            printed, literals = printed_values(shown), code_literals(shown)
            for quote in quotes:
                known = (path.stem, quote.text) in CONSTANTS or quote.text in literals
                if known or matches(quote, printed):
                    continue
                missing.append(Unmatched(path.stem, f"section {heading!r}", quote))
    return missing
