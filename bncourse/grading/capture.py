"""Run in the learner's kernel after the notebook: write each exercise's function as bytes.

The grader appends one cell to the learner's notebook that calls :func:`capture` with the
course's list of ``{exercise id: function name}``. Each function (or class) found in the
kernel's namespace is serialized *by value* with cloudpickle (the code of functions and
classes defined in the notebook, and the values of the globals they use; modules by name)
into ``FOLDER/<id>.pkl``; a name that is not defined, or cannot be serialized, gives
``FOLDER/<id>.problem.json`` instead.

Nothing here decides anything: the learner's code has run in this kernel and may have
changed this module too. Whatever lands in the folder is only a *candidate*, loaded again by
the runner in the same sandbox (:mod:`bncourse.grading.runner`); the judge never reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["capture"]


def capture(
    functions: dict[str, str], namespace: dict[str, Any], folder: str, skipped: tuple = ()
) -> None:
    """Write every function of ``functions`` (id -> name) found in ``namespace`` to ``folder``;
    ``skipped``: the names that appear only in cells the grader did not run (tagged
    ``grader-skip``), for the message when one is missing."""
    import cloudpickle

    out = Path(folder)
    for exercise_id, name in functions.items():
        problem = None
        if name not in namespace and name in skipped:
            problem = (
                f"{name} is defined only in a cell tagged grader-skip, which the grader does not "
                "run (a long demonstration's tag, copied with the cell?): remove that tag"
            )
        elif name not in namespace:
            problem = (
                f"{name} is not defined: run the cell that defines it, and check that it runs "
                "without an error"
            )
        else:
            try:
                data = cloudpickle.dumps(namespace[name])
                part = out / f"{exercise_id}.pkl.part"  # then renamed: a write that a timeout
                part.write_bytes(data)  # interrupts leaves no half file behind the real name
                part.replace(out / f"{exercise_id}.pkl")
            except Exception as error:
                problem = (
                    f"{name} could not be sent to the grader ({type(error).__name__}: {error}); "
                    "does it hold an open file, a generator or a lock?"
                )
        if problem:
            (out / f"{exercise_id}.problem.json").write_text(
                json.dumps({"status": "error", "message": problem})
            )
