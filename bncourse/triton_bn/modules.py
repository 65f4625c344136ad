"""``BatchNorm1d``/``2d``/``3d``: chapter 5's modules with the Triton kernels plugged in."""

from __future__ import annotations

from .. import torch_bn
from .functional import batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class BatchNorm1d(torch_bn.BatchNorm1d):
    """Drop-in for ``torch.nn.BatchNorm1d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)


class BatchNorm2d(torch_bn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)


class BatchNorm3d(torch_bn.BatchNorm3d):
    """Drop-in for ``torch.nn.BatchNorm3d`` computed by the Triton kernels."""

    functional = staticmethod(batch_norm)
