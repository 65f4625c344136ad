"""Sphinx extension of the course: emit each inline script once per page.

With Jupyter Book 1 on Sphinx 7.4, inline scripts that extensions add after the HTML builder
has started (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) are
registered twice, once as ``_JavaScript(None, body=...)`` and once as
``_JavaScript('', body=...)``, which Sphinx does not recognise as the same script. The second
``const`` declaration is a JavaScript error on every page ("Identifier 'THEBE_JS_URL' has
already been declared"), which the browser tests catch. This drops the repeats.
"""

from __future__ import annotations

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


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
