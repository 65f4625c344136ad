"""Deterministic printing for the notebooks.

Notebooks are committed with their outputs and the test suite re-runs them and compares the
text, so every number a notebook prints goes through :func:`rounded`: values are rounded to a
few decimals (the last bits of a float differ between CPUs and libraries) and ``-0.0`` becomes
``0.0`` (rounding ``-1e-17`` gives ``-0.0``, which would print as ``-0.``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rounded"]


def rounded(value: Any, decimals: int = 4) -> Any:
    """``value`` (array, tensor or number) as NumPy data rounded to ``decimals``, no ``-0.0``.

    A 0-d result is returned as a Python float so that it prints as ``1.0171``, not
    ``array(1.0171)``.
    """
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    array = np.round(np.asarray(value, dtype=np.float64), decimals) + 0.0
    return float(array) if array.ndim == 0 else array
