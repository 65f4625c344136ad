"""bncourse.plots: one namespace for every figure, and the tile pictures' arithmetic.

Every figure is drawn by the chapters (tests/test_notebooks.py runs them all); here, what the
chapters cannot see: that ``plots`` re-exports each module's figures, and that the memory
order chapter 8 draws is the tensor's.
"""

from __future__ import annotations

import importlib
import pkgutil

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
