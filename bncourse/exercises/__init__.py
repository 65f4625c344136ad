"""The exercises of the course, one module per chapter: ``ch01`` ... ``ch09``.

Each chapter module holds, side by side, the inputs its checkers use, the mistakes they
recognise (small, named, wrong variants of the right code: :class:`base.Mistakes`) and the
checkers themselves, registered with :func:`base.exercise`. Importing this package registers
every exercise in :data:`base.EXERCISES`; :mod:`bncourse.checks` is the interface the
notebooks and the grader use (``check(id, candidate)``).
"""

from . import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09  # noqa: F401  (registers them)
from .base import EXERCISES

__all__ = ["EXERCISES"]
