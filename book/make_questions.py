"""Write book/questions.md, the page "Questions people ask", from book/questions.yml.

    .venv/bin/python book/make_questions.py

The questions are data (book/questions.yml: each question, where it was asked, and the
section of the book that answers it or a source outside the book's scope); the page is
generated from them, and tests/test_questions.py fails when the committed page differs from
what this script writes, or when a question lacks a source or a valid target.
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

_LABEL = re.compile(r"^\(([\w-]+)\)=\s*\n+(#+ +(.*))?", re.M)

INTRODUCTION = """\
# Questions people ask

Questions that practitioners ask about BatchNorm in forums, on question-and-answer sites and
in the issue trackers of PyTorch and of the libraries built on it, each with a link to where
it was asked (paraphrased here), grouped by topic, and with the section of this book that
answers it. A few lie outside the book's scope; for those, a good source to read instead.
The {doc}`FAQ <faq>` answers the most common of them in a paragraph each.
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
            note = f" {item['note']}" if item.get("note") else ""
            lines.append(f"- **{item['q']}** {asked} {where}{note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    PAGE.write_text(render(load()))
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
