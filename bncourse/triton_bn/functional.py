"""The host side: ``batch_norm`` and its autograd function, which launch the kernels.

Every launch takes the kernels of the input's device (:func:`.backends.for_device`: compiled
for CUDA, interpreted for the CPU) and names its arguments as the kernel does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import triton
from torch import Tensor

from ..validation import accumulation_dtype, apply_checked
from . import backends
from .tiles import Tiling, accumulation_type, dense, launch_options, reduce_options, tiling

__all__ = [
    "partial_stats",
    "batch_stats",
    "DOUBLE_BACKWARD",
    "TRANSFORMS",
    "TritonBatchNormFunction",
    "batch_norm",
]


def _on_device(x: Tensor) -> AbstractContextManager[Any]:
    """Launch on ``x``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else nullcontext()


def _flat(t: Tensor | None) -> Tensor | None:
    """A per-channel tensor (``C`` elements: a weight or bias of any shape, a running
    statistic of shape ``(C,)``) as a contiguous ``(C,)`` view of the same memory when
    possible, else a contiguous copy (a strided running statistic is written back after the
    kernels updated the copy)."""
    if t is None:
        return None
    return t.view(-1) if t.is_contiguous() else t.reshape(-1).contiguous()


def partial_stats(x: Tensor, plan: Tiling | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pass 1 alone: the partial ``(counts, means, m2s)``, each ``(P, C)`` in the accumulation
    dtype; row ``p`` summarizes the values program ``p`` read (its tiles, every channel).
    ``conventions.merge_stats(counts[:, 0], means, m2s)`` merges them."""
    x = dense(x)
    plan = plan or tiling(x)
    kernels = backends.for_device(x.device)
    acc = accumulation_dtype(x.dtype)
    counts, means, m2s = torch.empty((3, plan.programs, plan.view[1]), dtype=acc, device=x.device)
    with _on_device(x):
        kernels.stats_kernel[plan.grid](
            x_ptr=x,
            count_ptr=counts,
            mean_ptr=means,
            m2_ptr=m2s,
            **plan.kernel_args(),
            **launch_options(plan, x),
        )
    return counts, means, m2s


def _statistics(
    x: Tensor,
    plan: Tiling,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Passes 1 and 2: per-channel ``(mean, var, invstd)`` in the accumulation dtype, and
    the running statistics updated in place (training, when given)."""
    kernels = backends.for_device(x.device)
    c = plan.view[1]
    mean, var, invstd = torch.empty((3, c), dtype=accumulation_dtype(x.dtype), device=x.device)
    m = x.numel() // c
    # Pass 1 (training only): the partial statistics of every program
    if training:
        counts, means, m2s = partial_stats(x, plan)
        partials = plan.programs
    else:
        counts = means = m2s = mean  # not read in evaluation
        partials = 1
    # Pass 2: merge them, and update the running statistics in the same launch
    update = training and running_mean is not None
    rm, rv = _flat(running_mean), _flat(running_var)
    options = reduce_options(partials, c)
    with _on_device(x):
        kernels.finalize_stats_kernel[(triton.cdiv(c, options["BLOCK_C"]),)](
            count_ptr=counts,
            mean_ptr=means,
            m2_ptr=m2s,
            P=partials,
            C=c,
            running_mean_ptr=rm if rm is not None else mean,
            running_var_ptr=rv if rv is not None else var,
            out_mean_ptr=mean,
            out_var_ptr=var,
            out_invstd_ptr=invstd,
            inv_m=1.0 / m,
            unbias=m / (m - 1) if m > 1 else 1.0,
            momentum=momentum,
            eps=eps,
            TRAINING=training,
            UPDATE=update,
            ACC=accumulation_type(x.dtype),
            num_warps=4,
            **options,
        )
    for given, flat in ((running_mean, rm), (running_var, rv)):
        if update and given is not None and flat.data_ptr() != given.data_ptr():
            given.copy_(flat.view_as(given))  # a non-contiguous buffer: write back
    return mean, var, invstd


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x`` (``(N, C, *spatial)``) by the kernels
    (passes 1 and 2), each ``(C,)`` in the accumulation dtype."""
    x = dense(x)
    backends.check_devices(x)
    mean, var, _ = _statistics(x, tiling(x), None, None, True, 0.0, 1.0)
    return mean, var


DOUBLE_BACKWARD = (
    "bncourse.triton_bn does not support double backward (create_graph=True: second "
    "derivatives, gradient penalties, Hessian-vector products): its backward pass runs Triton "
    "kernels, which autograd cannot differentiate. Use bncourse.torch_bn (or torch.nn), whose "
    "backward is made of differentiable operations."
)


class TritonBatchNormFunction(torch.autograd.Function):
    """BatchNorm as one autograd node computed by the Triton kernels.

    ``apply(input, weight, bias, running_mean, running_var, training, momentum, eps)``: the
    arguments of :class:`bncourse.torch_bn.BatchNormFunction`, already checked by
    :func:`bncourse.validation.apply_checked`.  Saves the (dense) input, ``weight``, and the
    per-channel ``mean`` and ``invstd``; the output, ``dx`` and a ``dy`` of another layout
    all take the dense input's strides (a ``channels_last`` input gives a ``channels_last``
    output). Differentiable once: a backward with ``create_graph=True`` raises
    :data:`DOUBLE_BACKWARD` (rather than gradients that second derivatives would see as
    constants).
    """

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
    ) -> Tensor:
        backends.check_devices(input, weight, bias, running_mean, running_var)
        kernels = backends.for_device(input.device)
        x = dense(input)
        plan = tiling(x)
        # Passes 1 and 2: the statistics (and the running statistics' update)
        mean, _, invstd = _statistics(x, plan, running_mean, running_var, training, momentum, eps)
        # Pass 3: normalize (a missing weight or bias: any pointer, never read)
        w, b = _flat(weight), _flat(bias)
        if training:  # y = (x - mean) * invstd * weight + bias
            center, scale = mean, invstd
        else:  # the fixed affine map x * a + (bias - mean * a), as ATen computes it
            scale = invstd if w is None else invstd * w
            center, w, b = (
                torch.zeros_like(mean),
                None,
                -mean * scale if b is None else b - mean * scale,
            )
        y = torch.empty_like(x)
        with _on_device(x):
            kernels.normalize_kernel[plan.grid](
                x_ptr=x,
                y_ptr=y,
                mean_ptr=center,
                invstd_ptr=scale,
                weight_ptr=w if w is not None else mean,
                bias_ptr=b if b is not None else mean,
                **plan.kernel_args(),
                HAS_WEIGHT=w is not None,
                HAS_BIAS=b is not None,
                **launch_options(plan, x),
            )
        # (the input itself too when x is a dense copy of it: so that changing it in place
        # before the backward is autograd's error, as with torch.nn, not a silent stale copy)
        ctx.save_for_backward(x, weight, mean, invstd, None if x is input else input)
        ctx.training, ctx.plan = training, plan
        ctx.bias_like = None if bias is None else (bias.dtype, bias.shape)
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: the kernels' sums are not a graph
            raise RuntimeError(DOUBLE_BACKWARD)
        x, weight, mean, invstd, _ = ctx.saved_tensors
        kernels = backends.for_device(x.device)
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        plan: Tiling = ctx.plan
        c = plan.view[1]
        dy = grad_output
        if dy.stride() != x.stride():  # e.g. an expanded gradient, or another memory format
            dy = torch.empty_like(x).copy_(grad_output)
        acc = accumulation_dtype(x.dtype)
        # The sums are needed for a parameter's gradient, or for dx in training
        has_sums = need_weight or need_bias or (need_input and ctx.training)
        options = launch_options(plan, x)
        partials = plan.programs if has_sums else 1
        sum_dy, sum_dy_xc = torch.empty((2, partials, c), dtype=acc, device=x.device)
        grad_weight = torch.empty(c, dtype=weight.dtype, device=x.device) if need_weight else None
        grad_bias = torch.empty(c, dtype=ctx.bias_like[0], device=x.device) if need_bias else None
        coef = torch.empty((3, c), dtype=acc, device=x.device)
        w = _flat(weight)
        reduce = reduce_options(partials, c)
        with _on_device(x):
            # Pass 1: per-program sums of dy and dy * (x - mean)
            if has_sums:
                kernels.backward_sums_kernel[plan.grid](
                    x_ptr=x,
                    dy_ptr=dy,
                    mean_ptr=mean,
                    sum_dy_ptr=sum_dy,
                    sum_dy_xc_ptr=sum_dy_xc,
                    **plan.kernel_args(),
                    **options,
                )
            # Pass 2: the totals, the parameters' gradients and dx's coefficients
            kernels.backward_finalize_kernel[(triton.cdiv(c, reduce["BLOCK_C"]),)](
                sum_dy_ptr=sum_dy,
                sum_dy_xc_ptr=sum_dy_xc,
                P=partials,
                C=c,
                invstd_ptr=invstd,
                weight_ptr=w if w is not None else invstd,
                grad_weight_ptr=grad_weight if grad_weight is not None else coef,
                grad_bias_ptr=grad_bias if grad_bias is not None else coef,
                coef_ptr=coef,
                inv_m=1.0 / (x.numel() // c),
                HAS_SUMS=has_sums,
                HAS_WEIGHT=w is not None,
                WANT_WEIGHT=need_weight,
                WANT_BIAS=need_bias,
                TRAINING=ctx.training,
                ACC=options["ACC"],
                num_warps=4,
                **reduce,
            )
            # Pass 3: dx
            grad_input = None
            if need_input:
                grad_input = torch.empty_like(x)
                kernels.grad_input_kernel[plan.grid](
                    x_ptr=x,
                    dy_ptr=dy,
                    dx_ptr=grad_input,
                    mean_ptr=mean,
                    coef_ptr=coef,
                    **plan.kernel_args(),
                    TRAINING=ctx.training,
                    **options,
                )
        if grad_weight is not None:
            grad_weight = grad_weight.view(weight.shape)
        if grad_bias is not None:
            grad_bias = grad_bias.view(ctx.bias_like[1])
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


TRANSFORMS = (
    "bncourse.triton_bn cannot run under {}: its kernels are launched from Python on the "
    "tensors' memory, which a tracing transform does not have (it traces with stand-ins) "
    "and cannot see into. Use bncourse.torch_bn or bncourse.compiled_bn (or torch.nn), which "
    "work under every transform torch.nn does; under torch.compile without fullgraph=True, "
    "triton_bn runs eagerly between the compiled parts."
)


def _refuse_tracing_transforms() -> None:
    """A clear error under the transforms that trace instead of running (the kernels would
    fail deep inside Triton's launcher or interpreter)."""
    if torch.jit.is_tracing():
        raise RuntimeError(TRANSFORMS.format("torch.jit.trace"))
    if torch.compiler.is_exporting():
        raise RuntimeError(TRANSFORMS.format("torch.export"))
    if torch._C._functorch.peek_interpreter_stack() is not None:
        raise RuntimeError(TRANSFORMS.format("torch.func's transforms (vmap, grad, jacrev, jvp)"))


@torch.compiler.disable(reason="bncourse.triton_bn launches Triton kernels from Python")
def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``torch.nn.functional.batch_norm`` computed by the Triton kernels.

    The signature, semantics, checks and error messages of :func:`bncourse.torch_bn.batch_norm`
    (they share :func:`bncourse.validation.apply_checked`).  ``input``: ``(N, C)`` or
    ``(N, C, *spatial)``, float32, float16, bfloat16 or float64, on a CUDA device (compiled
    kernels) or the CPU (Triton's interpreter). Under ``torch.compile`` it runs eagerly
    between the compiled parts (with ``fullgraph=True``, TorchDynamo's error names the
    reason); under ``torch.export``, ``torch.jit.trace`` and ``torch.func``'s transforms it
    raises :data:`TRANSFORMS`, which names what to use instead.
    """
    _refuse_tracing_transforms()
    return apply_checked(
        TritonBatchNormFunction,
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    )
