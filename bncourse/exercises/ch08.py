"""Chapter 8, BatchNorm on the GPU: bytes moved, Welford's update, per-tile partial statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import (
    CheckFailed,
    Mistakes,
    compare,
    compare_number,
    compare_prediction,
    exercise,
    prediction,
    rng,
    tuple_text,
    unpack,
)

CHAPTER = "08_gpu_triton"


# --------------------------------------------------------------------------------------------
# bn_bytes: what a training BatchNorm moves, forward (2 reads, 1 write) and backward (4 + 1)
# --------------------------------------------------------------------------------------------
FORWARD_BYTES, BACKWARD_BYTES = Mistakes(), Mistakes()  # arguments: (shape, itemsize)
PER_SAMPLE = (
    "every value of the tensor moves, all N * C * H * W of them, not one per sample and channel"
)
NOT_BYTES = (
    "a count of values, not of bytes: multiply by the itemsize (4 for float32, 2 for bfloat16)"
)
BITS = "bits, not bytes: the itemsize is already in bytes"


def _size(shape: tuple[int, ...], itemsize: int) -> int:
    return math.prod(shape) * itemsize


def _per_sample(shape: tuple[int, ...], itemsize: int) -> int | None:
    """The bytes of one value per sample and channel, or None where that is every value."""
    per_sample = shape[0] * shape[1] * itemsize
    return None if per_sample == _size(shape, itemsize) else per_sample


def wrong_units(passes):
    """The unit mistakes, the same for any count of passes: values, bits, or one sample's bytes."""

    def generate(shape, itemsize):
        yield NOT_BYTES, passes * math.prod(shape)
        yield BITS, passes * _size(shape, itemsize) * 8
        per_sample = _per_sample(shape, itemsize)
        if per_sample is not None:
            yield PER_SAMPLE, passes * per_sample

    return generate


@FORWARD_BYTES.add(
    "the forward reads the input twice (once for the statistics, once to "
    "normalize) and writes the output once: 3 passes over the tensor"
)
def forward_one_read(shape, itemsize):
    return 2 * _size(shape, itemsize)


FORWARD_BYTES.family(wrong_units(passes=3))


@BACKWARD_BYTES.add(
    "dx is written too: the backward reads x and dy twice each and writes dx, 5 passes"
)
def backward_without_writing(shape, itemsize):
    return 4 * _size(shape, itemsize)


@BACKWARD_BYTES.add(
    "x and dy are each read twice: once for the two per-channel sums, and again "
    "for dx, which needs the finished sums"
)
def backward_one_read_each(shape, itemsize):
    return 3 * _size(shape, itemsize)


@BACKWARD_BYTES.add("that counts the forward too: the backward alone is 4 reads and 1 write")
def backward_with_the_forward(shape, itemsize):
    return 8 * _size(shape, itemsize)


BACKWARD_BYTES.family(wrong_units(passes=5))


@exercise(
    "bn-bytes",
    chapter=CHAPTER,
    title="Bytes a BatchNorm layer moves in training",
    signature="bn_bytes(shape, itemsize) -> (forward_bytes, backward_bytes)",
)
def check_bn_bytes(bn_bytes: Callable[..., Any]) -> str:
    for shape, itemsize in [
        ((256, 64, 56, 56), 4),
        ((65536, 256), 4),
        ((32, 128, 28, 28), 2),
        ((8, 3, 5), 2),
    ]:
        name = f"bn_bytes({tuple_text(shape)}, itemsize={itemsize})"
        forward, backward = unpack(
            name, bn_bytes(shape, itemsize), ("forward_bytes", "backward_bytes")
        )
        size = _size(shape, itemsize)
        compare_number(
            f"the forward's bytes from {name}",
            forward,
            3 * size,
            rtol=0,
            mistakes=FORWARD_BYTES.answers(shape, itemsize),
        )
        compare_number(
            f"the backward's bytes from {name}",
            backward,
            5 * size,
            rtol=0,
            mistakes=BACKWARD_BYTES.answers(shape, itemsize),
        )
    return (
        "forward 2 reads + 1 write, backward 4 reads + 1 write of N * C * (spatial) values "
        "of itemsize bytes"
    )


# --------------------------------------------------------------------------------------------
# welford_update: one more value into a running (count, mean, M2)
# --------------------------------------------------------------------------------------------
def welford(count: int, mean: np.ndarray, m2: np.ndarray, x: np.ndarray) -> tuple[Any, ...]:
    """The right update: ``(count + 1, mean + delta / (count + 1), M2 + delta * (x - new
    mean))`` with ``delta = x - mean``."""
    new_count = count + 1
    delta = x - mean
    new_mean = mean + delta / new_count
    return float(new_count), new_mean, m2 + delta * (x - new_mean)


COUNT, MEAN, M2 = Mistakes(), Mistakes(), Mistakes()  # arguments: (count, mean, m2, x)


@COUNT.add("the count must grow by one with every value")
def count_unchanged(count, mean, m2, x):
    return float(count)


@MEAN.add(
    "the new mean is not the average of the old mean and x: it moves by (x - mean) / count "
    "with the new count"
)
def mean_averaged_with_x(count, mean, m2, x):
    return (mean + x) / 2


@MEAN.add("the step divides by the new count (count + 1), the number of values including x")
def mean_step_over_the_old_count(count, mean, m2, x):
    return mean + (x - mean) / count if count > 0 else None


@M2.add(
    "M2 grows by (x - old mean) * (x - new mean), one factor from before the update and one "
    "from after, not (x - old mean)^2"
)
def m2_with_the_old_mean_twice(count, mean, m2, x):
    return m2 + (x - mean) ** 2


@M2.add("M2 grows by (x - old mean) * (x - new mean), not (x - new mean)^2")
def m2_with_the_new_mean_twice(count, mean, m2, x):
    return m2 + (x - welford(count, mean, m2, x)[1]) ** 2


@M2.add(
    "M2 is a sum of squared deviations from the mean, not a sum of squares (E[x^2] - E[x]^2 "
    "is what Welford's update avoids)"
)
def m2_as_a_sum_of_squares(count, mean, m2, x):
    return m2 + x**2


@M2.add("M2 is the sum, not the variance: M2 / count is the variance")
def m2_as_the_variance(count, mean, m2, x):
    new_count, _, new_m2 = welford(count, mean, m2, x)
    return new_m2 / new_count


@exercise(
    "welford-update",
    chapter=CHAPTER,
    title="Welford's update: one more value into (count, mean, M2)",
    signature="welford_update(count, mean, m2, x) -> (count, mean, m2); mean, m2 and x of "
    "shape (C,)",
)
def check_welford_update(welford_update: Callable[..., Any]) -> str:
    values = rng(80).normal(loc=[5.0, -3.0, 1e4], scale=[2.0, 0.5, 1.0], size=(9, 3))
    # Later steps first: from an empty or one-value start several mistakes coincide (with
    # count 0, x^2 is (x - mean)^2), so a wrong update is named where they differ.
    for i in [*range(3, len(values)), 0, 1, 2]:
        seen = values[:i]
        mean = seen.mean(0) if i else np.zeros(3)
        m2 = ((seen - mean) ** 2).sum(0) if i else np.zeros(3)
        x = values[i]
        name = f"welford_update after {i} value{'s' if i != 1 else ''}"
        result = welford_update(i, mean.copy(), m2.copy(), x.copy())
        new_count, new_mean, new_m2 = unpack(name, result, ("count", "mean", "m2"))
        whole = values[: i + 1]
        compare_number(
            f"the count from {name}",
            new_count,
            float(i + 1),
            rtol=0,
            mistakes=COUNT.answers(i, mean, m2, x),
        )
        compare(
            f"the mean from {name}",
            new_mean,
            whole.mean(0),
            rtol=1e-9,
            atol=1e-9,
            mistakes=MEAN.answers(i, mean, m2, x),
        )
        compare(
            f"M2 from {name}",
            new_m2,
            ((whole - whole.mean(0)) ** 2).sum(0),
            rtol=1e-7,
            atol=1e-9,
            mistakes=M2.answers(i, mean, m2, x),
        )
    return "count, mean and M2 after every value, from an empty start, also for a channel near 1e4"


# --------------------------------------------------------------------------------------------
# tile_partials: (count, mean, M2) of every tile of a 1-d array
# --------------------------------------------------------------------------------------------
def tiles_of(values: np.ndarray, tile: int) -> list[np.ndarray]:
    """``values`` cut into tiles of ``tile`` values, the last one shorter where they do not
    divide."""
    return [values[i : i + tile] for i in range(0, len(values), tile)]


COUNTS, MEANS, M2S = Mistakes(), Mistakes(), Mistakes()  # arguments: (values, tile)
DROPPED = "the last, shorter tile was dropped: it holds the len(values) % tile values that are left"


def _ragged(values: np.ndarray, tile: int) -> bool:
    return len(values) % tile != 0


@COUNTS.add(DROPPED)
def counts_without_the_last_tile(values, tile):
    return (len(values) // tile,) if _ragged(values, tile) else None  # a shape: one tile fewer


@COUNTS.add("the last tile is shorter: count the values it really holds")
def counts_all_full(values, tile):
    return np.full(len(tiles_of(values, tile)), float(tile)) if _ragged(values, tile) else None


@MEANS.add(DROPPED)
def means_without_the_last_tile(values, tile):
    return (len(values) // tile,) if _ragged(values, tile) else None


@MEANS.add("the last tile's sum was divided by the tile size, not by its count")
def means_over_the_full_size(values, tile):
    if not _ragged(values, tile):
        return None
    tiles = tiles_of(values, tile)
    return np.array([t.mean() for t in tiles[:-1]] + [tiles[-1].sum() / tile])


@MEANS.add("every tile got the mean of all values: each tile has its own")
def means_all_the_same(values, tile):
    return np.full(len(tiles_of(values, tile)), values.mean())


@M2S.add(DROPPED)
def m2s_without_the_last_tile(values, tile):
    return (len(values) // tile,) if _ragged(values, tile) else None


@M2S.add("M2 is the sum of squared deviations, not the variance (do not divide by the count)")
def m2s_as_variances(values, tile):
    return np.array([t.var() for t in tiles_of(values, tile)])


@M2S.add("the deviations are from the mean of all values; M2 of a tile uses the tile's own mean")
def m2s_about_the_overall_mean(values, tile):
    return np.array([((t - values.mean()) ** 2).sum() for t in tiles_of(values, tile)])


@exercise(
    "tile-partials",
    chapter=CHAPTER,
    title="Per-tile partial statistics",
    signature="tile_partials(values, tile) -> (counts, means, m2s), each of shape (T,), "
    "T = ceil(len(values) / tile)",
)
def check_tile_partials(tile_partials: Callable[..., Any]) -> str:
    generator = rng(81)
    for n, tile in [(23, 5), (16, 4), (7, 10), (30, 7)]:
        values = generator.normal(loc=3.0, scale=2.0, size=n)
        values += np.repeat(generator.uniform(-4, 4, size=-(-n // tile)), tile)[
            :n
        ]  # per-tile offsets
        name = f"tile_partials(values of length {n}, tile={tile})"
        counts, means, m2s = unpack(
            name, tile_partials(values.copy(), tile), ("counts", "means", "m2s")
        )
        tiles = tiles_of(values, tile)
        compare(
            f"the counts from {name}",
            counts,
            np.array([len(t) for t in tiles], dtype=float),
            mistakes=COUNTS.answers(values, tile),
            check_dtype=False,
        )
        compare(
            f"the means from {name}",
            means,
            np.array([t.mean() for t in tiles]),
            mistakes=MEANS.answers(values, tile),
            check_dtype=False,
        )
        compare(
            f"the M2s from {name}",
            m2s,
            np.array([((t - t.mean()) ** 2).sum() for t in tiles]),
            mistakes=M2S.answers(values, tile),
            check_dtype=False,
        )
    return "count, mean and M2 of every tile, the last one shorter when len(values) % tile != 0"


# --------------------------------------------------------------------------------------------
# predict-programs: the warm-up kernel's grid
# --------------------------------------------------------------------------------------------
@prediction(
    "predict-programs",
    chapter=CHAPTER,
    title="Predict how many programs the row sum launches",
    signature="predicted_programs: an integer, for row_sum of a (6, 10) tensor",
)
def check_predict_programs(predicted_programs: Any) -> str:
    # A count: exact (tolerance 0).
    got = compare_prediction(
        "predicted_programs",
        predicted_programs,
        6,
        tolerance=0.0,
        mistakes={
            "one program per value: a program handles a whole block of values, here a row": 60,
            "BLOCK (16) is the length of each program's block, not the number of programs": 16,
            "one program per column: program_id(0) picks the row": 10,
            "the grid (rows,) launches one program per row, not one for the tensor": 1,
        },
        otherwise="The grid is (rows,): one program per row",
    )
    return f"you predicted {got}: the grid (6,) launches one program per row"


# --------------------------------------------------------------------------------------------
# row-max: the warm-up kernel, changed into a per-row maximum
# --------------------------------------------------------------------------------------------
ROW_MAX = Mistakes()


@ROW_MAX.add(
    "the masked lanes are loaded as 0 (other=0.0), which wins over negative rows: load them as -inf"
)
def masked_as_zero(x: Any) -> Any:
    import torch

    cols = x.shape[1]
    padded = 1 << (cols - 1).bit_length() > cols  # the block: cols up to a power of two
    return torch.clamp(x.amax(dim=1), min=0.0) if padded else None


@ROW_MAX.add("tl.sum instead of tl.max: the row's sum, not its largest value")
def row_sums(x: Any) -> Any:
    return x.sum(dim=1)


@ROW_MAX.add("the maximum of each column (one program per column), not of each row")
def column_max(x: Any) -> Any:
    return x.amax(dim=0)


@exercise(
    "row-max",
    chapter=CHAPTER,
    title="A per-row maximum in Triton",
    signature="row_max(x) -> tensor of shape (rows,), for a 2-d CPU tensor x",
)
def check_row_max(row_max: Any) -> str:
    import torch

    generator = torch.Generator().manual_seed(80)
    # Ragged rows (10 and 33 values in blocks of 16 and 64), a row of one value, an exact
    # power of two, and rows of negative values only, where a masked lane loaded as 0 wins.
    for shape, shift in [((6, 10), 0.0), ((4, 33), -5.0), ((3, 1), -2.0), ((5, 16), 1.0)]:
        x = torch.randn(shape, generator=generator, dtype=torch.float64) + shift
        x[0] = -x[0].abs() - 1.0  # one row with no positive value
        before = x.clone()
        got = row_max(x)
        if not torch.equal(x, before):
            raise CheckFailed("row_max changed its input x; write to a new tensor")
        # The largest value is one of the inputs, exactly: only rounding-free answers pass
        # (tolerance 0 up to compare's atol=1e-6, which no mistake here comes near).
        compare(
            f"row_max(x) for x of shape {tuple_text(shape)}",
            got,
            x.amax(dim=1).numpy(),
            mistakes={cause: answer.numpy() for cause, answer in ROW_MAX.answers(x).items()},
        )
    return "the largest value of each row, ragged rows and negative rows included"
