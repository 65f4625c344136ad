"""The kernels' modules against ``torch.nn``'s in float64, as chapter 8 checks them.

:func:`compare_with_torch_nn` runs a few steps of both on the same numbers and returns the
largest differences; :data:`TOLERANCE` is what chapter 8 allows for each input dtype.
(tests/test_triton_bn.py checks the same things more widely, with pytest's tolerances.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..conventions import MODULE_FOR_NDIM
from . import modules

__all__ = ["TOLERANCE", "compare_with_torch_nn"]

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2 * 2**-7, torch.float16: 2 * 2**-10}
"""For outputs and input gradients, relative, by input dtype: float32 sums of a few hundred
values; for the half types two units in the last place (the kernels compute in float32 and
round once).  Weight gradients and running variances are float32 for every input: 1e-5."""

_MEMORY_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def compare_with_torch_nn(
    shape: tuple[int, ...], layout: str, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Three steps (train, train, eval) of triton_bn's module and of torch.nn's in float64,
    fed the same numbers (``x`` of ``shape`` and ``dtype``, in ``layout``: ``"contiguous"`` or
    ``"channels_last"``), on ``device``.

    Returns the largest differences, each relative to the size of the value (at least 1):
    ``"values"``, of the outputs and input gradients; ``"params"``, of the weight gradients
    and running variances.  The reference is float64 for every ``dtype``, so that the
    differences are the kernels' rounding alone.
    """
    generator = torch.Generator().manual_seed(1)
    name = MODULE_FOR_NDIM[len(shape)]
    ours = getattr(modules, name)(shape[1]).to(device)
    theirs = getattr(nn, name)(shape[1]).to(device, torch.float64)
    worst = dict(values=0.0, params=0.0)
    for step, training in enumerate([True, True, False]):
        ours.train(training)
        theirs.train(training)
        # The same numbers for both: rounded to dtype, then widened for the reference
        x = (torch.randn(shape, generator=generator) * 2 + 3 + step).to(dtype)
        if layout == "channels_last":
            x = x.to(memory_format=_MEMORY_FORMATS[len(shape)])
        dy = torch.randn(shape, generator=generator).to(dtype)
        xs = [
            x.to(device).clone().requires_grad_(),
            x.to(device, torch.float64).clone().requires_grad_(),
        ]
        ys = ours(xs[0]), theirs(xs[1])
        ys[0].backward(dy.to(device))
        ys[1].backward(dy.to(device, torch.float64))
        pairs = {
            "values": [ys, (xs[0].grad, xs[1].grad)],
            "params": [
                (ours.weight.grad, theirs.weight.grad),
                (ours.running_var, theirs.running_var),
            ],
        }
        for key, tensors in pairs.items():
            for a, b in tensors:
                a, b = a.detach().double(), b.detach().double()
                difference = ((a - b).abs() / b.abs().clamp(min=1)).max().item()
                worst[key] = max(worst[key], difference)
        ours.zero_grad()
        theirs.zero_grad()
    return worst
