"""The book's MyST markup as plain Markdown, for the learner notebooks in ``exercises/``.

The chapters in ``notebooks/`` are written in MyST, which the book renders: ```` ```{exercise} ````
and ```` ```{prf:proposition} ```` blocks, ``(label)=`` targets, and the roles ``{ref}``,
``{prf:ref}`` and ``{cite}``. Jupyter and Colab show that markup raw. A learner opens the
notebooks in ``exercises/`` there, so :func:`to_markdown` turns each of these into what
Jupyter renders:

- ``(label)=`` lines are dropped;
- ```` ```{exercise} Title ```` with ``:label: ex-<id>`` becomes a heading
  ``#### Exercise 2.1: Title`` (numbered as the book numbers it: chapter, then the exercise's
  place in the chapter) followed by an anchor ``<a id="ex-<id>"></a>``, which is how the
  grader finds the exercise (:data:`EXERCISE_ANCHOR`);
- ```` ```{prf:kind} Title ```` becomes ``**Kind (Title).**`` and the body; ```` ```{prf:proof} ````
  becomes ``*Proof.*`` and the body;
- ``{ref}`text <label>``` becomes *text*; ``{ref}`label``` the title of the section the label
  marks (with its chapter when it is in another one); ``{prf:ref}`label``` the proposition's
  name; ``{cite}`key``` "(Author, year)", from ``book/references.bib``.

Anything else left in MyST form is an error (:func:`leftover_markup`), which
``make-exercises`` reports, so that a new directive or role gets a rule here before it can
reach a learner raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["Labels", "EXERCISE_ANCHOR", "to_markdown", "leftover_markup", "collect_labels"]

# How a learner notebook marks an exercise (the grader reads it: bncourse/grading/cli.py).
EXERCISE_ANCHOR = re.compile(r'<a id="ex-([a-z0-9-]+)"></a>')

LABEL_LINE = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$\n?",
    re.S | re.M,
)
OPTION = re.compile(r"^:([\w-]+):[ \t]*([^\n]*)\n?", re.M)
ROLE = re.compile(r"\{(?P<name>[\w:-]+)\}`(?P<text>[^`]*)`")
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)


@dataclass
class Labels:
    """What the roles point at: labels, page titles and citations."""

    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (title, stem)
    titles: dict[str, str] = field(default_factory=dict)  # stem -> page title
    citations: dict[str, str] = field(default_factory=dict)  # key -> "Author (year)"


def _clean_title(title: str) -> str:
    return title.strip().strip("#").strip()


def _labels_in(text: str, stem: str, labels: Labels) -> None:
    heading = HEADING.search(text)
    if heading and stem not in labels.titles and len(heading.group(1)) == 1:
        labels.titles[stem] = _clean_title(heading.group(2))
    for match in LABEL_LINE.finditer(text):
        after = HEADING.search(text, match.end())
        if after:
            labels.targets[match.group(1)] = (_clean_title(after.group(2)), stem)
    for match in DIRECTIVE.finditer(text):
        name = match.group("name")
        if name.startswith("prf:") and name != "prf:proof":
            label = re.search(r"^:label:\s*(\S+)", match.group("body"), re.M)
            if label:
                kind = name.split(":", 1)[1].capitalize()
                title = match.group("arg").strip()
                labels.targets[label.group(1)] = (
                    f"{kind} ({title})" if title else kind,
                    stem,
                )


def _citations(bib: Path) -> dict[str, str]:
    out = {}
    for entry in re.finditer(r"@\w+\{([^,\s]+),(.*?)\n\}", bib.read_text(), re.S):
        key, body = entry.group(1), entry.group(2)
        author = re.search(r"author\s*=\s*\{(.*?)\},?\s*\n", body, re.S)
        year = re.search(r"year\s*=\s*\{?(\d{4})", body)
        names = [n.split(",")[0].strip() for n in author.group(1).split(" and ")] if author else []
        names = [re.sub(r"[{}]", "", n) for n in names]
        if len(names) > 2:
            who = f"{names[0]} et al."
        else:
            who = " and ".join(names) or key
        out[key] = f"{who}, {year.group(1)}" if year else who
    return out


def collect_labels(root: Path) -> Labels:
    """Every label of the book's chapters (``notebooks/``) and pages (``book/*.md``)."""
    root = Path(root)
    labels = Labels()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        _labels_in(text, path.stem, labels)
    for path in sorted((root / "book").glob("*.md")):
        _labels_in(path.read_text(), path.stem, labels)
    bib = root / "book" / "references.bib"
    if bib.exists():
        labels.citations = _citations(bib)
    return labels


def _where(stem: str, here: str, labels: Labels) -> str:
    if stem == here:
        return ""
    number = re.match(r"(\d+)_", stem)
    if number:
        return f" in chapter {int(number.group(1))}"
    if stem == "intro":
        return " in the book's introduction"
    return f" in the book's page “{labels.titles.get(stem, stem)}”"


def _role(match: re.Match, here: str, labels: Labels) -> str:
    name, text = match.group("name"), match.group("text")
    if name == "cite":
        keys = [k.strip() for k in text.split(",")]
        return "(" + "; ".join(labels.citations.get(k, k) for k in keys) + ")"
    if name in ("ref", "prf:ref", "numref", "doc"):
        explicit = EXPLICIT.match(text)
        if explicit:
            target = explicit.group("target")
            stem = labels.targets.get(target, ("", here))[1]
            text = explicit.group("text")
            where = "" if "chapter" in text.lower() else _where(stem, here, labels)
            return f"*{text}*{where}"
        if text in labels.targets:
            title, stem = labels.targets[text]
            return f"“{title}”{_where(stem, here, labels)}"
        raise ValueError(f"{here}: unknown label {text!r} in {{{name}}}")
    return match.group(0)  # left for leftover_markup to report


def _directive(match: re.Match, here: str, counter: list[int]) -> str:
    name, arg, body = match.group("name"), match.group("arg").strip(), match.group("body")
    options = dict(OPTION.findall(body[: _options_end(body)]))
    body = body[_options_end(body) :].strip("\n")
    if name == "exercise":
        counter[0] += 1
        number = re.match(r"(\d+)_", here)
        numbered = f"{int(number.group(1))}.{counter[0]}" if number else str(counter[0])
        anchor = options.get("label", "")
        heading = f"#### Exercise {numbered}: {arg}" if arg else f"#### Exercise {numbered}"
        return (
            f'{heading}\n<a id="{anchor}"></a>\n\n{body}\n' if anchor else f"{heading}\n\n{body}\n"
        )
    if name == "prf:proof":
        return f"*Proof.* {body}\n"
    if name.startswith("prf:"):
        kind = name.split(":", 1)[1].capitalize()
        title = f"{kind} ({arg})" if arg else kind
        return f"**{title}.** {body}\n"
    if name in ("admonition", "note", "tip", "warning", "important", "seealso"):
        title = arg if name == "admonition" else name.capitalize()
        quoted = "\n".join(f"> {line}" if line else ">" for line in body.splitlines())
        return f"> **{title}**\n>\n{quoted}\n"
    return match.group(0)


def _options_end(body: str) -> int:
    end = 0
    for line in body.splitlines(keepends=True):
        if OPTION.match(line):
            end += len(line)
        else:
            break
    return end


def to_markdown(source: str, here: str, labels: Labels, counter: list[int]) -> str:
    """One markdown cell of chapter ``here``, in plain Markdown; ``counter`` counts the
    chapter's exercises so far (a one-element list, updated)."""
    text = LABEL_LINE.sub("", source)
    text = DIRECTIVE.sub(lambda m: _directive(m, here, counter), text)
    text = ROLE.sub(lambda m: _role(m, here, labels), text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text


def leftover_markup(source: str) -> list[str]:
    """MyST that :func:`to_markdown` left (a directive or a role it has no rule for)."""
    found = [m.group(0).splitlines()[0] for m in DIRECTIVE.finditer(source)]
    found += [m.group(0) for m in ROLE.finditer(source)]
    found += [m.group(0) for m in LABEL_LINE.finditer(source)]
    return found
