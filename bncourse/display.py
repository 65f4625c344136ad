"""Deterministic printing for the notebooks: rounded numbers, and what a call raises.

Notebooks are committed with their outputs and the test suite re-runs them and compares the
text, so every number a notebook prints goes through :func:`rounded`: values are rounded to a
few decimals (the last bits of a float differ between CPUs and libraries) and ``-0.0`` becomes
``0.0`` (rounding ``-1e-17`` gives ``-0.0``, which would print as ``-0.``). What prints a long
line (an error message, a module's ``repr``) goes through :func:`wrapped`: the book's code
column shows 83 characters. How small an error is (float64's against float32's, say) is
printed by :func:`magnitude`, as a power of ten above it that another CPU cannot change.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["rounded", "raised", "wrapped", "magnitude", "WIDTH"]

WIDTH = 79
"""Columns a printed line may take: the book's code column shows 83 characters at 1280 px."""


def rounded(value: Any, decimals: int = 4) -> Any:
    """``value`` (array, tensor or number) as NumPy data rounded to ``decimals``, no ``-0.0``.

    A 0-d result is returned as a Python float so that it prints as ``1.0171``, not
    ``array(1.0171)``.
    """
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    array = np.round(np.asarray(value, dtype=np.float64), decimals) + 0.0
    return float(array) if array.ndim == 0 else array


def raised(call: Callable[[], Any]) -> tuple[type, str] | None:
    """``(type, message)`` of the exception ``call()`` raises, or ``None`` if it returns:
    what two implementations are compared by when both must fail alike."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - whatever was raised is the answer
        return type(error), str(error)
    return None


def wrapped(text: Any, width: int = WIDTH) -> str:
    """``str(text)`` with every line longer than ``width`` wrapped at spaces; a continuation
    line is indented two spaces more than the line it continues (a module's ``repr`` keeps
    its nesting). A word longer than ``width`` is not broken."""
    lines = []
    for line in str(text).splitlines() or [""]:
        if len(line) <= width:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(
            textwrap.fill(
                line.strip(),
                width,
                initial_indent=indent,
                subsequent_indent=indent + "  ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def magnitude(value: Any, floor: float = 1e-13, margin: float = 2.0) -> str:
    """How small an error ``|value|`` is, as the power of ten above it: ``"below 1e-6"`` for
    a value between 1e-7 and 1e-6, and ``"below 1e-13"`` for anything under ``floor`` (the
    rounding of float64 arithmetic on numbers of order 1: about 1e-16, or exactly 0).

    The digits of a rounding error change with the CPU and the order of the additions, often
    by a factor of 2, so the text must not depend on them: a ``ValueError`` when ``|value|``
    is within a factor ``margin`` of a power of ten (or of ``floor``), where another machine
    could print the next one."""
    size = abs(float(value))
    if not math.isfinite(size):
        raise ValueError(f"magnitude: {value} is not a finite number")
    if size * margin <= floor:
        return f"below 1e{round(math.log10(floor))}"
    k = math.ceil(math.log10(size))
    if size / margin < floor or size * margin > 10**k or size / margin < 10 ** (k - 1):
        raise ValueError(
            f"magnitude: {size:.3g} is within a factor {margin:g} of a power of ten, so "
            "another CPU could print another one"
        )
    return f"below 1e{k}"
