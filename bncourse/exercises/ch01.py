"""Chapter 1, what BatchNorm does to a batch: standardize, Samuelson's bound, output.std()."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import (
    CheckFailed,
    Mistakes,
    as_array,
    compare,
    compare_number,
    compare_prediction,
    exercise,
    prediction,
    rng,
    tuple_text,
)

CHAPTER = "01_what_batchnorm_does"


# --------------------------------------------------------------------------------------------
# standardize: z-scores per feature of an (N, C) batch
# --------------------------------------------------------------------------------------------
STANDARDIZE = Mistakes()


@STANDARDIZE.add("unbiased standard deviation (ddof=1); BatchNorm divides by N, not N - 1")
def unbiased_std(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)


@STANDARDIZE.add(
    "statistics per row (axis=1, one per sample, like LayerNorm) instead of per feature (axis=0)"
)
def per_sample(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)


@STANDARDIZE.add("one mean and std for the whole array instead of one per feature (axis=0)")
def whole_array(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


@STANDARDIZE.add("min-max scaling to [0, 1] instead of a z-score")
def min_max(x: np.ndarray) -> np.ndarray:
    return (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))


@STANDARDIZE.add("subtracting the mean without dividing by the standard deviation")
def centered_only(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


@exercise(
    "standardize",
    chapter=CHAPTER,
    title="Standardize each feature",
    signature="standardize(x) -> array, for x of shape (N, C)",
)
def check_standardize(standardize: Callable[..., Any]) -> str:
    # This exercise has no eps; a learner who adds a small eps still passes (rtol 1e-4).
    for seed, shape in [(10, (5, 3)), (11, (3, 10)), (12, (8, 2))]:
        generator = rng(seed)
        x = generator.normal(size=shape) * generator.uniform(
            0.5, 3, size=shape[1]
        ) + generator.uniform(-3, 3, size=shape[1])
        before = x.copy()
        got = standardize(x)
        if not np.array_equal(x, before):
            raise CheckFailed("standardize changed its input x in place; return a new array")
        expected = (x - x.mean(0)) / x.std(0)
        compare(
            f"standardize(x) for x of shape {tuple_text(shape)}",
            got,
            expected,
            rtol=1e-4,
            atol=1e-6,
            mistakes=STANDARDIZE.answers(x),
        )
    return "z-scores per feature, with the biased (divide by N) standard deviation"


# --------------------------------------------------------------------------------------------
# extreme_batch: a batch whose largest |xhat| reaches sqrt(m - 1)
# --------------------------------------------------------------------------------------------
@exercise(
    "extreme-batch",
    chapter=CHAPTER,
    title="A batch that reaches Samuelson's bound",
    signature="extreme_batch(m) -> array of shape (m,)",
)
def check_extreme_batch(extreme_batch: Callable[..., Any]) -> str:
    for m in [2, 3, 5, 10, 64]:
        x = as_array(f"extreme_batch({m})", extreme_batch(m))
        if x.shape != (m,):
            raise CheckFailed(f"extreme_batch({m}) has shape {x.shape}, expected ({m},)")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise CheckFailed(f"extreme_batch({m}) contains non-finite values")
        with np.errstate(over="ignore", invalid="ignore"):
            std = x.std()
        if not np.isfinite(std):  # (x - mean)/std would be inf/inf: no bound is reached
            raise CheckFailed(
                f"extreme_batch({m}): the mean or the spread of your values overflows float64 "
                "(use moderate numbers: the bound does not depend on the scale)"
            )
        if std <= 1e-12 * max(1.0, np.abs(x).max()):
            raise CheckFailed(
                f"extreme_batch({m}) is constant: its normalized values are all 0 (0/0 without eps)"
            )
        largest = np.abs((x - x.mean()) / std).max()
        bound = math.sqrt(m - 1)
        if largest < bound * (1 - 1e-6):
            outliers = int(np.sum(np.abs(x - np.median(x)) > 1e-9 * (1 + np.abs(x).max())))
            hint = ""
            if outliers > 1:  # the mistake: spreading the values instead of one outlier
                hint = (
                    f" Your batch has {outliers} values away from the rest: put all the "
                    f"spread in one value and keep the other {m - 1} equal."
                )
            raise CheckFailed(
                f"for m={m} the largest |xhat| of your batch is {largest:.4f}, but the bound "
                f"sqrt(m-1) = {bound:.4f} is reachable.{hint}"
            )
    return "max |xhat| reaches sqrt(m - 1) for m = 2, 3, 5, 10, 64"


# --------------------------------------------------------------------------------------------
# expected_std: what output.std() prints for an (N, C) batch
# --------------------------------------------------------------------------------------------
EXPECTED_STD = Mistakes()


@EXPECTED_STD.add("output.std() is not 1: torch.Tensor.std divides by (number of values - 1)")
def exactly_one(n: int, c: int) -> float:
    return 1.0


@EXPECTED_STD.add(
    "output.std() is taken over all N*C values at once, not per column, so it divides by N*C - 1"
)
def per_column_correction(n: int, c: int) -> float:
    return math.sqrt(n / (n - 1))


@exercise(
    "expected-std",
    chapter=CHAPTER,
    title="Predict what output.std() prints",
    signature="expected_std(n, c) -> float",
)
def check_expected_std(expected_std: Callable[..., Any]) -> str:
    for n, c in [(3, 10), (2, 1), (16, 4), (100, 3)]:
        compare_number(
            f"expected_std({n}, {c})",
            expected_std(n, c),
            math.sqrt(n * c / (n * c - 1)),
            rtol=1e-6,
            mistakes=EXPECTED_STD.answers(n, c),
        )
    return "output.std() = sqrt(N*C / (N*C - 1)), e.g. 1.0171 for a (3, 10) batch"


# --------------------------------------------------------------------------------------------
# predict-output-sum: before the "not softmax" section
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-output-sum",
    chapter=CHAPTER,
    title="Predict what one feature's outputs sum to",
    signature="predicted_sum: a number, the sum of BatchNorm's 8 outputs of one feature",
)
def check_predict_output_sum(predicted_sum: Any) -> str:
    # Tolerance 0.01: the outputs sum to 0 up to float32 rounding (about 1e-6); 0 written to
    # two decimals passes, and softmax's 1 and "every output is 1" (8) are far outside.
    got = compare_prediction(
        "predicted_sum",
        predicted_sum,
        0.0,
        tolerance=0.01,
        mistakes={
            "BatchNorm is not softmax: it does not make values sum to 1, it centres each "
            "feature on its mean": 1.0,
            "the outputs are not all 1: each is (x - mean) / std, negative below the mean": 8.0,
        },
        otherwise="Each output is (x - mean) / std, and deviations from a mean sum to 0",
    )
    return f"you predicted {got}: the deviations from a feature's mean cancel"
