"""Write book/questions.md, the page "Questions people ask", from book/questions.yml.

    .venv/bin/python book/make_questions.py

The questions are data (book/questions.yml: each question, where it was asked, and the
section of the book that answers it and the FAQ entry that answers it in short, or a source
outside the book's scope); the page is generated from them, and tests/test_questions.py fails
when the committed page differs from what this script writes, when a question lacks a source
or a valid target, or when its FAQ entry is missing or links to no section of a chapter.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import yaml

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
DATA = BOOK / "questions.yml"
PAGE = BOOK / "questions.md"
FAQ = BOOK / "faq.md"

_LABEL = re.compile(r"^\(([\w-]+)\)=\s*\n+(#+ +(.*))?", re.M)
# An entry of the FAQ: its anchor, then its text up to the next anchor or ## heading.
_FAQ_ENTRY = re.compile(r"^\((faq-[\w-]+)\)=[ \t]*\n(.*?)(?=^\(faq-|^## |\Z)", re.M | re.S)
_REF = re.compile(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`")

INTRODUCTION = """\
# Questions people ask

Questions that practitioners ask about BatchNorm in forums, on question-and-answer sites and
in the issue trackers of PyTorch and of the libraries built on it, each with a link to where
it was asked (paraphrased here), grouped by topic, and with the section of this book that
answers it. A few lie outside the book's scope; for those, a good source to read instead.
Each question answered in the book also links to its short answer in the {doc}`FAQ <faq>`.
"""


def sections() -> dict[str, tuple[str, str]]:
    """Every section label of the book: {label: (page, heading or "")}."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                for match in _LABEL.finditer(cell.source):
                    found[match.group(1)] = (path.stem, match.group(3) or "")
    for path in sorted(BOOK.glob("*.md")):
        for match in _LABEL.finditer(path.read_text()):
            found[match.group(1)] = (path.stem, match.group(3) or "")
    return found


def faq_entries(text: str | None = None) -> dict[str, str]:
    """The FAQ's entries (book/faq.md, or ``text``): {anchor: the entry's text}."""
    text = FAQ.read_text() if text is None else text
    return {match.group(1): match.group(2) for match in _FAQ_ENTRY.finditer(text)}


def faq_problems(
    questions: list[dict], entries: dict[str, str], chapter_labels: set[str]
) -> list[str]:
    """What is wrong with the links between the questions and the FAQ: a question answered in
    the book without a ``faq`` anchor, an anchor the FAQ lacks, or an entry that links
    (``{ref}``) to no section label of a chapter, where its claim is executed."""
    problems = []
    for item in questions:
        if "answer" not in item:
            continue
        anchor = item.get("faq")
        if anchor is None:
            problems.append(f"no faq entry named for {item['q']!r}")
        elif anchor not in entries:
            problems.append(f"{anchor}: no such anchor in the FAQ ({item['q']!r})")
        elif not set(_REF.findall(entries[anchor])) & chapter_labels:
            problems.append(f"{anchor}: the entry links to no section of a chapter")
    return problems


def chapter_labels() -> set[str]:
    """The section labels of the chapters (the notebooks), where the book executes code."""
    chapters = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}
    return {label for label, (page, _) in sections().items() if page in chapters}


def load() -> list[dict]:
    return yaml.safe_load(DATA.read_text())["groups"]


def site(url: str) -> str:
    """The host a link points to, as its text (``github.com/owner/repo`` for GitHub)."""
    parts = urlparse(url)
    host = parts.netloc.removeprefix("www.")
    if host == "github.com":
        owner_repo = "/".join(parts.path.strip("/").split("/")[:2])
        return f"github.com/{owner_repo}"
    return host


def render(groups: list[dict]) -> str:
    labels = sections()
    lines = [INTRODUCTION]
    for group in groups:
        lines += ["", f"## {group['title']}", ""]
        for item in group["questions"]:
            asked = f"(asked on [{site(item['source'])}]({item['source']}))"
            if "answer" in item:
                label = item["answer"]
                page, heading = labels[label]
                title = item.get("title")
                if "$" in heading and not title:  # a {ref} would show the heading's raw TeX
                    raise ValueError(f"{label}'s heading has math: give the question a title")
                target = f"{{ref}}`{title} <{label}>`" if title else f"{{ref}}`{label}`"
                shown = title or heading
                where = f"Answered in {target}" + ("" if shown.endswith(("?", ".")) else ".")
            else:
                pointer = item["out_of_scope"]
                where = f"Outside this book's scope: [{pointer['title']}]({pointer['url']})."
            if "faq" in item:
                where += f" {{ref}}`Short answer in the FAQ <{item['faq']}>`."
            note = f" {item['note']}" if item.get("note") else ""
            lines.append(f"- **{item['q']}** {asked} {where}{note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    PAGE.write_text(render(load()))
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
