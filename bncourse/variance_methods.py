"""Five ways to compute a variance in float32, and the data that tells them apart (chapter 8).

Every method takes ``x``, a float32 NumPy array of shape ``(C, m)``: one row per channel,
``m`` values each (rows, unlike BatchNorm's ``(N, C)``, so that a channel's values are
contiguous).  It returns the ``(C,)`` biased variances (divided by ``m``), computed in float32
arithmetic throughout, except where a method says otherwise:

* :func:`naive_rounded`: ``E[x^2] - E[x]^2`` with both means exact, each rounded to float32;
* :func:`naive`: ``E[x^2] - E[x]^2`` from float32 sums;
* :func:`two_pass`: the mean first, then the mean of the squared deviations from it;
* :func:`welford`: one value at a time, updating ``(count, mean, M2)`` (Welford, 1962);
* :func:`chan_tiles`: a two-pass ``(count, mean, M2)`` per tile of 256 values, the tiles
  merged by Chan's formula (:func:`bncourse.conventions.chan_merge`), as the Triton kernels
  of :mod:`bncourse.triton_bn` do.

Welford's update is Chan's merge with a part of one value (count 1, ``M2`` 0), and is written
so here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .conventions import chan_merge

__all__ = ["naive_rounded", "naive", "two_pass", "welford", "chan_tiles", "METHODS", "channels"]


def naive_rounded(x: np.ndarray) -> np.ndarray:
    """``E[x^2] - E[x]^2``, each mean computed exactly (float64) and rounded to float32."""
    exact = x.astype(np.float64)
    return np.float32((exact**2).mean(axis=1)) - np.float32(exact.mean(axis=1)) ** 2


def naive(x: np.ndarray) -> np.ndarray:
    """``E[x^2] - E[x]^2`` from float32 sums of ``x`` and ``x^2``."""
    return (x * x).mean(axis=1, dtype=np.float32) - x.mean(axis=1, dtype=np.float32) ** 2


def two_pass(x: np.ndarray) -> np.ndarray:
    """The mean first, then the mean of ``(x - mean)^2``: two reads of the data."""
    mean = x.mean(axis=1, dtype=np.float32)
    return ((x - mean[:, None]) ** 2).mean(axis=1, dtype=np.float32)


def welford(x: np.ndarray) -> np.ndarray:
    """One value per channel at a time: ``(count, mean, M2)`` merged with a
    part of one value. (The counts are float32, exact up to 2^24 values.)"""
    zeros = np.zeros(len(x), np.float32)
    state = (np.float32(1), x[:, 0], zeros)
    for value in x[:, 1:].T:
        state = chan_merge(*state, np.float32(1), value, zeros)
    count, _, m2 = state
    return m2 / count


def chan_tiles(x: np.ndarray, tile: int = 256) -> np.ndarray:
    """A two-pass ``(count, mean, M2)`` of each tile of ``tile`` consecutive
    values (the last may be shorter), the tiles merged one after another by
    Chan's formula."""
    state = None
    for start in range(0, x.shape[1], tile):
        part = x[:, start : start + tile]
        mean = part.mean(axis=1, dtype=np.float32)
        m2 = ((part - mean[:, None]) ** 2).sum(axis=1, dtype=np.float32)
        stats = (np.float32(part.shape[1]), mean, m2)
        state = stats if state is None else chan_merge(*state, *stats)
    count, _, m2 = state
    return m2 / count


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "naive, rounded": naive_rounded,
    "naive": naive,
    "two-pass": two_pass,
    "Welford": welford,
    "Chan (tiles of 256)": chan_tiles,
}
"""The five methods, by the names chapter 8 prints."""


def channels(mean: float, seed: int = 0) -> np.ndarray:
    """16 channels (rows) of 4096 float32 values drawn around ``mean``, standard deviation 1:
    ``(16, 4096)``."""
    return (
        np.random.default_rng(seed).normal(loc=mean, scale=1.0, size=(16, 4096)).astype(np.float32)
    )
