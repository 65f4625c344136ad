"""Chapter 7's digits CNN trained with DistributedDataParallel and the course's SyncBatchNorm,
under PyTorch's own launcher: ``torchrun``.

One machine, two processes (gloo on the CPU; NCCL, one GPU per process, where there are
GPUs)::

    torchrun --nproc-per-node 2 -m bncourse.ddp_train --steps 20

Two machines (or two launchers on one, as the tests do), each starting one process; the
launchers find each other through a c10d rendezvous at an address and port that both can
reach (a cluster user changes ``127.0.0.1`` to the first machine's address, and may pick the
backend with ``--backend``)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint 127.0.0.1:29400 --rdzv-id bn -m bncourse.ddp_train
    torchrun --nnodes 2 --node-rank 1 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint 127.0.0.1:29400 --rdzv-id bn -m bncourse.ddp_train

Every step takes one global batch of ``--batch-size`` training images (the same on every
process: a generator seeded with ``--seed``) and gives each process its consecutive share
(:func:`bncourse.launch.shard`). SyncBatchNorm normalizes with the statistics of the whole
global batch and DDP averages the gradients, so the training is, step for step, the one a
single process would do on the global batch with ordinary BatchNorm: at the end, rank 0
trains that reference itself and prints the largest difference of any parameter or buffer
(float64, :data:`bncourse.training.DTYPE`: rounding only, about 1e-15), and writes it with
the accuracies to ``--out`` (JSON) if given. ``bncourse.launch.run_distributed`` stays the
way to start process groups from a notebook.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import training
from .distributed import convert_sync_batchnorm
from .launch import shard

__all__ = ["global_batches", "shares", "train_steps", "main"]


def shares(batch_size: int, world_size: int) -> list[int]:
    """How many samples of a global batch each process gets: as equal as possible."""
    return [
        batch_size // world_size + (rank < batch_size % world_size) for rank in range(world_size)
    ]


def global_batches(data: training.Digits, batch_size: int, steps: int, seed: int) -> list:
    """``steps`` global batches ``(x, y)``, the same on every process; ``batch_size`` is 1
    to the number of training images."""
    if not 1 <= batch_size <= len(data.train_y):
        raise ValueError(
            f"batch_size must be 1 to the {len(data.train_y)} training images, got {batch_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train_y), generator=generator)
    batches = []
    span = len(order) - batch_size  # where a batch may start (0: the whole set each step)
    for step in range(steps):
        index = order[(step * batch_size) % span if span else 0 :][:batch_size]
        batches.append((data.train_x[index], data.train_y[index]))
    return batches


def train_steps(model: nn.Module, batches: list, lr: float, part=lambda t: t) -> nn.Module:
    """SGD with momentum on cross-entropy over ``batches``; ``part`` picks this process's
    share of each (the identity for one process)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(part(x)), part(y)).backward()
        optimizer.step()
    return model


def _model(seed: int) -> nn.Module:
    return training.make_model("cnn", "batch", seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun ... -m bncourse.ddp_train")
    parser.add_argument("--steps", type=int, default=20, help="SGD steps (default 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: nccl on GPUs)")
    parser.add_argument("--out", default=None, help="rank 0 writes the results here (JSON)")
    args = parser.parse_args(argv)
    # Checked before any process group: a batch larger than the training set came out
    # shorter than --batch-size (the shares and loss weights then wrong, silently), and 0 or
    # the whole set divided by zero
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    data = training.load_digits()
    if args.batch_size > len(data.train_y):
        parser.error(
            f"--batch-size must be at most the {len(data.train_y)} training images, "
            f"got {args.batch_size}"
        )
    if "RANK" not in os.environ:
        parser.error("start it with torchrun (see the module's docstring)")
    start = time.monotonic()
    use_cuda = torch.cuda.is_available() and args.backend != "gloo"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # (a cluster sets its own interface)
    torch.set_num_threads(1)
    dist.init_process_group(
        args.backend or ("nccl" if use_cuda else "gloo"), timeout=timedelta(seconds=60)
    )
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if use_cuda else "cpu")
        batches = [
            (x.to(device), y.to(device))
            for x, y in global_batches(data, args.batch_size, args.steps, args.seed)
        ]
        sizes = shares(args.batch_size, world_size)
        model = convert_sync_batchnorm(_model(args.seed)).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
        # DDP averages the per-process gradients: with shares of unequal size, weight each
        # process's mean loss by its share, so that the average is the global batch's mean
        weight = world_size * sizes[rank] / args.batch_size

        def part(t: torch.Tensor) -> torch.Tensor:
            return shard(t, sizes, rank)

        optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
        ddp.train()
        for x, y in batches:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(ddp(part(x)), part(y)) * weight
            loss.backward()
            optimizer.step()
        if rank == 0:
            reference = train_steps(_model(args.seed).to(device), batches, args.lr)
            ours, theirs = model.state_dict(), reference.state_dict()
            difference = max(
                (ours[k].double() - theirs[k].double()).abs().max().item() for k in theirs
            )
            accuracy = training.evaluate(model.cpu(), data.test_x, data.test_y)[1]
            result = {
                "world_size": world_size,
                "backend": dist.get_backend(),
                "steps": args.steps,
                "shares": sizes,
                "max_difference_from_one_global_batchnorm": difference,
                "test_accuracy": accuracy,
                "seconds": round(time.monotonic() - start, 1),
            }
            print(json.dumps(result))
            if args.out:
                with open(args.out, "w") as file:
                    json.dump(result, file)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
