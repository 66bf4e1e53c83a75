"""Validation of a classifier during training: top-1 and top-5 error and the loss over the
validation set, exact under any number of processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vggspec.compiler.ir.ops.task import CLASSIFICATION

from ..data.loader import make_loader
from ..dist import context as distributed
from ..dist.context import shard


@torch.no_grad()
def validate(net, data, ctx, batch_size: int, workers: int) -> dict:
    """Exact validation: rank r takes a contiguous share of the images (no padding, no
    duplicates) and the sums are all-reduced."""
    mine = shard(len(data.val), ctx)
    batches = [list(mine[i : i + batch_size]) for i in range(0, len(mine), batch_size)]
    loader = make_loader(data.val, None, workers, batch_sampler=batches)
    was_training = net.training
    net.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, top-1 correct, top-5 correct, images
    dtype = next(net.parameters()).dtype  # float64 with precision fp64
    for x, y in loader:
        x, y = x.to(ctx.device, dtype), y.to(ctx.device)
        logits = net(x).float()
        top1, top5 = CLASSIFICATION.correct(logits, y)
        sums[0] += float(F.cross_entropy(logits, y, reduction="sum"))
        sums[1] += top1
        sums[2] += top5
        sums[3] += len(y)
    net.train(was_training)
    loss, top1, top5, count = distributed.all_reduce_sum(sums, ctx)
    result = {"val_loss": loss / count, "val_top1_error": 1 - top1 / count, "images": int(count)}
    result["val_top5_error"] = 1 - top5 / count if data.num_classes >= 5 else None
    return result
