"""Sphinx extension of the course: each inline script once per page, bibliography entries a
screen reader can list, the PDF of the book next to the site, the learner's notebook behind
the launch and download buttons, what a reader should not see removed, the date each page
last changed and a discussion link, and the PDF's layout for print.

**Launch and download buttons.** sphinx-book-theme's buttons take the page's own source: a
chapter's Colab, Binder and ``.ipynb`` buttons would open ``notebooks/NN_*.ipynb``, solutions
included. On a chapter page the first entry of each now opens ``exercises/NN_*.ipynb`` (the
learner notebook, in plain Markdown, solutions replaced by stubs), and the worked chapter
follows as a second, named entry. The exercise notebooks are copied into the site
(``exercises/``) for the download.

**What a reader should not see.** The ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines in
the solutions' code cells mark, for ``make-exercises``, what a learner writes; they are
dropped from the code the book shows (HTML and PDF).

**The PDF.** Solutions are left out (each with a line saying where it is), exercises keep the
HTML's numbers (chapter, then place in the chapter), the References page gives no empty
chapter (the bibliography is LaTeX's own, at the end), and FAQ, questions, glossary and
references are unnumbered back matter.

With Jupyter Book 1 on Sphinx 7.4, inline scripts that extensions add after the HTML builder
has started (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) are
registered twice, once as ``_JavaScript(None, body=...)`` and once as
``_JavaScript('', body=...)``, which Sphinx does not recognise as the same script. The second
``const`` declaration is a JavaScript error on every page ("Identifier 'THEBE_JS_URL' has
already been declared"), which the browser tests catch. This drops the repeats.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

from docutils import nodes


def _unique_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _listed_bibliography(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """docutils writes the bibliography as ``<div role="list">`` of ``role="doc-biblioentry"``
    entries; ARIA 1.1 deprecated that role, so axe-core and screen readers find a list whose
    items are not list items (axe's "aria-required-children", critical). ``listitem`` is what
    the entries are."""
    body = context.get("body")
    if body and 'role="doc-biblioentry"' in body:
        context["body"] = body.replace('role="doc-biblioentry"', 'role="listitem"')


# The site's "Download the book as PDF" link (book/setup.md) points here, at the site's root.
PDF_NAME = "book.pdf"


def _copy_pdf(app: Any, exception: Exception | None) -> None:
    """Copy the PDF that ``python3 course.py pdf`` built (``_build/latex/book.pdf``, next to
    this build's ``html``) into the site, when there is one: the publish workflow builds the
    PDF first, so the site it deploys carries it."""
    if exception is not None or app.builder.name != "html":
        return
    pdf = Path(app.outdir).parent / "latex" / PDF_NAME
    if pdf.exists():
        shutil.copyfile(pdf, Path(app.outdir) / PDF_NAME)


def _pdf_link(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Setting up's "Download the book as PDF" points at ``book.pdf`` next to the site, which
    exists only where ``python3 course.py pdf`` ran before the site was built (the publish
    workflow does). Elsewhere the link would be a 404: say how to make the PDF instead."""
    body = context.get("body")
    if not body or 'href="../book.pdf"' not in body:
        return
    if (Path(app.outdir).parent / "latex" / PDF_NAME).exists():
        return
    context["body"] = re.sub(
        r'<a class="reference external" href="\.\./book\.pdf">Download the book as PDF</a>',
        "this copy of the site was built without it (<code>python3 course.py pdf</code> "
        "makes it, then <code>python3 course.py book</code> puts it here)",
        body,
    )


# --------------------------------------------------------------------------------------------
# The learner's notebook behind the launch and download buttons
# --------------------------------------------------------------------------------------------
EXERCISES = "exercises"


def _exercise_notebook(app: Any, pagename: str) -> Path | None:
    if not pagename.startswith("notebooks/"):
        return None
    path = Path(app.srcdir) / EXERCISES / (Path(pagename).name + ".ipynb")
    return path if path.exists() else None


def _exercise_buttons(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    exercise = _exercise_notebook(app, pagename)
    if exercise is None:
        for group in context.get("header_buttons", []):
            if group.get("label") == "download-buttons" and group.get("buttons"):
                _whole_pdf(app, pagename, group["buttons"])
        return
    relpath = f"{EXERCISES}/{exercise.name}"
    for group in context.get("header_buttons", []):
        buttons = group.get("buttons")
        if group.get("label") == "launch-buttons" and buttons:
            new = []
            for button in buttons:
                url = button.get("url", "")
                if button.get("type") != "link" or f"{pagename}.ipynb" not in url:
                    new.append(button)
                    continue
                new.append(
                    {
                        **button,
                        "text": f"{button['text']}: exercises",
                        "tooltip": f"Open the exercise notebook on {button['text']}",
                        "url": url.replace(f"{pagename}.ipynb", relpath),
                    }
                )
                new.append(
                    {
                        **button,
                        "text": f"{button['text']}: worked chapter",
                        "tooltip": f"Open the chapter with its solutions on {button['text']}",
                    }
                )
            group["buttons"] = new
        elif group.get("label") == "download-buttons" and buttons:
            _whole_pdf(app, pagename, buttons)
            for button in buttons:
                if button.get("label") == "download-source-button" and button.get(
                    "url", ""
                ).endswith(".ipynb"):
                    button["text"] = ".ipynb (worked chapter)"
                    button["tooltip"] = "Download the chapter with its solutions"
            depth = pagename.count("/")
            buttons.insert(
                0,
                {
                    "type": "link",
                    "url": "../" * depth + relpath,
                    "text": ".ipynb (exercises)",
                    "tooltip": "Download the exercise notebook",
                    "icon": "fas fa-file-code",
                    "label": "download-exercises-button",
                },
            )


def _whole_pdf(app: Any, pagename: str, buttons: list[dict]) -> None:
    """The theme's ".pdf" download is the browser's print dialog, which cuts code at the
    margin; where the book's PDF is part of the site, it downloads that instead."""
    if not (Path(app.outdir).parent / "latex" / PDF_NAME).exists():
        return
    for button in buttons:
        if button.get("label") == "download-pdf-button":
            button.pop("javascript", None)
            button.update(
                type="link",
                url="../" * pagename.count("/") + PDF_NAME,
                text=".pdf (the whole book)",
                tooltip="Download the book as PDF",
            )


def _copy_exercises(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.name != "html":
        return
    target = Path(app.outdir) / EXERCISES
    target.mkdir(exist_ok=True)
    for path in sorted((Path(app.srcdir) / EXERCISES).glob("*.ipynb")):
        shutil.copyfile(path, target / path.name)


# --------------------------------------------------------------------------------------------
# The date each page last changed, and a discussion link
# --------------------------------------------------------------------------------------------
def _last_changed(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    day = date.fromisoformat(out.stdout.strip())
    return f"{day.day} {day:%B %Y}"


def _around_the_page(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """The date the page's source last changed (from git, in the footer), and a link to the
    repository's discussions about this page."""
    if doctree is None or pagename not in app.env.all_docs:
        return
    changed = _last_changed(Path(app.env.doc2path(pagename)))
    if changed:
        context["last_updated"] = changed
    repository = app.config.html_theme_options.get("repository_url", "").rstrip("/")
    if not repository.startswith("https://github.com/"):
        return
    title = re.sub(r"<[^>]+>", "", context.get("title", "")).strip()
    title = re.sub(r"^\d+(\.\d+)*\.?\s+", "", title)  # a chapter's number is not in its name
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    buttons.append(
        {
            "type": "link",
            "url": f"{repository}/discussions?discussions_q={quote(title)}",
            "tooltip": "Discuss this page (GitHub Discussions)",
            "icon": "fas fa-comments",
            "label": "discussion-button",
        }
    )


# --------------------------------------------------------------------------------------------
# What a reader should not see, and the PDF
# --------------------------------------------------------------------------------------------
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)


def _without_markers(app: Any, doctree: Any, docname: str) -> None:
    for block in list(doctree.findall(nodes.literal_block)):
        text = block.astext()
        if "SOLUTION" not in text or not MARKERS.search(text):
            continue
        clean = MARKERS.sub("", text)
        block.rawsource = clean
        block.children = []
        block += nodes.Text(clean)


# How many characters of a code line fit the PDF's text width at each size of the
# monospaced font (measured: 78 at the default \\small, where longer lines broke).
FITS = {"small": 78, "footnotesize": 87, "scriptsize": 100, "tiny": 140}


def _pdf_layout(app: Any, doctree: Any, docname: str) -> None:
    if app.builder.format != "latex":
        return
    from sphinx_exercise.nodes import exercise_enumerable_node, solution_node

    # Solutions: left out, with where to find them.
    for node in list(doctree.findall(solution_node)):
        note = nodes.paragraph()
        note += nodes.emphasis(
            text="Solution: in the web version of the book, folded under the exercise, and "
            "in the chapter's notebook in notebooks/."
        )
        node.replace_self(note)
    # Exercises numbered as the HTML numbers them: chapter, then place in the chapter.
    count: dict[str, int] = {}
    for node in doctree.findall(exercise_enumerable_node):
        title = node.children[0] if node.children else None
        if not isinstance(title, nodes.title) or not title.children:
            continue
        first = title.children[0]
        match = re.match(r"(\S+) (\d+)((?:\.\d+)*)", first.astext())
        if not isinstance(first, nodes.Text) or not match:
            continue
        chapter = match.group(2)
        count[chapter] = count.get(chapter, 0) + 1
        text = f"{match.group(1)} {chapter}.{count[chapter]}" + first.astext()[match.end() :]
        title.replace(first, nodes.Text(text))
    # The introduction (the root page, which jupyterbook-latex prints after the contents
    # without its title) gets a heading, in the contents too.
    root = app.config.root_doc
    for section in doctree.findall(nodes.section):
        if section.get("docname") == root:
            heading = (
                "\\chapter*{Introduction}\\addcontentsline{toc}{chapter}{Introduction}"
                "\\markboth{Introduction}{Introduction}\n"
            )
            at = 1 if section.children and isinstance(section[0], nodes.title) else 0
            section.insert(at, nodes.raw("", heading, format="latex"))
            break
    # Code and outputs in the text width: a block whose longest line would not fit in the
    # default size is set in the largest size it fits (FITS), rather than broken across lines.
    for block in list(doctree.findall(nodes.literal_block)):
        widest = max((len(line) for line in block.astext().splitlines()), default=0)
        if widest <= FITS["small"]:
            continue
        size = next((s for s, fits in FITS.items() if widest <= fits), "tiny")
        parent = block.parent
        at = parent.index(block)
        parent.insert(at + 1, nodes.raw("", "\\endgroup\n", format="latex"))
        parent.insert(
            at, nodes.raw("", f"\\begingroup\\fvset{{fontsize=\\{size}}}\n", format="latex")
        )
    # Back matter: the reference pages unnumbered, the References page's empty chapter gone
    # (LaTeX prints the bibliography itself, at the end).
    from sphinx import addnodes

    back = ("book/faq", "book/questions", "book/glossary", "book/references")
    files = [f for f in doctree.findall(addnodes.start_of_file) if f.get("docname") in back]
    if files:
        files[0].insert(0, nodes.raw("", "\\setcounter{secnumdepth}{-1}\n", format="latex"))
    for file in files:
        if file.get("docname") == "book/references":
            for section in list(file.findall(nodes.section))[:1]:
                section.replace_self(
                    [c for c in section.children if not isinstance(c, nodes.title)]
                )


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.connect("html-page-context", _listed_bibliography)
    app.connect("html-page-context", _pdf_link)
    app.connect("html-page-context", _exercise_buttons, priority=600)
    app.connect("html-page-context", _around_the_page, priority=600)
    app.connect("doctree-resolved", _without_markers)
    app.connect("doctree-resolved", _pdf_layout)
    app.connect("build-finished", _copy_pdf)
    app.connect("build-finished", _copy_exercises)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
