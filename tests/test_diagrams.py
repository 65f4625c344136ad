"""The diagrams of ``bncourse.plots.diagrams``: what each panel says, and that they are
deterministic (the chapters only check that a figure is drawn)."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")  # (a bare GPU machine may not have it)
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from bncourse import plots  # noqa: E402
from bncourse.plots import diagrams  # noqa: E402


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


@pytest.mark.parametrize(
    "draw",
    [
        diagrams.train_eval_dataflow,
        lambda: diagrams.sync_batchnorm_messages(4),
        diagrams.fold_diagram,
    ],
)
def test_each_diagram_is_the_same_picture_every_time(draw):
    first, second = draw(), draw()
    assert np.array_equal(_pixels(first), _pixels(second))
    plt.close("all")


def test_train_eval_dataflow_writes_buffers_in_training_only():
    fig = plots.train_eval_dataflow()
    training, evaluation = fig.axes
    assert "train" in training.get_title() and "eval" in evaluation.get_title()
    train_text, eval_text = " ".join(_texts(training)), " ".join(_texts(evaluation))
    assert "+= 1" in train_text and "+= 1" not in eval_text  # num_batches_tracked
    assert "written: every buffer" in train_text and "written: nothing" in eval_text
    assert "running values" in eval_text and "running values" not in train_text
    # the batch statistics box is drawn dashed (unused) in eval mode only
    dashed = [[p for p in ax.patches if p.get_linestyle() == "--"] for ax in (training, evaluation)]
    assert len(dashed[0]) == 0 and len(dashed[1]) == 2  # batch statistics, num_batches_tracked
    plt.close(fig)


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_sync_batchnorm_messages_draws_one_row_per_rank_with_the_message_sizes(processes):
    fig = plots.sync_batchnorm_messages(processes)
    forward, backward = fig.axes
    for ax in (forward, backward):
        ranks = [t for t in _texts(ax) if t.startswith("rank ")]
        assert [t.split(":")[0] for t in ranks] == [f"rank {k}" for k in range(processes)]
    assert _texts(forward).count("1 + 2C") == processes  # (count, mean, M2) of C channels
    assert _texts(forward).count(f"{processes} × (1 + 2C)") == processes
    assert _texts(backward).count("2C") == 2 * processes  # sum dy and sum dy (x - mean)
    assert "all_gather" in _texts(forward) and "all_reduce (sum)" in _texts(backward)
    plt.close(fig)


def test_sync_batchnorm_messages_refuses_no_process():
    with pytest.raises(ValueError, match="at least 1"):
        plots.sync_batchnorm_messages(0)


def test_fold_diagram_names_the_layer_and_the_folded_parameters():
    fig = plots.fold_diagram("Linear")
    text = " ".join(_texts(fig.axes[0]))
    assert "Linear" in text and "Conv2d" not in text
    for formula in (
        r"W' = a\,W",
        r"c' = a\,(c - \mu) + \beta",
        r"a = \gamma / \sqrt{\sigma^2 + \epsilon}",
    ):
        assert formula in text
    plt.close(fig)
