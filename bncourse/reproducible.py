"""Pin the CPU code paths of the numerical libraries, so notebooks print the same digits.

The notebooks are committed with their outputs and re-run by the tests (nbval), possibly on a
different x86-64 machine. PyTorch, MKL, oneDNN and OpenBLAS pick their vectorized kernels at
run time from the CPU's instruction sets: on a CPU with AVX-512 they would sum in a different
order than on one with AVX2, and results that depend on the last bits (a catastrophic
cancellation demonstrated on purpose, or a long training run) would print differently.
:func:`reproducible_env` returns an environment that pins all of them to AVX2, which every
x86-64 CPU of the last decade has. Elsewhere (no AVX2, or not x86-64) it changes nothing.

This module uses only the standard library: ``course.py`` imports it before any dependency
is installed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["PINNED_CPU_ENV", "reproducible_env"]

PINNED_CPU_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorized kernels (Sleef, reductions)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility mode
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions on the CPU)
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's OpenBLAS: the AVX2 kernels
}


def _has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " avx2" in cpuinfo.read_text()


def reproducible_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) with :data:`PINNED_CPU_ENV` added where
    the CPU has AVX2; variables already set are left as they are."""
    env = dict(os.environ if base is None else base)
    if _has_avx2():
        for key, value in PINNED_CPU_ENV.items():
            env.setdefault(key, value)
    env.setdefault("PYTHONHASHSEED", "0")
    return env
