"""One process or many: torch.distributed set up from torchrun's environment."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .cpu_memory import retain_freed_memory


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank among `world`, and the device it computes on."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def under_torchrun() -> bool:
    """True inside a worker started by torchrun / torch.distributed.run."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def holds_lock(from_parent: dict) -> bool:
    """Whether this process is the one to lock the folder a job writes into: a process
    started by hand, or rank 0 of workers that torchrun started by hand. Workers that a
    `--nproc` parent started (`from_parent` says `locked`) leave it to the parent, which
    holds it across torchrun's restarts."""
    if not under_torchrun():
        return True
    return not from_parent.get("locked") and os.environ.get("RANK", "0") == "0"


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def setup(device: str = "auto", timeout_s: float = 600.0, threads: int | None = None) -> Context:
    """Join the process group torchrun describes (if any) and pick the device; `threads`:
    torch threads of this process (default on the CPU: the cores shared among the local
    processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        # Share the cores among the processes of this machine instead of oversubscribing.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        retain_freed_memory()  # a step's gigabytes are reused, not faulted in again
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    if threads:
        torch.set_num_threads(threads)
    return Context(rank, world, local_rank, where)


def teardown() -> None:
    if dist.is_initialized():
        gc.collect()  # objects in reference cycles that hold the group go first
        dist.destroy_process_group()


def shard(n: int, ctx: Context) -> range:
    """This rank's contiguous share of n items: no padding, no duplicates, exact totals."""
    return range(ctx.rank * n // ctx.world, (ctx.rank + 1) * n // ctx.world)


def gather_to_main(local, ctx: Context) -> list | None:
    """Every rank's `local` (any picklable object) in rank order, on rank 0; None on the
    other ranks. With the shares of `shard`, concatenating the parts gives the items in
    their order."""
    if not ctx.distributed:
        return [local]
    parts = [None] * ctx.world
    dist.all_gather_object(parts, local)
    return parts if ctx.is_main else None


def all_reduce_sum(values: list[float], ctx: Context, op=None) -> list[float]:
    """Element-wise sum (or `op`: dist.ReduceOp.MIN, …) over all ranks (float64, so counts
    stay exact)."""
    if not ctx.distributed:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op is None else op)
    return tensor.tolist()


def all_reduce_max(values: list[float], ctx: Context) -> list[float]:
    """Element-wise maximum over all ranks (a minimum: of the negated values)."""
    if not ctx.distributed:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


class _SumAcross(torch.autograd.Function):
    """The sum of a tensor over all ranks; its gradient is the sum of theirs (every rank's
    loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_across(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all ranks (BN's statistics over the global batch)."""
    return _SumAcross.apply(tensor)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
