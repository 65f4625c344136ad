"""bncourse: the helper package of the course "Batch Normalization, from scratch to the GPU".

Modules (each one small, read them alongside the chapters):

* :mod:`bncourse.numpy_bn` -- the reference NumPy BatchNorm: forward, running statistics, backward.
* :mod:`bncourse.torch_bn` -- PyTorch BatchNorm with a hand-written backward: ``batch_norm`` and
  drop-in ``BatchNorm1d/2d/3d``.
* :mod:`bncourse.triton_bn` -- BatchNorm as Triton kernels (compiled for a GPU, or run by
  Triton's interpreter on CPU tensors): ``batch_norm`` and ``BatchNorm1d/2d/3d``.
* :mod:`bncourse.bench` -- forward+backward timings against ``torch.nn`` and a plain copy;
  :mod:`bncourse.gpu_bench` -- the GPU benchmark (Triton, cuDNN, ATen, a copy) and its
  results file.
* :mod:`bncourse.gradcheck` -- central-difference gradients and relative errors.
* :mod:`bncourse.checks` -- exercise checkers (``check(id, candidate)``).
* :mod:`bncourse.misconceptions` -- known mistakes, used by the checkers to name them.
* :mod:`bncourse.training` -- the scikit-learn digits as tensors, small models, a seeded
  training loop.
* :mod:`bncourse.distributed` -- SyncBatchNorm on ``torch.distributed``;
  :mod:`bncourse.launch` starts real process groups on this machine.
* :mod:`bncourse.fold` -- BatchNorm folded into the preceding Linear/Conv for inference.
* :mod:`bncourse.norm_family` -- BatchNorm, LayerNorm, InstanceNorm, GroupNorm by reduced axes.
* :mod:`bncourse.grader`, :mod:`bncourse.exercise_notebooks` -- grading learner notebooks and
  generating them from the chapters.
* :mod:`bncourse.display` -- rounded, deterministic printing for the notebooks.
* :mod:`bncourse.plots` -- the figures of the book.
"""

__version__ = "0.1.0"
