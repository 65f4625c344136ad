"""SyncBatchNorm on ``torch.distributed``: BatchNorm over the global batch of all processes.

With data parallelism each process sees only its own slice of the batch, so plain BatchNorm
normalizes every slice with its own, noisier, statistics. SyncBatchNorm makes every process
normalize with the statistics of the **global** batch, exactly as one BatchNorm over the
concatenated batch would, at the price of small collectives in every layer and training step
(three here: :func:`count_collectives` counts them):

* forward, first: every process sends its number of channels and its dtype (two integers,
  :func:`check_same_channels_and_dtype`), so that a mismatch is an error, not a hang;
* forward: every process computes its per-channel ``(count, mean, M2)`` (``M2`` = sum of
  squared deviations from its own mean), the triples are all-gathered, and each process merges
  them with Chan's formula::

      N = sum n_k,   mean = sum n_k mean_k / N,   M2 = sum M2_k + sum n_k (mean_k - mean)^2

  We merge ``(count, mean, M2)`` rather than all-reducing ``(count, sum, sum of squares)``:
  ``E[x^2] - E[x]^2`` subtracts two nearly equal numbers when the mean is large compared with
  the spread and loses every digit in float32 (chapter 7), while every term of Chan's merge is
  a sum of non-negative numbers. The price is an all-gather of ``1 + 2C`` numbers per process
  instead of an all-reduce of ``1 + 2C``: the same tiny message, and one round trip either way.
* backward: the closed form of chapter 3 needs two per-channel sums over the global batch,
  ``sum(dy)`` and ``sum(dy * (x - mean))``; each process computes its part and one all-reduce
  adds them up. ``grad_weight`` and ``grad_bias`` stay per process, as in
  ``torch.nn.SyncBatchNorm``: ``DistributedDataParallel`` averages parameter gradients itself.

Processes may hold different numbers of samples (even none). In evaluation mode, or outside an
initialized process group of more than one process, SyncBatchNorm is plain BatchNorm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .conventions import ONE_VALUE_PER_CHANNEL, channel_shape, merge_stats, reduce_axes
from .torch_bn import (
    BatchNormNd,
    batch_stats,
    grad_input_from_sums,
    in_output_layout,
    normalize,
    update_running_stats,
)
from .validation import accumulation_dtype, check_tensors

__all__ = [
    "local_stats",
    "check_same_channels_and_dtype",
    "merge_stats",
    "SyncBatchNormFunction",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "global_batches",
    "set_demo_parameters",
    "sync_bn_worker",
    "count_collectives",
    "sync_bn_traffic_worker",
    "one_batch_norm_reference",
]


def local_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """This process's per-channel ``(count, mean, M2)``: a 0-d count and two ``(C,)`` tensors.

    ``M2`` is the sum of squared deviations from this process's own mean: ``count`` times the
    variance of :func:`bncourse.torch_bn.batch_stats` (two passes, in the accumulation dtype).
    An empty slice gives count 0, mean 0 and M2 0. (Chan's merge of such triples,
    :func:`merge_stats`, is :func:`bncourse.conventions.merge_stats`, which also serves NumPy.)
    """
    count = x.numel() // x.shape[1]
    if count == 0:
        zeros = x.new_zeros(x.shape[1], dtype=accumulation_dtype(x.dtype))
        return zeros.new_tensor(0.0), zeros, zeros.clone()
    mean, var = batch_stats(x)  # in the accumulation dtype
    return mean.new_tensor(float(count)), mean, var * count


def _gather_stats(
    count: Tensor, mean: Tensor, m2: Tensor, group: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """All-gather every process's ``(count, mean, M2)`` as one ``(1 + 2C,)`` message each."""
    packed = torch.cat([count.view(1), mean, m2])
    parts = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, packed, group=group)
    stacked = torch.stack(parts)  # (P, 1 + 2C)
    c = mean.numel()
    return stacked[:, 0], stacked[:, 1 : 1 + c], stacked[:, 1 + c :]


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # codes for the check


def check_same_channels_and_dtype(input: Tensor, group: Any) -> None:
    """Every process holds inputs of the same number of channels and dtype, or a
    ``ValueError`` naming what each rank holds, raised on every process.

    The statistics are exchanged as one message of ``1 + 2C`` numbers in the accumulation
    dtype; with another ``C`` or dtype on some process the collective itself would fail
    (gloo aborts the whole process). So ``C`` and the dtype go first, as two integers that
    every process can gather whatever it holds."""
    mine = torch.tensor([input.shape[1], _DTYPES.index(input.dtype)], device=input.device)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    held = [(int(channels), _DTYPES[int(code)]) for channels, code in parts]
    if len(set(held)) > 1:
        described = "; ".join(
            f"rank {rank}: {channels} channels, {dtype}"
            for rank, (channels, dtype) in enumerate(held)
        )
        raise ValueError(
            "SyncBatchNorm needs inputs of the same number of channels and dtype on every "
            f"process, got {described}"
        )


class _OnceDifferentiable(torch.autograd.Function):
    """``apply(gradient, *sources)``: ``gradient`` itself, connected to the tensors it was
    computed from, whose backward raises PyTorch's ``@once_differentiable`` error. (With
    ``@once_differentiable`` itself, ``torch.autograd.grad(g, x)`` would say only that ``x``
    appears unused: the error node it adds has no edge to ``x``.)"""

    @staticmethod
    def forward(ctx: Any, gradient: Tensor, *sources: Tensor) -> Tensor:
        return gradient.clone()

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> None:
        raise RuntimeError(
            "trying to differentiate twice a function that was marked with "
            "@once_differentiable: SyncBatchNorm's backward all-reduces across processes, "
            "which autograd cannot differentiate (no double backward, gradient penalty or "
            "Hessian-vector product through SyncBatchNorm)"
        )


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm with global statistics; backward by the closed form with
    all-reduced sums. ``apply(input, weight, bias, running_mean, running_var, momentum, eps,
    group)``.

    The output and the input's gradient have ``torch.nn``'s layout (contiguous, or channels
    last for a channels-last input), not the input's strides. The backward is differentiable
    once only: autograd cannot see its all-reduce, so differentiating the gradients again (a
    gradient penalty, a Hessian-vector product) would give wrong values; that raises
    instead (:class:`_OnceDifferentiable`)."""

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
        group: Any,
    ) -> Tensor:
        count, mean, m2 = _gather_stats(*local_stats(input), group)
        total, mean, m2 = merge_stats(count, mean, m2)
        m = int(round(total.item()))
        ctx.m, ctx.group = m, group
        ctx.bias_dtype = None if bias is None else bias.dtype
        if m == 0:  # every process's slice is empty: BatchNorm's answer, an empty output
            ctx.save_for_backward(input, weight)
            return input.clone()
        if m == 1:
            raise ValueError(f"{ONE_VALUE_PER_CHANNEL}, got 1 value per channel over all processes")
        var = m2 / m
        update_running_stats(running_mean, running_var, mean, var, m, momentum)
        invstd = torch.rsqrt(var + eps)
        output = normalize(input.to(accumulation_dtype(input.dtype)), mean, invstd, weight, bias)
        ctx.save_for_backward(input, weight, mean, invstd)
        return in_output_layout(output.to(input.dtype), input)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        with torch.no_grad():  # autograd must not record the backward: it would be wrong
            grads = SyncBatchNormFunction._gradients(ctx, grad_output)
        if torch.is_grad_enabled():  # create_graph=True: the gradients may be differentiated
            saved = ctx.saved_tensors
            sources = [t for t in (grad_output, *saved[:2]) if t is not None and t.requires_grad]
            if sources:
                grads = tuple(
                    None if g is None else _OnceDifferentiable.apply(g, *sources) for g in grads
                )
        return grads

    @staticmethod
    def _gradients(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.m == 0:  # no values anywhere: zero gradients for weight and bias, as BatchNorm
            input, weight = ctx.saved_tensors
            zeros = None if weight is None else torch.zeros_like(weight)
            bias_grad = (
                None if ctx.bias_dtype is None else torch.zeros_like(weight, dtype=ctx.bias_dtype)
            )
            return (
                torch.zeros_like(input),
                zeros if ctx.needs_input_grad[1] else None,
                bias_grad if ctx.needs_input_grad[2] else None,
                None,
                None,
                None,
                None,
                None,
            )
        input, weight, mean, invstd = ctx.saved_tensors
        acc = accumulation_dtype(input.dtype)
        dims, shape = reduce_axes(input.ndim), channel_shape(input.ndim)
        dy, x = grad_output.to(acc), input.to(acc)
        local_sum_dy = dy.sum(dims)
        local_sum_dy_xc = (dy * (x - mean.view(shape))).sum(dims)
        sums = torch.cat([local_sum_dy, local_sum_dy_xc])
        dist.all_reduce(sums, group=ctx.group)  # the global sums, on every process
        c = mean.numel()
        grad_input = grad_input_from_sums(dy, x, mean, invstd, weight, sums[:c], sums[c:], ctx.m)
        need_weight, need_bias = ctx.needs_input_grad[1:3]
        grad_weight = (local_sum_dy_xc * invstd).to(weight.dtype) if need_weight else None
        grad_bias = local_sum_dy.to(ctx.bias_dtype) if need_bias else None
        grad_input = in_output_layout(grad_input.to(input.dtype), input)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class SyncBatchNorm(BatchNormNd):
    """Drop-in for ``torch.nn.SyncBatchNorm(num_features, eps, momentum, affine,
    track_running_stats, process_group, device, dtype)``; any input ``(N, C, *spatial)``.

    Parameters, buffers, ``state_dict`` keys and the running-statistics update are those of
    BatchNorm; the running variance is fed the unbiased variance of the *global* batch.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group or dist.group.WORLD)

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self._world_size() > 1):
            return super().forward(input)  # evaluation, or nothing to synchronize with
        self._check_input_dim(input)
        # batch_norm's checks of the per-channel tensors and dtypes; not the batch size, which
        # only the global batch decides (a process may hold one sample, or none)
        check_tensors(input, self.running_mean, self.running_var, self.weight, self.bias, True)
        group = self.process_group or dist.group.WORLD
        check_same_channels_and_dtype(input, group)
        return SyncBatchNormFunction.apply(
            input,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self._count_batch(),
            self.eps,
            group,
        )

    @classmethod
    def convert_sync_batchnorm(
        cls, module: nn.Module, process_group: Any | None = None
    ) -> nn.Module:
        """``module`` with every BatchNorm (torch.nn's or bncourse's) replaced by SyncBatchNorm,
        parameters and buffers carried over (shared, not copied), like torch's helper."""
        converted = module
        is_bn = isinstance(module, (nn.modules.batchnorm._BatchNorm, BatchNormNd))
        if is_bn and not isinstance(module, cls):
            converted = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                bias=module.bias is not None,
            )
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted


def convert_sync_batchnorm(module: nn.Module, process_group: Any | None = None) -> nn.Module:
    """Function form of :meth:`SyncBatchNorm.convert_sync_batchnorm`."""
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group)


# --------------------------------------------------------------------------------------------
# A worker for bncourse.launch.run_distributed: SyncBatchNorm on this process's shard
# --------------------------------------------------------------------------------------------
def global_batches(
    shape: tuple[int, ...], steps: int, seed: int, dtype: torch.dtype = torch.float32
) -> list[tuple[Tensor, Tensor]]:
    """``steps`` pairs ``(x, dy)`` of the global batch shape, the same in every process."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 3
        dy = torch.randn(shape, generator=generator, dtype=torch.float64)
        batches.append((x.to(dtype), dy.to(dtype)))
    return batches


def set_demo_parameters(bn: nn.Module) -> nn.Module:
    """Give a BatchNorm's gamma and beta distinct values per channel (if it has them), so that
    the demonstrations compare more than the defaults 1 and 0; returns ``bn``."""
    if bn.weight is not None:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, bn.num_features))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, bn.num_features))
    return bn


def sync_bn_worker(
    rank: int,
    world_size: int,
    sizes: list[int],
    shape: tuple[int, ...],
    steps: int = 3,
    seed: int = 0,
    momentum: float | None = 0.1,
    affine: bool = True,
) -> dict[str, Any]:
    """Train a SyncBatchNorm for ``steps`` steps on this rank's shard of shared global batches.

    ``sizes[k]`` is rank ``k``'s number of samples; ``shape`` is ``(C, *spatial)``. Returns the
    last step's output and input gradient (this rank's rows), the per-rank ``grad_weight`` and
    ``grad_bias`` summed over the steps, and the final buffers. Compare with one BatchNorm on
    the concatenated batch: :func:`global_batches` gives the same data in the caller.
    """
    from .launch import shard

    bn = set_demo_parameters(SyncBatchNorm(shape[0], momentum=momentum, affine=affine))
    for x, dy in global_batches((sum(sizes), *shape), steps, seed):
        x = shard(x, sizes, rank).clone().requires_grad_(True)
        out = bn(x)
        out.backward(shard(dy, sizes, rank))
    return {
        "out": out.detach(),
        "grad_input": x.grad,
        "grad_weight": bn.weight.grad if affine else None,
        "grad_bias": bn.bias.grad if affine else None,
        "running_mean": bn.running_mean,
        "running_var": bn.running_var,
        "num_batches_tracked": int(bn.num_batches_tracked),
    }


def one_batch_norm_reference(
    sizes: list[int],
    shape: tuple[int, ...],
    steps: int = 3,
    seed: int = 0,
    momentum: float | None = 0.1,
    affine: bool = True,
) -> tuple[nn.Module, Tensor, Tensor]:
    """What :func:`sync_bn_worker` must agree with: one ``torch.nn`` BatchNorm trained in one
    process on the concatenated global batches (the same data, gamma and beta). Returns the
    module, the last step's output and its input gradient (all ranks' rows, in rank order)."""
    from .conventions import MODULE_FOR_NDIM

    module = getattr(nn, MODULE_FOR_NDIM[len(shape) + 1])(
        shape[0], momentum=momentum, affine=affine
    )
    bn = set_demo_parameters(module)
    for x, dy in global_batches((sum(sizes), *shape), steps, seed):
        x = x.clone().requires_grad_(True)
        out = bn(x)
        out.backward(dy)
    return bn, out.detach(), x.grad


# --------------------------------------------------------------------------------------------
# What synchronizing costs: the collectives of a training step, counted
# --------------------------------------------------------------------------------------------
# the collectives :func:`count_collectives` wraps: the position and keyword of the tensor
# each sends (``all_gather_single`` is what SyncBatchNorm calls on every backend but Gloo)
_SENT_ARGUMENT = {
    "all_gather": (1, "tensor"),
    "all_reduce": (0, "tensor"),
    "broadcast": (0, "tensor"),
    "all_gather_into_tensor": (1, "input_tensor"),
    "all_gather_single": (1, "input_tensor"),
}


@contextmanager
def count_collectives() -> Iterator[list[tuple[str, int, int]]]:
    """Record the collectives this process starts through ``torch.distributed`` inside the
    block, those of :data:`_SENT_ARGUMENT` (``all_gather``, ``all_reduce``, ``broadcast``,
    ``all_gather_into_tensor``, ``all_gather_single``: every one torch's SyncBatchNorm
    calls, on Gloo or NCCL; not the others, such as ``reduce_scatter``): yields a list that
    fills with ``(name, numbers sent, bytes sent)``, one entry per call. The functions are
    wrapped while the block runs and put back after it."""
    calls: list[tuple[str, int, int]] = []
    originals = {name: getattr(dist, name) for name in _SENT_ARGUMENT}

    def counted(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            position, keyword = _SENT_ARGUMENT[name]
            sent = args[position] if len(args) > position else kwargs[keyword]
            calls.append((name, sent.numel(), sent.numel() * sent.element_size()))
            return function(*args, **kwargs)

        return call

    try:
        for name, function in originals.items():
            setattr(dist, name, counted(name, function))
        yield calls
    finally:
        for name, function in originals.items():
            setattr(dist, name, function)


def sync_bn_traffic_worker(
    rank: int,
    world_size: int,
    model: nn.Module,
    sample_shape: tuple[int, ...],
    samples: int,
    steps: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """``model`` with its BatchNorm layers converted to :class:`SyncBatchNorm`: ``steps``
    training steps (forward, backward, no update) on ``samples`` random inputs of shape
    ``sample_shape`` per process, with its collectives counted (:func:`count_collectives`).
    Returns the calls, the number of SyncBatchNorm layers and of parameters."""
    synced = convert_sync_batchnorm(model)
    generator = torch.Generator().manual_seed(seed + rank)
    dtype = next(synced.parameters()).dtype
    inputs = torch.rand(steps, samples, *sample_shape, generator=generator, dtype=dtype)
    with count_collectives() as calls:
        for batch in inputs:
            synced(batch).square().mean().backward()
    return {
        "calls": calls,
        "layers": sum(isinstance(m, SyncBatchNorm) for m in synced.modules()),
        "parameters": sum(p.numel() for p in synced.parameters()),
    }
