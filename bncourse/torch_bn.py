"""BatchNorm in PyTorch with a hand-written backward pass: a drop-in for ``torch.nn.BatchNorm*d``.

Three layers, from the math up to the module (read them in this order):

* :class:`BatchNormFunction` -- a ``torch.autograd.Function``.  Its ``forward`` normalizes
  (with the batch's statistics in training, with the running statistics in evaluation) and,
  like ATen's ``native_batch_norm``, updates the running statistics in place; its
  ``backward`` is the closed form of chapter 3 (:func:`batch_norm_backward`), so autograd
  never records the forward's operations.  The backward is written with ordinary,
  differentiable torch operations, so double backward (``create_graph=True``) works too.
* :func:`batch_norm` -- the signature, checks, error messages and semantics of
  ``torch.nn.functional.batch_norm``, on top of the Function.
* :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` -- modules with the
  constructor, parameters (``weight``, ``bias``), buffers (``running_mean``, ``running_var``,
  ``num_batches_tracked``), ``state_dict`` keys, ``repr`` and errors of ``torch.nn``'s, so that
  a ``state_dict`` moves between theirs and ours in both directions.

Conventions (the same as :mod:`bncourse.numpy_bn` and PyTorch):

* ``input`` has shape ``(N, C)`` or ``(N, C, *spatial)``; every statistic is per channel, over
  all axes but 1, and has shape ``(C,)``; ``m = N * prod(spatial)`` values share it.
* Normalization uses the *biased* batch variance and ``eps`` inside the square root:
  ``y = (x - mean) / sqrt(var + eps) * weight + bias``.
* Running statistics: ``running = (1 - momentum) * running + momentum * batch``, fed the
  *unbiased* variance ``var * m / (m - 1)``; ``momentum=None`` (a cumulative average) is the
  module's business: it passes ``1 / num_batches_tracked`` as the momentum.
* Precision: statistics and the arithmetic of both passes run in float32 for float16 and
  bfloat16 inputs (in the input's dtype otherwise); outputs and gradients have the dtype of
  what they belong to.  Parameters and running statistics have the input's dtype, or float32
  for a float16/bfloat16 input.

Deliberate differences from PyTorch, all on input PyTorch rejects less clearly: an input of
fewer than 2 dimensions raises a ``ValueError`` that says so (PyTorch raises an
``IndexError`` about a dimension out of range); mismatched dtypes raise one message on every
device (each parameter and buffer may have the input's dtype, or float32 for a
float16/bfloat16 input); running statistics that require grad are refused in the words of
PyTorch's ``native_batch_norm`` error, naming ``batch_norm``; and per-channel tensors only need
``C`` elements whatever their shape.  These modules
are not subclasses of ``torch.nn.modules.batchnorm._BatchNorm``, so helpers that look for that
class (``nn.SyncBatchNorm.convert_sync_batchnorm``, quantization fusers) pass them by.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from .numpy_bn import channel_shape, reduce_axes

__all__ = [
    "accumulation_dtype",
    "batch_stats",
    "update_running_stats",
    "batch_norm_backward",
    "normalize",
    "grad_input_from_sums",
    "BatchNormFunction",
    "batch_norm",
    "apply_checked",
    "BatchNormNd",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
]


# --------------------------------------------------------------------------------------------
# The math: statistics, running statistics, the closed-form backward
# --------------------------------------------------------------------------------------------
def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype BatchNorm computes in: float32 for float16/bfloat16, else ``dtype`` itself.

    Half-precision floats have 11 (float16) or 8 (bfloat16) significant bits: a sum of a few
    thousand of them, or a variance, would keep almost none.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def batch_stats(x: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x`` (``(N, C, *spatial)``), each ``(C,)``.

    The corrected two-pass algorithm (Chan, Golub and LeVeque, 1983): a first mean ``m1``,
    then the deviations ``d = x - m1``; their mean ``e`` is the rounding error of ``m1``
    (zero in exact arithmetic), so ``mean = m1 + e`` and ``var = mean(d**2) - e**2``.  Like
    :func:`bncourse.numpy_bn.batch_stats` it never forms ``E[x^2] - E[x]^2``, and the
    correction keeps the mean to half a unit in the last place even when float32 sums of
    thousands of values near 1e4 are off by several.  Computed in :func:`accumulation_dtype`.
    ``out``: an optional buffer shaped like ``x`` for the deviations and their squares (see
    :func:`_workspace`); without it every step is an ordinary, differentiable operation.
    """
    x = x.to(accumulation_dtype(x.dtype))
    dims = reduce_axes(x.ndim)
    first_mean = x.mean(dims)
    deviations = torch.sub(x, first_mean.view(channel_shape(x.ndim)), out=out)
    correction = deviations.mean(dims)
    mean_square = torch.square(deviations, out=out).mean(dims)
    return first_mean + correction, mean_square - correction.square()


def _workspace(like: Tensor) -> Tensor | None:
    """One input-sized buffer that a pass writes all its full-size intermediates into, or
    ``None`` (allocate each) while autograd records the computation.

    On a CPU every fresh input-sized tensor costs page faults when it is first written (the
    memory allocator hands large blocks back to the system), about as much as a pass over
    the data; reusing one buffer keeps each pass at a single allocation, like ATen's kernels.
    Writing into a buffer (``out=``, in place) is invisible to autograd, so a backward pass
    that is itself being differentiated (``create_graph=True``) allocates instead.
    """
    return None if torch.is_grad_enabled() else torch.empty_like(like)


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    m: int,
    momentum: float,
) -> None:
    """PyTorch's update of the running statistics, in place (either may be ``None``).

    ``running = (1 - momentum) * running + momentum * batch``; the running variance is fed the
    unbiased batch variance ``var * m / (m - 1)`` (``var`` is the biased one that normalized
    the batch).  The arithmetic happens in the dtype of ``mean`` (float32 at least) and is
    stored in the buffers' own dtype.
    """
    with torch.no_grad():
        if running_mean is not None:
            new_mean = (1 - momentum) * running_mean + momentum * mean.view_as(running_mean)
            running_mean.copy_(new_mean)
        if running_var is not None:
            unbiased = var * (m / (m - 1))
            new_var = (1 - momentum) * running_var + momentum * unbiased.view_as(running_var)
            running_var.copy_(new_var)


def batch_norm_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    training: bool,
    output_mask: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Closed-form gradients ``(grad_input, grad_weight, grad_bias)`` of BatchNorm.

    The forward pass was ``y = (x - mean) * invstd * weight + bias`` per channel, with
    ``mean`` and ``invstd = 1 / sqrt(var + eps)`` of shape ``(C,)``.  With ``xc = x - mean``,
    ``s = invstd`` and ``a = weight * s``, sums per channel over the ``m`` values::

        grad_bias   = sum(dy)
        grad_weight = s * sum(dy * xc)                               (= sum(dy * xhat))
        training:  dx = a * (dy - sum(dy) / m - xc * s**2 * sum(dy * xc) / m)
        eval:      dx = a * dy         (mean and invstd are constants: running statistics)

    which is chapter 3's ``dx = s * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = weight * dy``: the direct path, minus the mean path, minus the variance path.
    ``output_mask`` says which of the three gradients are wanted (the others are ``None``).
    ``grad_output``, ``input`` and the results are in the accumulation dtype.  While autograd
    records (double backward) these are ordinary differentiable operations; otherwise the
    input-sized intermediates share one buffer (:func:`_workspace`).
    """
    need_input, need_weight, need_bias = output_mask
    dims, shape = reduce_axes(input.ndim), channel_shape(input.ndim)
    m = input.numel() // input.shape[1]
    scale = invstd if weight is None else invstd * weight  # a = weight * s, shape (C,)
    full_dx = need_input and training  # dx with its mean and variance paths

    sum_dy = grad_output.sum(dims) if (need_bias or full_dx) else None
    sum_dy_xc = None
    if need_weight or full_dx:
        out = _workspace(input)
        centered = torch.sub(input, mean.view(shape), out=out)
        sum_dy_xc = torch.mul(centered, grad_output, out=out).sum(dims)  # may overwrite centered

    grad_input = None
    if full_dx:
        grad_input = grad_input_from_sums(grad_output, input, mean, invstd, weight,
                                          sum_dy, sum_dy_xc, m, out=out)
    elif need_input:
        grad_input = grad_output * scale.view(shape)
    grad_weight = sum_dy_xc * invstd if need_weight else None
    grad_bias = sum_dy if need_bias else None
    return grad_input, grad_weight, grad_bias


def normalize(x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
              bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """``y = (x - mean) * (weight * invstd) + bias`` per channel, in two passes over ``out``.

    ``mean``, ``invstd``, ``weight``, ``bias``: ``(C,)`` (``weight``/``bias`` may be ``None``);
    ``out``, if given, is an input-sized buffer to write into.
    """
    shape = channel_shape(x.ndim)
    scale = invstd if weight is None else invstd * weight
    output = torch.sub(x, mean.view(shape), out=out)
    if bias is None:
        return output.mul_(scale.view(shape))
    return torch.addcmul(bias.view(shape), output, scale.view(shape), out=output)


def grad_input_from_sums(
    grad_output: Tensor,
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    sum_dy: Tensor,
    sum_dy_xc: Tensor,
    m: int,
    out: Tensor | None = None,
) -> Tensor:
    """Training-mode ``dx`` from the two per-channel sums over the ``m`` values that share
    the statistics: ``sum_dy = sum(dy)`` and ``sum_dy_xc = sum(dy * (x - mean))``, ``(C,)``.

    ``dx = a * dy + k * xc + c`` per channel, with ``a = weight * invstd``: ``c = -a *
    sum_dy / m`` carries the mean path and ``k = -a * invstd**2 * sum_dy_xc / m`` the variance
    path. Taking the sums as arguments is what lets SyncBatchNorm
    (:mod:`bncourse.distributed`) reuse this with sums over every process's values. ``out``,
    if given, is an input-sized buffer to write into.
    """
    shape = channel_shape(input.ndim)
    scale = invstd if weight is None else invstd * weight
    k = -scale * invstd * invstd * sum_dy_xc / m
    c = -scale * sum_dy / m
    centered = torch.sub(input, mean.view(shape), out=out)
    grad_input = torch.addcmul(c.view(shape), centered, k.view(shape), out=out)
    return grad_input.addcmul_(grad_output, scale.view(shape))


class BatchNormFunction(torch.autograd.Function):
    """BatchNorm as one autograd node: forward below, backward by :func:`batch_norm_backward`.

    ``BatchNormFunction.apply(input, weight, bias, running_mean, running_var, training,
    momentum, eps)`` takes the arguments of ``torch.batch_norm`` (already checked by
    :func:`batch_norm`, which is what you call).  ``training=True``: normalize with the
    batch's mean and biased variance and, if given, update ``running_mean``/``running_var`` in
    place.  ``training=False``: normalize with ``running_mean``/``running_var``, which are
    constants for the backward pass.

    Saved for backward: the input, ``weight``, and the per-channel ``mean`` and ``invstd``
    used (what ATen saves too); ``x - mean`` is recomputed in backward rather than kept, one
    more pass there but no second input-sized tensor alive between the passes.  When the
    backward pass itself is differentiated (``create_graph=True``) the training statistics
    are recomputed from the input with differentiable operations, so that second derivatives
    see how they depend on it.
    """

    @staticmethod
    def forward(ctx: Any, input: Tensor, weight: Tensor | None, bias: Tensor | None,
                running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                momentum: float, eps: float) -> Tensor:
        x = input.to(accumulation_dtype(input.dtype))
        output = torch.empty_like(x)  # the one input-sized tensor: squares, then the output
        if training:
            mean, var = batch_stats(x, out=output)
            update_running_stats(running_mean, running_var, mean, var,
                                 input.numel() // input.shape[1], momentum)
        else:
            mean = running_mean.view(-1).to(x.dtype)
            var = running_var.view(-1).to(x.dtype)
        invstd = torch.rsqrt(var + eps)
        normalize(x, mean, invstd, weight, bias, out=output)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.training, ctx.eps = training, eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        return output.to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, weight, mean, invstd = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        acc = accumulation_dtype(input.dtype)
        x = input.to(acc)
        if ctx.training and torch.is_grad_enabled():  # create_graph=True: double backward
            mean, var = batch_stats(x)
            invstd = torch.rsqrt(var + ctx.eps)
        grad_input, grad_weight, grad_bias = batch_norm_backward(
            grad_output.to(acc), x, weight, mean, invstd, ctx.training,
            (need_input, need_weight, need_bias))
        if grad_input is not None:
            grad_input = grad_input.to(input.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# The functional interface: torch.nn.functional.batch_norm's signature and checks
# --------------------------------------------------------------------------------------------
# How ATen names dtypes in "not implemented for 'Long'" messages.
_ATEN_DTYPE_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short",
    torch.int32: "Int", torch.int64: "Long", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble", torch.complex32: "ComplexHalf",
}


def _check_arguments(input: Tensor, training: bool, momentum: float, eps: float) -> None:
    """What ``F.batch_norm`` checks before it looks at any tensor's contents, in its order."""
    if not isinstance(training, bool):
        raise TypeError("batch_norm(): argument 'training' (position 6) must be bool, "
                        f"not {type(training).__name__}")
    if not isinstance(momentum, numbers.Real):
        raise TypeError("batch_norm(): argument 'momentum' (position 7) must be float, "
                        f"not {type(momentum).__name__}")
    if input.dim() < 2:
        raise ValueError("batch_norm: expected an input of shape (N, C) or (N, C, *spatial), "
                         f"got {input.dim()}D input of shape {tuple(input.shape)}")
    if training and math.prod(input.shape[2:]) * input.shape[0] == 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {input.size()}")
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def _check_tensors(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                   weight: Tensor | None, bias: Tensor | None, training: bool) -> None:
    """Every per-channel tensor has ``C`` elements, and dtypes BatchNorm can combine (ATen's
    checks, in ATen's order)."""
    num_features = input.shape[1]
    named = [("running_mean", running_mean), ("running_var", running_var),
             ("weight", weight), ("bias", bias)]
    for name, value in named:
        if value is None and not training and name.startswith("running"):
            raise RuntimeError(f"{name} must be defined in evaluation mode")
        if value is not None and value.numel() != num_features:
            raise RuntimeError(f"{name} should contain {num_features} elements not {value.numel()}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not input.is_floating_point():
        name = _ATEN_DTYPE_NAMES.get(input.dtype, str(input.dtype))
        raise NotImplementedError(f'"batch_norm" not implemented for \'{name}\'')
    allowed = {input.dtype, accumulation_dtype(input.dtype)}
    for name, value in named:
        if value is not None and value.dtype not in allowed:
            expected = " or ".join(sorted(str(d) for d in allowed))
            raise RuntimeError(f"mixed dtype: {name} has dtype {value.dtype} but the input has "
                               f"dtype {input.dtype}; expected {expected}")
    for name, value in named[:2]:
        if value is not None and value.requires_grad:
            raise RuntimeError(f"The function 'batch_norm' is not differentiable with respect "
                               f"to argument '{name}'. This input cannot have requires_grad True.")


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
    """``torch.nn.functional.batch_norm``, computed by :class:`BatchNormFunction`.

    ``input``: ``(N, C)`` or ``(N, C, *spatial)``.  ``running_mean``, ``running_var``,
    ``weight``, ``bias``: ``(C,)`` or ``None``.  ``training=True`` normalizes with the batch's
    statistics and updates the running statistics that are given, in place;
    ``training=False`` normalizes with the running statistics, which must then be given.
    Returns a tensor of the input's shape and dtype.

    Errors, as PyTorch words them: one value per channel in training ("Expected more than 1
    value per channel when training, got input size torch.Size([1, 3])"), ``eps <= 0`` in
    training, per-channel tensors with the wrong number of elements ("running_mean should
    contain 3 elements not 4"), missing running statistics in evaluation, only one of the two
    running statistics, a non-floating input.  An empty input (``input.numel() == 0``) gives
    what PyTorch gives: ``input * weight[0] + bias[0]`` and no update.  (The checks and the
    empty batch are :func:`apply_checked`'s, which triton_bn shares.)
    """
    return apply_checked(BatchNormFunction, input, running_mean, running_var, weight, bias,
                         training, momentum, eps)


def apply_checked(
    function: type[torch.autograd.Function],
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """What :func:`batch_norm` does around the computation: check the arguments and tensors
    (PyTorch's errors), answer an empty batch, then ``function.apply(input, weight, bias,
    running_mean, running_var, training, momentum, eps)``.  ``function`` is
    :class:`BatchNormFunction` here; :mod:`bncourse.triton_bn` passes its Triton one, so both
    share one set of checks."""
    _check_arguments(input, training, momentum, eps)
    if input.numel() == 0:
        # ATen's answer for an empty batch: no statistics, but an output connected to weight
        # and bias, so that backward still reaches them (with zero gradients).
        output = input.clone()
        if weight is not None:
            output = output * weight[0]
        if bias is not None:
            output = output + bias[0]
        return output
    _check_tensors(input, running_mean, running_var, weight, bias, training)
    return function.apply(input, weight, bias, running_mean, running_var, training,
                          float(momentum), float(eps))


# --------------------------------------------------------------------------------------------
# The modules: what torch.nn.BatchNorm1d/2d/3d hold and do
# --------------------------------------------------------------------------------------------
class BatchNormNd(nn.Module):
    """What ``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d`` share; they differ only in the
    number of input dimensions they accept (:meth:`_check_input_dim`).

    State, registered explicitly (chapter 4 is about telling the two kinds apart):

    * parameters, learned by the optimizer: ``weight`` (gamma, ones) and ``bias`` (beta,
      zeros), each ``(num_features,)``; ``None`` when ``affine=False`` (``bias`` also when
      ``bias=False``);
    * buffers, saved in the ``state_dict`` but not learned: ``running_mean`` (zeros),
      ``running_var`` (ones) and ``num_batches_tracked`` (a 0-d int64 count); all ``None``
      when ``track_running_stats=False``.

    ``forward`` follows ``torch.nn.modules.batchnorm._BatchNorm.forward`` line for line:
    count the batch, turn ``momentum=None`` into ``1 / num_batches_tracked``, choose batch or
    running statistics, and call :attr:`functional` (:func:`batch_norm`; triton_bn sets its own).
    """

    _version = 2  # version 2 added num_batches_tracked; older state_dicts lack it
    # The function forward calls, with F.batch_norm's signature: bncourse.triton_bn's modules
    # are these modules with their own function here.
    functional = staticmethod(batch_norm)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch seen (only if they are tracked)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, then weight to 1 and bias to 0: the identity."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _count_batch(self) -> float:
        """Count a training batch in ``num_batches_tracked`` (when tracking) and return the
        momentum to hand to batch_norm: the module's, or 1 / (batches so far) for ``None``."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average of all batches so far
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = self._count_batch()
        # Batch statistics in training, and in evaluation when there are no running ones.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # Hand over the buffers to be updated (training and tracking) or used (evaluation).
        pass_buffers = not self.training or self.track_running_stats
        return self.functional(
            input,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # A state_dict saved before num_batches_tracked existed (version < 2) still loads:
        # the count keeps its current value (as in torch.nn's _NormBase).
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            tracked = self.num_batches_tracked
            state_dict[key] = (tracked if tracked is not None and tracked.device.type != "meta"
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)


class BatchNorm1d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm1d``: input ``(N, C)`` or ``(N, C, L)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm2d``: input ``(N, C, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchNorm3d(BatchNormNd):
    """Drop-in for ``torch.nn.BatchNorm3d``: input ``(N, C, D, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")
