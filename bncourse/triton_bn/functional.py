"""The host side: ``batch_norm`` and the PyTorch operators that launch the kernels.

The forward and backward passes are operators of the ``bncourse`` namespace, registered with
``torch.library.triton_op`` (each launch wrapped in ``torch.library.wrap_triton``), the
backward as the forward's autograd formula (``register_autograd``).  So PyTorch knows them
as it knows its own: ``torch.compile`` (with ``fullgraph=True`` too) and ``torch.export``
put them in the graph, meta tensors and fake tensors (``FakeTensor``) get the outputs'
shapes, dtypes and strides from the same code with the launches left out, and
``torch.jit.trace`` records them.  Where they run, every launch takes the kernels of the
input's device (:func:`.backends.for_device`: compiled for CUDA, interpreted for the CPU)
and names its arguments as the kernel does.  Under ``torch.compile`` on a GPU, PyTorch sees
the kernels themselves (``triton_op`` decomposes the operator into its launches); on the
CPU, where the kernels run in Triton's interpreter, which no compiler backend can call, the
operator stays whole in the graph and runs as it does eagerly.
"""

from __future__ import annotations

import types
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Optional

import torch
import triton
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode
from torch.library import triton_op, wrap_triton

from ..validation import accumulation_dtype, apply_checked
from . import backends
from .tiles import Tiling, accumulation_type, dense, launch_options, reduce_options, tiling

__all__ = [
    "partial_stats",
    "batch_stats",
    "DOUBLE_BACKWARD",
    "TRANSFORMS",
    "batch_norm",
]


class _Traced:
    """The kernels as ``torch.library.wrap_triton`` gives them, for a launch on stand-ins:
    recorded in the graph (``torch.compile`` on a GPU), or nothing at all (``FakeTensor``)."""

    def __getattr__(self, name: str) -> Any:
        return wrap_triton(getattr(backends.COMPILED, name))


class _Skipped:
    """A kernel launched on meta tensors: no memory, nothing to compute."""

    def __getitem__(self, grid: Any) -> Any:
        return lambda **arguments: None


_TRACED = _Traced()
_SKIPPED = types.SimpleNamespace(**{name: _Skipped() for name in vars(backends.COMPILED)})


def _stand_in(x: Tensor) -> bool:
    """Is ``x`` a stand-in for a tensor (PyTorch tracing: fake or functional), not memory?"""
    return isinstance(x, (FakeTensor, FunctionalTensor))


def _kernels(x: Tensor) -> Any:
    """The kernels that launch on ``x``: its device's (:func:`.backends.for_device`), or
    for a stand-in ``wrap_triton``'s, or none for a meta tensor."""
    if _stand_in(x):
        return _TRACED
    if x.is_meta:
        return _SKIPPED
    return backends.for_device(x.device)


def _on_device(x: Tensor) -> AbstractContextManager[Any]:
    """Launch on ``x``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda and not _stand_in(x) else nullcontext()


def _flat(t: Tensor | None) -> Tensor | None:
    """A per-channel tensor (``(C,)``: :func:`bncourse.validation.apply_checked` flattened
    the weight and bias) contiguous: itself, or a contiguous copy (a strided running
    statistic is written back after the kernels updated the copy)."""
    if t is None:
        return None
    return t if t.is_contiguous() else t.contiguous()


def partial_stats(x: Tensor, plan: Tiling | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pass 1 alone: the partial ``(counts, means, m2s)``, each ``(P, C)`` in the accumulation
    dtype; row ``p`` summarizes the values program ``p`` read (its tiles, every channel).
    ``conventions.merge_stats(counts[:, 0], means, m2s)`` merges them."""
    x = dense(x)
    plan = plan or tiling(x)
    kernels = _kernels(x)
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
    kernels = _kernels(x)
    c = plan.view[1]
    mean, var, invstd = (
        torch.empty(c, dtype=accumulation_dtype(x.dtype), device=x.device) for _ in range(3)
    )  # (an operator's outputs: three tensors, no views)
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
        if update and given is not None and flat is not given:
            given.copy_(flat)  # a non-contiguous buffer: write back
    return mean, var, invstd


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x`` (``(N, C, *spatial)``) by the kernels
    (passes 1 and 2), each ``(C,)`` in the accumulation dtype."""
    x = dense(x)
    backends.check_devices(x)
    mean, var, _ = _statistics(x, tiling(x), None, None, True, 0.0, 1.0)
    return mean, var


def _forward(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The forward pass: ``(output, mean, invstd)``, the running statistics updated in place
    (training).  The output takes the dense input's strides (a ``channels_last`` input gives
    a ``channels_last`` output); ``mean`` and ``invstd`` are ``(C,)`` in the accumulation
    dtype (in evaluation, the running mean and ``1/sqrt(running_var + eps)``)."""
    x = dense(input)
    kernels = _kernels(x)
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
    return y, mean, invstd


def _backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    training: bool,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    bias_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward pass: ``(grad_input, grad_weight, grad_bias)``, each empty (0 elements)
    where not wanted; ``grad_input`` takes the dense input's strides, the others are ``(C,)``."""
    x = dense(input)
    kernels = _kernels(x)
    plan = tiling(x)
    c = plan.view[1]
    dy = grad_output
    if dy.stride() != x.stride():  # e.g. an expanded gradient, or another memory format
        dy = torch.empty_like(x).copy_(grad_output)
    acc = accumulation_dtype(x.dtype)
    # The sums are needed for a parameter's gradient, or for dx in training
    has_sums = need_weight or need_bias or (need_input and training)
    options = launch_options(plan, x)
    partials = plan.programs if has_sums else 1
    sum_dy, sum_dy_xc = torch.empty((2, partials, c), dtype=acc, device=x.device)
    grad_weight = torch.empty(
        c if need_weight else 0, dtype=weight.dtype if need_weight else acc, device=x.device
    )
    grad_bias = torch.empty(c if need_bias else 0, dtype=bias_dtype, device=x.device)
    grad_input = torch.empty_like(x) if need_input else x.new_empty(0)
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
            grad_weight_ptr=grad_weight if need_weight else coef,
            grad_bias_ptr=grad_bias if need_bias else coef,
            coef_ptr=coef,
            inv_m=1.0 / (x.numel() // c),
            HAS_SUMS=has_sums,
            HAS_WEIGHT=w is not None,
            WANT_WEIGHT=need_weight,
            WANT_BIAS=need_bias,
            TRAINING=training,
            ACC=options["ACC"],
            num_warps=4,
            **reduce,
        )
        # Pass 3: dx
        if need_input:
            kernels.grad_input_kernel[plan.grid](
                x_ptr=x,
                dy_ptr=dy,
                dx_ptr=grad_input,
                mean_ptr=mean,
                coef_ptr=coef,
                **plan.kernel_args(),
                TRAINING=training,
                **options,
            )
    return grad_input, grad_weight, grad_bias


# --------------------------------------------------------------------------------------------
# The operators: torch.ops.bncourse.triton_batch_norm_train, _eval and _backward
# --------------------------------------------------------------------------------------------
# (typing.Optional: the operators' schemas are read from these annotations, on every Python)
@triton_op("bncourse::triton_batch_norm_train", mutates_args=())
def _train(
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Training: ``(output, mean, invstd, new_running_mean, new_running_var)`` with the
    batch's statistics.  The running statistics' update is computed in pass 2 as ever, into
    copies that the caller writes back (empty when none are given): an operator with an
    autograd formula must not change its inputs."""
    updated = [None if t is None else t.clone() for t in (running_mean, running_var)]
    y, mean, invstd = _forward(input, weight, bias, *updated, True, momentum, eps)
    return y, mean, invstd, *(mean.new_empty(0) if t is None else t for t in updated)


@triton_op("bncourse::triton_batch_norm_eval", mutates_args=())
def _eval(
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    running_mean: Tensor,
    running_var: Tensor,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Evaluation: ``(output, mean, invstd)`` with the running statistics, which it reads only."""
    return _forward(input, weight, bias, running_mean, running_var, False, momentum, eps)


@triton_op("bncourse::triton_batch_norm_backward", mutates_args=())
def _backward_op(
    grad_output: Tensor,
    input: Tensor,
    weight: Optional[Tensor],
    mean: Tensor,
    invstd: Tensor,
    training: bool,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    bias_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad_input, grad_weight, grad_bias)``, each empty where not wanted."""
    return _backward(
        grad_output,
        input,
        weight,
        mean,
        invstd,
        training,
        need_input,
        need_weight,
        need_bias,
        bias_dtype,
    )


def _whole_on_the_cpu(op: Any) -> None:
    """Under ``torch.compile``, ``triton_op`` decomposes the operator into its launches, for
    the compiler to see the kernels; on the CPU they run in Triton's interpreter, which a
    compiled graph cannot call: there the operator stays whole (and runs as eagerly)."""
    decompose = getattr(op, "_torch_dispatch_fns", {}).get(FunctionalTensorMode)
    if decompose is None:  # (a PyTorch whose triton_op works otherwise: leave it as it is)
        return

    def rule(mode: Any, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        input = args[1] if op is _backward_op else args[0]
        if input.device.type == "cuda":
            return decompose(mode, func, types, args, kwargs)
        return mode.__torch_dispatch__(func, types, args, kwargs)

    op.register_torch_dispatch(FunctionalTensorMode, rule)


for _op in (_train, _eval, _backward_op):
    _whole_on_the_cpu(_op)


DOUBLE_BACKWARD = (
    "bncourse.triton_bn does not support double backward (create_graph=True: second "
    "derivatives, gradient penalties, Hessian-vector products): its backward pass runs Triton "
    "kernels, which autograd cannot differentiate. Use bncourse.torch_bn (or torch.nn), whose "
    "backward is made of differentiable operations."
)


def _saving(training: bool) -> Any:
    """The operator's ``setup_context``: what the backward needs, the input itself (so that
    changing it in place before the backward is autograd's error, as with torch.nn),
    ``weight``, ``mean`` and ``invstd``."""

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        input, weight, bias = inputs[:3]
        _, mean, invstd, *updated = output
        ctx.mark_non_differentiable(mean, invstd, *updated)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.training = training
        ctx.bias_dtype = input.dtype if bias is None else bias.dtype

    return setup_context


def _autograd_backward(ctx: Any, grad_output: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    if torch.is_grad_enabled():  # create_graph=True: the kernels' sums are not a graph
        raise RuntimeError(DOUBLE_BACKWARD)
    input, weight, mean, invstd = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grads = torch.ops.bncourse.triton_batch_norm_backward(
        grad_output,
        input,
        weight,
        mean,
        invstd,
        ctx.training,
        need_input,
        need_weight,
        need_bias,
        ctx.bias_dtype,
    )
    wanted = (need_input, need_weight, need_bias)
    return *(g if want else None for g, want in zip(grads, wanted)), None, None, None, None


_train.register_autograd(_autograd_backward, setup_context=_saving(True))
_eval.register_autograd(_autograd_backward, setup_context=_saving(False))


class _Operators:
    """What :func:`batch_norm` hands to ``apply_checked``: the operator of the mode."""

    @staticmethod
    def apply(
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
    ) -> Tensor:
        _refuse_transforms(input)
        backends.check_devices(input, weight, bias, running_mean, running_var)
        arguments = (input, weight, bias, running_mean, running_var, momentum, eps)
        if not training:
            return torch.ops.bncourse.triton_batch_norm_eval(*arguments)[0]
        output, _, _, new_mean, new_var = torch.ops.bncourse.triton_batch_norm_train(*arguments)
        if running_mean is not None:  # the update, in place, as ATen's native_batch_norm does
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
        return output


TRANSFORMS = (
    "bncourse.triton_bn does not support {}: its operators have a backward formula but "
    "no batching rule and no forward-mode derivative. Use bncourse.torch_bn or "
    "bncourse.compiled_bn (or torch.nn), which work under every transform torch.nn does."
)


def _refuse_transforms(input: Tensor) -> None:
    """A clear error under the transforms the operators do not support (torch.func's vmap,
    grad, jacrev, jvp, jacfwd, and forward-mode AD), rather than one from deep inside."""
    if torch.compiler.is_compiling():
        return
    if torch._C._functorch.peek_interpreter_stack() is not None:
        raise RuntimeError(TRANSFORMS.format("torch.func's transforms (vmap, grad, jacrev, jvp)"))
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        from torch.autograd.forward_ad import unpack_dual

        if unpack_dual(input).tangent is not None:
            raise RuntimeError(TRANSFORMS.format("forward-mode AD (torch.autograd.forward_ad)"))


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
    kernels), the CPU (Triton's interpreter) or the meta device (shapes only).  Computed by
    the operators ``torch.ops.bncourse.triton_batch_norm_train`` (or ``_eval``) and
    ``triton_batch_norm_backward``: ``torch.compile`` (``fullgraph=True`` too),
    ``torch.export`` and ``torch.jit.trace`` record them; under ``torch.func``'s transforms
    and forward-mode AD it raises :data:`TRANSFORMS`, which names what to use instead.
    Differentiable once: a backward with ``create_graph=True`` raises :data:`DOUBLE_BACKWARD`
    (rather than gradients that second derivatives would see as constants).
    """
    return apply_checked(
        _Operators,
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    )
