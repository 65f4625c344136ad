"""What ``torch.nn.functional.batch_norm`` checks before it computes, in its order and words.

A drop-in must fail where PyTorch fails, with the same exception and message, so that a
learner's search for the message finds PyTorch's discussions of it. Every BatchNorm of the
course that takes PyTorch tensors calls :func:`apply_checked` (chapter 5's
:mod:`bncourse.torch_bn`, chapter 8's :mod:`bncourse.triton_bn`; chapter 9's SyncBatchNorm
shares :func:`check_tensors`), which checks, answers an empty batch as ATen does, and only
then applies the implementation's ``torch.autograd.Function``. The messages themselves are
in :mod:`bncourse.conventions`.

Deliberate differences from PyTorch, all on input PyTorch rejects less clearly: an input of
fewer than 2 dimensions raises a ``ValueError`` that says what is expected (PyTorch raises an
``IndexError`` about a dimension out of range); mismatched dtypes raise one message on every
device (each parameter and buffer may have the input's dtype, or float32 for a
float16/bfloat16 input); and running statistics that require grad are refused in the words of
``native_batch_norm``'s error, naming ``batch_norm``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from . import conventions

__all__ = [
    "accumulation_dtype",
    "output_memory_format",
    "check_arguments",
    "check_tensors",
    "apply_checked",
]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype BatchNorm computes in: float32 for float16/bfloat16, else ``dtype`` itself.

    Half-precision floats have 11 (float16) or 8 (bfloat16) significant bits: a sum of a few
    thousand of them, or a variance, would keep almost none.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def output_memory_format(input: Tensor) -> torch.memory_format:
    """The memory layout of BatchNorm's output and input gradient for ``input``, as ATen
    chooses it (``Tensor.suggest_memory_format``): ``torch.channels_last`` (or
    ``channels_last_3d``) when the input's strides put the channels innermost, as a
    channels-last tensor or a slice of one does; contiguous for every other input, views
    (a transpose, a slice with steps, an expand) included. So ``bn(x.transpose(1, 2))``
    gives a tensor that ``.view(N, -1)`` takes, as ``torch.nn`` does.

    ATen's rule (``is_channels_last_strides_2d``), on plain integers: going through the axes
    C, then the spatial ones from the last, then N, each stride is at least the extent of
    the axes before it."""
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(input.dim())
    if order is None or input.stride(1) == 0:
        return torch.contiguous_format
    extent = 0
    for axis in order:
        size, stride = input.size(axis), input.stride(axis)
        if size == 0 or stride < extent or (axis == 0 and extent == input.stride(1)):
            return torch.contiguous_format
        extent = stride * size if size > 1 else stride
    return torch.channels_last if input.dim() == 4 else torch.channels_last_3d


# How ATen names dtypes in "not implemented for 'Long'" messages.
_ATEN_DTYPE_NAMES = {
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
    torch.complex32: "ComplexHalf",
}


def _type_name(value: Any) -> str:
    """The name PyTorch's argument parser gives the type of ``value`` (CPython's
    ``tp_name``): ``int``, ``Tensor``, but ``numpy.bool`` for a type defined in C outside
    the builtins."""
    kind = type(value)
    heap_type = kind.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE: a class made at run time
    if heap_type or kind.__module__ == "builtins":
        return kind.__name__
    return f"{kind.__module__}.{kind.__name__}"


def _as_float(momentum: Any) -> float:
    """``momentum`` as PyTorch's argument parser takes a ``float``: a number (a bool too), or
    a 0-d tensor; anything else is its TypeError."""
    if isinstance(momentum, numbers.Real):
        return float(momentum)
    if isinstance(momentum, Tensor) and momentum.dim() == 0:
        return float(momentum)
    raise TypeError(
        f"batch_norm(): argument 'momentum' (position 7) must be float, not {_type_name(momentum)}"
    )


def check_arguments(input: Tensor, training: bool, momentum: Any, eps: float) -> float:
    """What ``F.batch_norm`` checks before it looks at any tensor's contents, in its order;
    returns ``momentum`` as a float."""
    if not isinstance(training, bool):
        raise TypeError(
            "batch_norm(): argument 'training' (position 6) must be bool, "
            f"not {_type_name(training)}"
        )
    momentum = _as_float(momentum)
    if input.dim() < 2:
        raise ValueError(conventions.too_few_dimensions(input.shape))
    if training and math.prod(input.shape[2:]) * input.shape[0] == 1:
        raise ValueError(conventions.one_value_per_channel(input.size()))
    if training and eps <= 0.0:
        raise ValueError(conventions.eps_not_positive(eps))
    if eps < 0.0:
        raise ValueError(conventions.eps_negative(eps))
    return momentum


def check_tensors(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
) -> None:
    """Every per-channel tensor has ``C`` elements, the running statistics are vectors
    (``weight`` and ``bias`` may have any shape, as in PyTorch), and dtypes BatchNorm can
    combine (ATen's checks, in ATen's order)."""
    num_features = input.shape[1]
    named = [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ]
    for name, value in named:
        if value is None and not training and name.startswith("running"):
            raise RuntimeError(conventions.missing_in_evaluation(name))
        if value is not None and value.numel() != num_features:
            raise RuntimeError(conventions.wrong_length(name, num_features, value.numel()))
        if value is not None and name.startswith("running") and value.dim() != 1:
            raise RuntimeError(conventions.not_one_dimensional(value.dim()))
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not input.is_floating_point():
        name = _ATEN_DTYPE_NAMES.get(input.dtype, str(input.dtype))
        raise NotImplementedError(f"\"batch_norm\" not implemented for '{name}'")
    allowed = {input.dtype, accumulation_dtype(input.dtype)}
    for name, value in named:
        if value is not None and value.dtype not in allowed:
            expected = " or ".join(sorted(str(d) for d in allowed))
            raise RuntimeError(
                f"mixed dtype: {name} has dtype {value.dtype} but the input has "
                f"dtype {input.dtype}; expected {expected}"
            )
    for name, value in named[:2]:
        if value is not None and value.requires_grad:
            raise RuntimeError(
                f"The function 'batch_norm' is not differentiable with respect "
                f"to argument '{name}'. This input cannot have requires_grad True."
            )


def apply_checked(
    function: type[torch.autograd.Function],
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: Any,
    eps: float,
) -> Tensor:
    """Check the arguments and tensors (PyTorch's errors), answer an empty batch, then
    ``function.apply(input, weight, bias, running_mean, running_var, training, momentum, eps)``
    with ``weight`` and ``bias`` viewed as ``(C,)`` (PyTorch accepts any shape with ``C``
    elements for them). The running statistics must be vectors, as in PyTorch, and are passed
    as they are (strided ones too), so that their in-place update reaches the caller's."""
    momentum = check_arguments(input, training, momentum, eps)
    if input.numel() == 0:
        # ATen's answer for an empty batch: no statistics, but an output connected to weight
        # and bias, so that backward still reaches them (with zero gradients).
        # (select: no channels at all is ATen's IndexError, in its words)
        output = input.clone()
        if weight is not None:
            output = output * weight.reshape(-1).select(0, 0)
        if bias is not None:
            output = output + bias.reshape(-1).select(0, 0)
        return output
    check_tensors(input, running_mean, running_var, weight, bias, training)

    def flat(t: Tensor | None) -> Tensor | None:  # (C,) stays itself: no view in the graph
        return t if t is None or t.dim() == 1 else t.reshape(-1)

    return function.apply(
        input,
        flat(weight),
        flat(bias),
        running_mean,
        running_var,
        training,
        momentum,
        float(eps),
    )
