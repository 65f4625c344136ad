"""Chapter 8's exercises, BatchNorm on the GPU: right answers pass, known mistakes are named.

The wrong implementations are written the way a learner would write them (see
exercise_testing.py for the conventions these modules share).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bncourse.checks import CheckFailed, check
from exercise_testing import standard_tests

CHAPTER = "08_gpu_triton"


def right_bn_bytes(shape, itemsize):
    from bncourse.gpu_bench import PASSES

    size = math.prod(shape) * itemsize
    return PASSES["forward"] * size, (PASSES["forward+backward"] - PASSES["forward"]) * size


def right_welford_update(count, mean, m2, x):
    count += 1
    delta = x - mean
    mean = mean + delta / count
    return count, mean, m2 + delta * (x - mean)


def right_tile_partials(values, tile):
    from bncourse.distributed import local_stats

    parts = [
        local_stats(torch.from_numpy(values[i : i + tile]).reshape(-1, 1))
        for i in range(0, len(values), tile)
    ]
    return tuple(torch.stack([part[k].reshape(()) for part in parts]).numpy() for k in range(3))


def bytes_one_pass_forward(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 2 * n, 5 * n  # "read it, write it"


def bytes_without_dx_write(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 4 * n


def bytes_backward_reads_once(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 3 * n


def bytes_backward_with_forward(shape, itemsize):
    n = math.prod(shape) * itemsize
    return 3 * n, 8 * n


def bytes_in_values(shape, itemsize):
    n = math.prod(shape)
    return 3 * n, 5 * n


def bytes_in_bits(shape, itemsize):
    n = math.prod(shape) * itemsize * 8
    return 3 * n, 5 * n


def bytes_per_sample_and_channel(shape, itemsize):
    n = shape[0] * shape[1] * itemsize
    return 3 * n, 5 * n


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (bytes_one_pass_forward, "the forward reads the input twice"),
        (bytes_without_dx_write, "dx is written too"),
        (bytes_backward_reads_once, "x and dy are each read twice"),
        (bytes_backward_with_forward, "that counts the forward too"),
        (bytes_in_values, "a count of values, not of bytes"),
        (bytes_in_bits, "bits, not bytes"),
        (bytes_per_sample_and_channel, "all N \\* C \\* H \\* W of them"),
        (lambda shape, itemsize: 3 * math.prod(shape) * itemsize, "should return a tuple"),
    ],
)
def test_bn_bytes_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("bn-bytes", wrong)


def welford_not_counting(count, mean, m2, x):
    new_count, new_mean, new_m2 = right_welford_update(count, mean, m2, x)
    return count, new_mean, new_m2


def welford_old_count(count, mean, m2, x):
    delta = x - mean
    mean = mean + delta / max(count, 1)
    return count + 1, mean, m2 + delta * (x - mean)


def welford_average(count, mean, m2, x):
    new_mean = (mean + x) / 2
    return count + 1, new_mean, m2 + (x - mean) * (x - new_mean)


def welford_delta_squared(count, mean, m2, x):
    delta = x - mean
    return count + 1, mean + delta / (count + 1), m2 + delta * delta


def welford_new_deviation_squared(count, mean, m2, x):
    mean = mean + (x - mean) / (count + 1)
    return count + 1, mean, m2 + (x - mean) ** 2


def welford_sum_of_squares(count, mean, m2, x):
    return count + 1, mean + (x - mean) / (count + 1), m2 + x * x


def welford_variance(count, mean, m2, x):
    new_count, new_mean, new_m2 = right_welford_update(count, mean, m2, x)
    return new_count, new_mean, new_m2 / new_count


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (welford_not_counting, "the count must grow by one"),
        (welford_old_count, "divides by the new count"),
        (welford_average, "not the average of the old mean and x"),
        (welford_delta_squared, r"not \(x - old mean\)\^2"),
        (welford_new_deviation_squared, r"not \(x - new mean\)\^2"),
        (welford_sum_of_squares, "not a sum of squares"),
        (welford_variance, "M2 is the sum, not the variance"),
    ],
)
def test_welford_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("welford-update", wrong)


def tiles_of(values, tile):
    return [values[i : i + tile] for i in range(0, len(values), tile)]


def tile_partials_full_counts(values, tile):
    _, means, m2s = right_tile_partials(values, tile)
    return np.full(len(means), tile), means, m2s


def tile_partials_dropping_the_tail(values, tile):
    usable = values[: len(values) // tile * tile].reshape(-1, tile)
    mean = usable.mean(1)
    return np.full(len(usable), tile), mean, ((usable - mean[:, None]) ** 2).sum(1)


def tile_partials_sum_over_tile(values, tile):
    counts, _, m2s = right_tile_partials(values, tile)
    return counts, np.array([t.sum() / tile for t in tiles_of(values, tile)]), m2s


def tile_partials_global_mean(values, tile):
    counts, _, m2s = right_tile_partials(values, tile)
    return counts, np.full(len(counts), values.mean()), m2s


def tile_partials_variance(values, tile):
    tiles = tiles_of(values, tile)
    return (
        np.array([len(t) for t in tiles]),
        np.array([t.mean() for t in tiles]),
        np.array([t.var() for t in tiles]),
    )


def tile_partials_global_deviations(values, tile):
    tiles = tiles_of(values, tile)
    return (
        np.array([len(t) for t in tiles]),
        np.array([t.mean() for t in tiles]),
        np.array([((t - values.mean()) ** 2).sum() for t in tiles]),
    )


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (tile_partials_full_counts, "count the values it really holds"),
        (tile_partials_dropping_the_tail, "the last, shorter tile was dropped"),
        (tile_partials_sum_over_tile, "divided by the tile size"),
        (tile_partials_global_mean, "every tile got the mean of all values"),
        (tile_partials_variance, "not the variance"),
        (tile_partials_global_deviations, "the tile's own mean"),
    ],
)
def test_tile_partials_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("tile-partials", wrong)


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (60, "one program per value"),
        (16, "BLOCK"),
        (10, "one program per column"),
        (1, "one program per row, not one for the tensor"),
        (7, "The grid is"),
        ((6,), "should be a number"),
    ],
)
def test_predict_programs_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("predict-programs", wrong)


def launch_row_kernel(kernel, x, rows=None):
    """Launch a learner's per-row kernel on ``x`` as the exercise's wrapper does."""
    import triton

    from bncourse.triton_bn import warmup

    rows = x.shape[0] if rows is None else rows
    out = torch.empty(x.shape[0], dtype=x.dtype)
    warmup.launcher(kernel, x.device)[(rows,)](
        x_ptr=x,
        out_ptr=out,
        n_cols=x.shape[1],
        stride_row=x.stride(0),
        BLOCK=triton.next_power_of_2(x.shape[1]),
    )
    return out


def right_row_max(x):
    import triton.language as tl

    def kernel(x_ptr, out_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        values = tl.load(x_ptr + row * stride_row + cols, mask=mask, other=-float("inf"))
        tl.store(out_ptr + row, tl.max(values, axis=0))

    return launch_row_kernel(kernel, x.contiguous())


def row_max_other_zero(x):
    import triton.language as tl

    def kernel(x_ptr, out_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        values = tl.load(x_ptr + row * stride_row + cols, mask=cols < n_cols, other=0.0)
        tl.store(out_ptr + row, tl.max(values, axis=0))

    return launch_row_kernel(kernel, x.contiguous())


def row_max_with_sum(x):
    import triton.language as tl

    def kernel(x_ptr, out_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        values = tl.load(x_ptr + row * stride_row + cols, mask=cols < n_cols, other=0.0)
        tl.store(out_ptr + row, tl.sum(values, axis=0))

    return launch_row_kernel(kernel, x.contiguous())


def row_max_per_column(x):
    return right_row_max(x.t().contiguous())


def row_max_in_place(x):
    out = right_row_max(x)
    x.zero_()
    return out


@pytest.mark.parametrize(
    "wrong, diagnosis",
    [
        (row_max_other_zero, "loaded as 0"),
        (row_max_with_sum, "tl.sum instead of tl.max"),
        (row_max_per_column, "each column"),
        (row_max_in_place, "changed its input"),
    ],
)
def test_row_max_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        check("row-max", wrong)


RIGHT = {
    "bn-bytes": right_bn_bytes,
    "welford-update": right_welford_update,
    "tile-partials": right_tile_partials,
    "predict-programs": 6,
    "row-max": right_row_max,
}

(
    test_every_exercise_of_the_chapter_has_a_right_answer,
    test_right_answers_pass_with_one_line,
    test_a_stub_is_not_attempted,
) = standard_tests(CHAPTER, RIGHT)
