"""bncourse.plots: one namespace for every figure, and the tile pictures' arithmetic.

Every figure is drawn by the chapters (tests/test_notebooks.py runs them all); here, what the
chapters cannot see: that ``plots`` re-exports each module's figures, and that the memory
order chapter 8 draws is the tensor's.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")  # (a bare GPU machine may not have it)
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from bncourse import plots  # noqa: E402

MODULES = [
    importlib.import_module(f"bncourse.plots.{info.name}")
    for info in pkgutil.iter_modules(plots.__path__)
]


def test_plots_re_exports_every_figure_of_its_modules():
    exported = [name for module in MODULES for name in module.__all__]
    assert sorted(exported) == sorted(plots.__all__), "each name in exactly one module"
    for module in MODULES:
        for name in module.__all__:
            assert getattr(plots, name) is getattr(module, name), f"{module.__name__}.{name}"
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} has no docstring"


def _memory_order_by_values(t, plan):
    """The memory order another way: ``t`` holds each element's flat index, so reading its
    storage in order gives the elements in memory order."""
    storage = torch.as_strided(t, (t.numel(),), (1,)).numpy()
    n, c, s = np.unravel_index(storage, (t.shape[0], t.shape[1], t[0, 0].numel()))
    if plan.layout == "planes":
        return c, plots.program_of(plan, n, c, s)
    return c, plots.program_of(plan, np.zeros_like(n), c, n * t[0, 0].numel() + s)


def _programs_as_the_kernels_read(plan):
    """For each element of ``plan.view``, the program whose tiles cover it, found as the
    kernels find their tiles (``kernels.tile_offsets``): program ``(pid_t, pid_c)`` reads tiles
    ``pid_t * tiles_per_program + i`` of its block of channels."""
    n_view, c_view, s_view = plan.view
    owner = np.full(plan.view, -1)
    for pid_t in range(plan.programs):
        for pid_c in range(plan.channel_blocks):
            channels = slice(pid_c * plan.block_c, min((pid_c + 1) * plan.block_c, c_view))
            for i in range(plan.tiles_per_program):
                tile = pid_t * plan.tiles_per_program + i
                if tile >= plan.num_tiles:
                    break  # a padding tile: all masked off
                n, first = tile // plan.s_blocks, (tile % plan.s_blocks) * plan.block_s
                positions = slice(first, min(first + plan.block_s, s_view))
                assert (owner[n, channels, positions] == -1).all(), "read by two programs"
                owner[n, channels, positions] = pid_t * plan.channel_blocks + pid_c
    return owner


SHAPES = [
    ((2, 3, 2, 3), torch.contiguous_format),
    ((2, 3, 2, 3), torch.channels_last),
    ((3, 5, 2, 2, 3), torch.channels_last_3d),
    ((40, 6), torch.contiguous_format),
    ((3, 7, 5), torch.contiguous_format),
]


@pytest.mark.parametrize("shape, memory_format", SHAPES)
@pytest.mark.parametrize("tile_elements, target_programs", [(4, 4), (8, 3)])
def test_the_pictures_are_what_the_kernels_read(
    shape, memory_format, tile_elements, target_programs
):
    triton_bn = pytest.importorskip("bncourse.triton_bn")  # (Linux only)
    t = torch.arange(int(np.prod(shape))).reshape(shape).to(memory_format=memory_format)
    plan = triton_bn.tiling(t, tile_elements=tile_elements, target_programs=target_programs)
    owner = _programs_as_the_kernels_read(plan)
    assert (owner >= 0).all(), "every element is read"
    index = np.indices(plan.view)
    np.testing.assert_array_equal(plots.program_of(plan, *index), owner)
    channel, program = plots.memory_order(t, plan)
    expected_channel, expected_program = _memory_order_by_values(t, plan)
    np.testing.assert_array_equal(channel, expected_channel)
    np.testing.assert_array_equal(program, expected_program)


def test_tiles_in_memory_draws_one_strip_per_layout():
    triton_bn = pytest.importorskip("bncourse.triton_bn")
    shape = (2, 3, 2, 3)
    layouts = {}
    for name, memory_format in [
        ("NCHW", torch.contiguous_format),
        ("channels_last", torch.channels_last),
    ]:
        t = torch.zeros(shape).to(memory_format=memory_format)
        layouts[name] = (t, triton_bn.tiling(t, tile_elements=4, target_programs=4))
    fig = plots.tiles_in_memory(layouts)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["NCHW", "channels_last"]
    assert "(2, 3, 2, 3)" in fig.axes[-1].get_xlabel()
    plt.close(fig)


def test_the_bandwidth_model_is_bytes_over_the_published_bandwidth():
    """Chapter 8's prediction until a GPU run is recorded: each implementation's bytes (a copy
    2 passes, the fused kernels the minimal passes, torch_bn its operations' reads and writes)
    over the datasheet bandwidth of each GPU."""
    from bncourse import gpu_bench, torch_bn

    cases = [
        gpu_bench.Case((6, 4, 3, 5)),
        gpu_bench.Case((6, 4, 3, 5), "bfloat16", "channels_last"),
    ]
    rows = gpu_bench.bandwidth_model(cases)
    assert [(r["shape"], r["pass"]) for r in rows] == [
        ([6, 4, 3, 5], name) for _ in cases for name in gpu_bench.PASSES
    ]
    x = torch.randn(6, 4, 3, 5, requires_grad=True)
    weight, bias = torch.rand(4, requires_grad=True), torch.rand(4, requires_grad=True)

    def forward(x):
        return torch_bn.batch_norm(x, torch.zeros(4), torch.ones(4), weight, bias, True, 0.1, 1e-5)

    y, dy = forward(x), torch.randn(6, 4, 3, 5)
    counted = {
        "forward": gpu_bench.memory_passes(forward, x),
        "backward": gpu_bench.memory_passes(
            lambda x: torch.autograd.grad(y, (x, weight, bias), dy), x
        ),
    }
    passes = {name: sum(r + w for _, r, w in ops) for name, ops in counted.items()}
    float32_passes = {
        "forward": passes["forward"],
        "forward+backward": passes["forward"] + passes["backward"],
    }
    for r in rows:
        numel, itemsize = math.prod(r["shape"]), torch.finfo(getattr(torch, r["dtype"])).bits // 8
        assert r["bytes"]["copy"] == 2 * numel * itemsize
        assert r["bytes"]["fused"] == gpu_bench.PASSES[r["pass"]] * numel * itemsize
        if r["dtype"] == "float32":  # every tensor torch_bn touches is float32: bytes = passes
            assert r["bytes"]["torch_bn"] == float32_passes[r["pass"]] * numel * itemsize
        else:  # it computes in float32: more bytes than as many bfloat16 passes
            assert r["bytes"]["torch_bn"] > float32_passes[r["pass"]] * numel * itemsize
        for gpu, rate in gpu_bench.PUBLISHED_BANDWIDTH.items():
            for name, nbytes in r["bytes"].items():
                assert r["us"][gpu][name] == pytest.approx(nbytes / rate * 1e6)
    assert gpu_bench.PUBLISHED_BANDWIDTH == {
        "H100 SXM, 3.35 TB/s": 3.35e12,
        "H200, 4.8 TB/s": 4.8e12,
    }
    table = gpu_bench.format_model(rows)
    assert table.startswith("predicted, not measured")
    assert len(table.splitlines()) == 4 + len(rows)


def test_the_bandwidth_model_figure_is_labeled_predicted_and_draws_the_model():
    from bncourse import gpu_bench

    rows = gpu_bench.bandwidth_model([gpu_bench.Case((6, 4, 3, 5)), gpu_bench.Case((40, 6))])
    fig = plots.bandwidth_model_times(rows)
    assert "PREDICTED, NOT MEASURED" in fig._suptitle.get_text()
    gpus = list(gpu_bench.PUBLISHED_BANDWIDTH)
    for ax, pass_name in zip(fig.axes, gpu_bench.PASSES):
        assert ax.get_title() == f"{pass_name}: predicted, not measured"
        selected = [r for r in rows if r["pass"] == pass_name]
        widths = [patch.get_width() for patch in ax.patches]
        expected = []
        for (
            name
        ) in gpu_bench.MODEL_IMPLEMENTATIONS:  # one wide bar at the H100, one inner at the H200
            expected += [r["us"][gpus[0]][name] for r in selected]
            expected += [r["us"][gpus[1]][name] for r in selected]
        assert widths == pytest.approx(expected)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Chapter 7's diagnostics figures draw the data they are given
# --------------------------------------------------------------------------------------------
def test_gradient_histograms_count_the_nonzero_gradients_on_a_log_scale():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(32, 8)) * 10.0**-k for k in range(3)]
    g[1][:16] = 0.0  # half of layer 2 switched off
    fig = plots.gradient_histograms({"a": g, "b": [x * 2 for x in g]})
    assert len(fig.axes) == 6
    first = fig.axes[0::2]  # one row per layer, one column per key: "a" is the first column
    for ax, values in zip(first, g):
        assert sum(p.get_height() for p in ax.patches) == np.count_nonzero(values)
    assert first[1].get_title().endswith(" 50% zero")
    assert first[0].get_title().endswith(" 0% zero")
    median = np.median(np.abs(g[2]))
    assert f"median {median:.0e}" in first[2].get_title()
    plt.close(fig)


def test_zero_fractions_and_update_ratios_draw_one_smoothed_line_per_layer():
    steps, layers, window = 40, 3, 5
    values = np.linspace(0.1, 0.9, steps * layers).reshape(steps, layers)
    for draw, log in ((plots.zero_fractions, False), (plots.update_ratios, True)):
        fig = draw({"no norm": values, "BatchNorm": values[::-1]}, window=window)
        assert [ax.get_title() for ax in fig.axes] == ["no norm", "BatchNorm"]
        assert (fig.axes[0].get_yscale() == "log") == log
        lines = [line for line in fig.axes[1].get_lines() if len(line.get_xdata()) > 2]
        assert len(lines) == layers
        expected = np.convolve(values[::-1][:, 2], np.ones(window) / window, mode="valid")
        assert np.allclose(lines[2].get_ydata(), expected)
        assert lines[2].get_xdata()[0] == window - 1, "a moving average ends at its last step"
        plt.close(fig)


def test_seed_bands_and_seed_spread_show_the_median_or_mean_and_the_range():
    runs = [[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.5, 9.0], [2.0, 2.0, 2.0, 2.0]]
    fig = plots.seed_bands({"x": runs}, window=1)
    (line,) = fig.axes[0].get_lines()
    assert np.array_equal(line.get_ydata(), [2.0, 2.0, 2.0, 2.0]), "median, shortest length"
    plt.close(fig)
    values = np.array([[0.5, 0.9], [0.7, 0.95], [0.9, 1.0]])  # (seeds, points)
    fig = plots.seed_spread([4, 64], {"a": values}, "batch size", "accuracy")
    line = fig.axes[0].get_lines()[0]
    assert np.allclose(line.get_ydata(), values.mean(0))
    segments = fig.axes[0].collections[0].get_segments()  # the error bars: lowest to highest
    assert np.allclose([s[:, 1] for s in segments], [[0.5, 0.9], [0.9, 1.0]])
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Readable figures: each records its smallest text (the browser tests measure it on the page)
# --------------------------------------------------------------------------------------------
def _recorded_smallest_text(png: bytes) -> float | None:
    from PIL import Image

    value = Image.open(io.BytesIO(png)).text.get(plots.SMALLEST_FONT_KEY)
    return None if value is None else float(value)


def test_figure_png_records_the_smallest_text_drawn():
    """7 pt is the smallest drawn text; hidden text and the tick labels of an axes drawn
    without its axis are not drawn, so they do not count, however small."""
    fig, (ax, blank) = plt.subplots(1, 2, figsize=(4, 2), dpi=100)
    ax.set_title("seven points", fontsize=7)
    ax.text(0.5, 0.5, "hidden", fontsize=3, visible=False)
    ax.text(0.5, 0.2, "", fontsize=2)
    blank.tick_params(labelsize=4)
    blank.axis("off")
    png = base64.b64decode(plots.figure_png(fig))
    plt.close(fig)
    assert _recorded_smallest_text(png) == pytest.approx(7 * 100 / 72, abs=0.01)  # 2 decimals


CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_figure_of_a_chapter_records_text_of_at_least_the_smallest_size(path):
    """Each figure the chapter shows was made under ``use_course_style`` (its PNG records its
    smallest text) with no text under :data:`plots.SMALLEST_PT` points."""
    smallest = plots.SMALLEST_PT * 100 / 72 - 0.01  # at 100 dpi; recorded to 2 decimals
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            name = cell["metadata"].get("mystnb", {}).get("figure", {}).get("name", "a figure")
            recorded = _recorded_smallest_text(base64.b64decode(png))
            if recorded is None or recorded < smallest:
                found.append(f"{name}: {recorded}")
    assert not found, found


# The text column on a 390 px phone, as tests/test_site.py measures it in a browser; a PNG
# is shown at most that wide, so its text is at least recorded size x 342 / PNG width there.
PHONE_COLUMN_PX = 342


def _too_small_on_a_phone(notebook: dict) -> list[str]:
    found = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            data = base64.b64decode(png)
            width = int.from_bytes(data[16:20], "big")  # the IHDR chunk's width
            shown = (_recorded_smallest_text(data) or 0.0) * min(1.0, PHONE_COLUMN_PX / width)
            if shown < 8.0:
                found.append(f"{cell.get('id')}: {width} px wide, text {shown:.3f} px")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_figure_of_a_chapter_keeps_its_text_at_8_px_on_a_phone(path):
    """The browser test's phone rule (8 px), checked on the PNGs without a browser: a
    figure of text 13.89 px must be at most 593 px wide (594 px gives 7.997 px)."""
    found = _too_small_on_a_phone(json.loads(path.read_text()))
    assert not found, found


def test_the_phone_rule_fails_a_594_px_figure():
    fig, ax = plt.subplots(figsize=(6.2, 2))
    ax.set_title("a title as wide as the figure " * 2)
    fig.tight_layout()
    notebook = {
        "cells": [{"id": "wide", "outputs": [{"data": {"image/png": plots.figure_png(fig)}}]}]
    }
    plt.close(fig)
    assert _too_small_on_a_phone(notebook), "a 6.2 in figure crops to over 593 px"
