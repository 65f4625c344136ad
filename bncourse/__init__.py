"""bncourse: the helper package of the course "Batch Normalization, from scratch to the GPU".

Modules (each one small; read them alongside the chapters), from the bottom up (a module
imports only the modules of its own line or of the lines above it):

* :mod:`bncourse.conventions` -- shapes, reduction axes, ``m``, PyTorch's error wording, Chan's
  merge: what every BatchNorm of the course shares, written once.
* :mod:`bncourse.numpy_bn` -- the reference NumPy BatchNorm: forward, running statistics,
  backward (chapters 2 to 4).
* :mod:`bncourse.validation` -- what ``F.batch_norm`` checks, in its order and words.
* :mod:`bncourse.torch_bn` -- PyTorch BatchNorm with a hand-written backward: ``batch_norm`` and
  drop-in ``BatchNorm1d/2d/3d`` (chapter 5); :mod:`bncourse.compiled_bn` -- the same, its
  passes fused by ``torch.compile`` (chapter 5's "Fusing the passes").
* :mod:`bncourse.triton_bn` -- BatchNorm as Triton kernels (compiled for CUDA tensors, run by
  Triton's interpreter for CPU tensors): ``batch_norm`` and ``BatchNorm1d/2d/3d`` (chapter 8).
* :mod:`bncourse.distributed` -- SyncBatchNorm on ``torch.distributed``;
  :mod:`bncourse.launch` starts real process groups on this machine (chapter 9).
* :mod:`bncourse.fold` -- BatchNorm folded into the preceding Linear/Conv for inference.
* :mod:`bncourse.norm_family` -- BatchNorm, LayerNorm, InstanceNorm, GroupNorm by reduced axes.
* :mod:`bncourse.training` -- the scikit-learn digits as tensors, small models, a seeded
  float64 training loop (chapter 7); :mod:`bncourse.ddp_train` -- its CNN trained with DDP
  and SyncBatchNorm under ``torchrun`` (chapter 9).
* :mod:`bncourse.variance_methods` -- chapter 8's ways to compute a variance.
* :mod:`bncourse.gradcheck` -- central differences, relative errors, gradcheck of a batch_norm.
* :mod:`bncourse.bench` -- forward+backward timings, eager and compiled, against ``torch.nn``
  and a plain copy;
  :mod:`bncourse.gpu_bench` -- the GPU benchmark (Triton, cuDNN, ATen, a copy) and its
  results file.
* :mod:`bncourse.exercises` -- each chapter's exercises (``ch01`` ... ``ch09``): inputs, the
  mistakes they recognise, checkers; :mod:`bncourse.checks` -- ``check(id, candidate)``.
* :mod:`bncourse.plots` -- the figures of the book; :mod:`bncourse.display` -- rounded,
  deterministic printing; :mod:`bncourse.reproducible` -- the CPU code paths notebooks run on.
* :mod:`bncourse.notebooks`, :mod:`bncourse.plain_markdown`, :mod:`bncourse.exercise_notebooks`
  -- running chapters and comparing their outputs, the book's MyST as plain Markdown,
  generating the exercise notebooks from them.
* :mod:`bncourse.grading` -- grading that learner code cannot fake: the ``grade`` command,
  the learner's code in a bubblewrap sandbox, the checkers outside it on plain data, the
  class's gradebook and report; :mod:`bncourse.grader` -- its public names, kept.
"""

__version__ = "0.1.0"
