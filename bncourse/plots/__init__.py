"""The figures of the book, one function each.

Every function draws on a new figure and returns it (:func:`reduction_pattern` draws on an
``ax`` it is given); the notebook then calls ``plt.show()``.  Call :func:`use_course_style`
once at the top of a notebook so all figures share one look.  Colours come from :data:`COLORS`.

The modules, by what they draw:

* :mod:`.style`: the colours, the course's look and the size of a figure's smallest text;
* :mod:`.distributions`: a batch's values before and after normalizing (chapters 1 and 2);
* :mod:`.reductions`: which values share statistics, for BatchNorm and its family (2, 9);
* :mod:`.gradients`: the backward pass and finite differences (3);
* :mod:`.estimates`: batch statistics as estimates, running averages (4, 9);
* :mod:`.numerics`: rounding, between implementations and in float32 variances (5, 8);
* :mod:`.identity`: BatchNorm recovering the identity (6);
* :mod:`.training`: training with and without BatchNorm (7, 9);
* :mod:`.diagnostics`: inside a training run (gradients, zero ReLUs, update/weight) and
  spreads over seeds (7);
* :mod:`.timings`: CPU timings, the recorded GPU benchmark and its bandwidth model (3, 5, 8, 9);
* :mod:`.fusion`: eager, compiled, ATen and a copy, in copies' worth (5);
* :mod:`.tiles`: which Triton program reads which part of memory (8).
* :mod:`.diagrams`: boxes and arrows: train vs eval data flow (4), SyncBatchNorm's messages
  and folding (9).
"""

from __future__ import annotations

from .diagnostics import (
    gradient_histograms,
    seed_bands,
    seed_spread,
    update_ratios,
    zero_fractions,
)
from .diagrams import fold_diagram, sync_batchnorm_messages, train_eval_dataflow
from .distributions import (
    channel_stats,
    eps_gain,
    histograms_before_after,
    samuelson_bound,
    scaling_comparison,
)
from .estimates import running_stats_trace, statistic_noise_vs_batch, variance_bias
from .fusion import fusion_bars
from .gradients import computational_graph, difference_error_vs_h, gradient_agreement
from .identity import identity_error_vs_batch_size, parameter_trajectories
from .numerics import agreement_over_steps, variance_error_by_method
from .reductions import normalization_family, reduction_pattern
from .style import (
    COLORS,
    MAX_WIDTH_IN,
    SMALLEST_FONT_KEY,
    SMALLEST_PT,
    color,
    figure_png,
    legend_below,
    smallest_font_px,
    use_course_style,
)
from .tiles import memory_order, program_of, tiles_in_memory
from .timings import (
    bandwidth_model_times,
    bench_bars,
    gpu_bench_bandwidth,
    gpu_bench_times,
    timing_bars,
)
from .training import (
    accuracy_grids,
    activation_histograms,
    activation_scale,
    batch_size_sweep,
    epoch_accuracies,
    loss_curves,
)

__all__ = [
    "COLORS",
    "color",
    "use_course_style",
    "MAX_WIDTH_IN",
    "SMALLEST_PT",
    "SMALLEST_FONT_KEY",
    "figure_png",
    "legend_below",
    "smallest_font_px",
    "scaling_comparison",
    "histograms_before_after",
    "samuelson_bound",
    "eps_gain",
    "channel_stats",
    "reduction_pattern",
    "normalization_family",
    "computational_graph",
    "gradient_agreement",
    "difference_error_vs_h",
    "running_stats_trace",
    "variance_bias",
    "statistic_noise_vs_batch",
    "agreement_over_steps",
    "variance_error_by_method",
    "identity_error_vs_batch_size",
    "parameter_trajectories",
    "accuracy_grids",
    "loss_curves",
    "activation_scale",
    "activation_histograms",
    "batch_size_sweep",
    "epoch_accuracies",
    "gradient_histograms",
    "zero_fractions",
    "update_ratios",
    "seed_bands",
    "seed_spread",
    "timing_bars",
    "bench_bars",
    "fusion_bars",
    "gpu_bench_times",
    "gpu_bench_bandwidth",
    "bandwidth_model_times",
    "program_of",
    "memory_order",
    "tiles_in_memory",
    "train_eval_dataflow",
    "sync_batchnorm_messages",
    "fold_diagram",
]
