"""Sphinx extension of the course: each inline script once per page, bibliography entries a
screen reader can list, and the PDF of the book next to the site.

With Jupyter Book 1 on Sphinx 7.4, inline scripts that extensions add after the HTML builder
has started (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) are
registered twice, once as ``_JavaScript(None, body=...)`` and once as
``_JavaScript('', body=...)``, which Sphinx does not recognise as the same script. The second
``const`` declaration is a JavaScript error on every page ("Identifier 'THEBE_JS_URL' has
already been declared"), which the browser tests catch. This drops the repeats.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


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


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.connect("html-page-context", _listed_bibliography)
    app.connect("build-finished", _copy_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
