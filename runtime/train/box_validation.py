"""Validation of a box head during training: protocol 1 (Table 8) on the central crop.

For each validation image, the net's box for the ground-truth class (SCR: its one box) is
decoded from the central crop back into the image's own coordinates and compared with every
box of that class in the image: the GT-class localisation error is the fraction of images
where the best IoU is ≤ 0.5, reported with the mean of that best IoU and the Euclidean loss.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import boxes as bx
from ..data.box_augment import crop_to_image
from ..data.loader import make_loader
from ..dist import context as distributed
from ..dist.context import shard


def best_ious(predicted, data, indices) -> list[float]:
    """Per image `indices[i]` of the box validation set `data`: the best IoU of its predicted
    box (encoded, relative to the central crop) with the image's boxes of its class."""
    crop = data.crop
    out = []
    for encoded, index in zip(predicted, indices, strict=True):
        size, scaled, offset = data.geometry(index)
        in_crop = bx.decode(encoded, (crop[1], crop[0]))
        in_image = crop_to_image(in_crop, size, scaled, offset, crop, False)
        out.append(float(bx.iou(in_image, data.boxes[index]).max()))
    return out


@torch.no_grad()
def validate_boxes(net, data, ctx, batch_size: int, workers: int) -> dict:
    """Protocol 1 over the validation set, split over the ranks as training's validation is
    (contiguous shares, sums all-reduced)."""
    mine = shard(len(data.val), ctx)
    batches = [list(mine[i : i + batch_size]) for i in range(0, len(mine), batch_size)]
    loader = make_loader(data.val, None, workers, batch_sampler=batches)
    _, head = net.head()[-1]
    was_training = net.training
    net.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, wrong, IoU, images
    dtype = next(net.parameters()).dtype  # float64 with precision fp64
    for indices, (x, target) in zip(batches, loader, strict=True):
        x, target = x.to(ctx.device, dtype), target.to(ctx.device)
        scores = net(x).float()
        sums[0] += float(net.loss(scores, target)) * len(target)
        boxes = head.class_boxes(scores, target[:, 0]).cpu().double().numpy()
        ious = np.array(best_ious(boxes, data.val, indices))
        sums[1] += float((ious <= bx.IOU_THRESHOLD).sum())
        sums[2] += float(ious.sum())
        sums[3] += len(target)
    net.train(was_training)
    loss, wrong, iou, count = distributed.all_reduce_sum(sums, ctx)
    return {
        "val_loss": loss / count,
        "val_loc_error": wrong / count,
        "val_mean_iou": iou / count,
        "images": int(count),
    }
