"""The training loss and its NaN/inf check, kept on the device and read every few steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..dist import context as distributed


@dataclass(frozen=True)
class LossRead:
    """What a read finds, the same on every rank: the last step's loss (the global batch's:
    the mean of the ranks' means over their equal shares), the first step whose loss was not
    finite on any rank (None: none was) and on how many ranks it was not finite at that
    step, and whether any rank was asked to stop."""

    loss: float
    first_bad_step: int | None
    bad_ranks: int
    stop: bool


class LossReads:
    """Each step hands its loss over without a host synchronisation: the device keeps the
    last loss and the first step whose loss was NaN or infinite. `read` copies both to the
    host at once and, across processes, sums the bad flags and stop requests in one
    all-reduce, so every rank learns the same thing at the same step (and, only when there
    is one, the first bad step and where it was, with two more). Reading every step would
    stall a GPU on each `float(loss)`; the trainer reads every log_every steps and before
    anything that must not see a diverged net (a checkpoint, a validation, the end)."""

    def __init__(self):
        self.last: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, step: int) -> None:
        value = loss.detach().double()
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.float64, device=value.device)
        bad = ~torch.isfinite(value) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, float(step), self.first_bad)
        self.last = value

    def read(self, ctx, stop_requested: bool) -> LossRead:
        loss, first_bad = torch.stack([self.last, self.first_bad]).tolist()  # one copy
        bad, stop, losses = distributed.all_reduce_sum(
            [float(first_bad > 0), float(stop_requested), loss], ctx
        )
        loss = losses / ctx.world
        first = None
        if bad:  # every rank sees the same sum, so every rank takes part in these too
            mine = first_bad if first_bad > 0 else math.inf
            (first,) = distributed.all_reduce_sum([mine], ctx, dist.ReduceOp.MIN)
            # The ranks it appeared on first (gradients carry it to the others a step later).
            (bad,) = distributed.all_reduce_sum([float(first_bad == first)], ctx)
            first = int(first)
        self.first_bad = None
        return LossRead(loss, first, int(bad), bool(stop))
