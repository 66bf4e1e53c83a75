"""Which posteriors are averaged into which row of the paper's Tables 3–6, and the top-1 /
top-5 errors of each row, summed exactly over processes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...dist import context as distributed
from ...dist.context import Context
from ...train.metrics import topk_correct
from ..models import single_scale
from .evaluate import METHODS, EvalSettings, Evaluation

CHOICES = ("dense", "multi-crop", "both", "all")
LABELS = {"dense": "dense", "multi-crop": "multi-crop", "both": "multi-crop & dense"}


@dataclass
class Row:
    """One line of the table: a method, the scales each net was tested at, and the fused
    posteriors of this rank's images (n, classes)."""

    method: str  # "dense", "multi-crop" or "both"
    scales: list[list[int]]  # per net
    posteriors: np.ndarray


def settings_for(method: str, **settings) -> EvalSettings:
    """The passes a --method needs, with the other settings."""
    passes = {"dense": ("dense",), "multi-crop": ("multi-crop",)}.get(method, METHODS)
    return EvalSettings(methods=passes, single_scale=method == "all", **settings)


def _mean(arrays: list[np.ndarray]) -> np.ndarray:
    # A sum then one division: the mean of one array, or of an array with itself, is
    # that array bit for bit.
    return sum(arrays[1:], arrays[0].copy()) / len(arrays)


def rows(ev: Evaluation, method: str) -> list[Row]:
    """The rows a --method asks for; several nets are fused by averaging their posteriors.
    dense: the dense posteriors averaged over each net's scales (Table 4). multi-crop: the
    crops' posteriors averaged over each net's scales. both: dense, multi-crop and the
    average of the two (Table 5). all: first the single-scale dense row (each net at its
    training scale S, Table 3), then as both."""
    nets = range(len(ev.models))
    scales = [sorted(m.scales) for m in ev.models]

    dense = [ev.dense[i] / len(scales[i]) for i in nets] if ev.dense else None
    crops = [ev.crops[i] / len(scales[i]) for i in nets] if ev.crops else None
    out: list[Row] = []
    if method == "all" and any(len(s) > 1 for s in scales):
        single = [[single_scale(m)] for m in ev.models]
        out.append(Row("dense", single, _mean([ev.single[i] for i in nets])))
    if method in ("dense", "both", "all"):
        out.append(Row("dense", scales, _mean(dense)))
    if method in ("multi-crop", "both", "all"):
        out.append(Row("multi-crop", scales, _mean(crops)))
    if method in ("both", "all"):
        combined = [_mean([dense[i], crops[i]]) for i in nets]
        out.append(Row("both", scales, _mean(combined)))
    return out


def score(ev: Evaluation, table: list[Row], ctx: Context) -> list[dict]:
    """Each row's errors over all ranks' readable images, as the JSON report gives them
    (top-5 only where there are at least 5 classes)."""
    keep = ev.readable
    sums: list[float] = []
    for row in table:
        top1, top5 = topk_correct(
            torch.from_numpy(row.posteriors[keep]), torch.from_numpy(ev.labels[keep])
        )
        sums += [top1, top5, int(keep.sum())]
    totals = distributed.all_reduce_sum(sums, ctx) if table else []
    results = []
    for r, row in enumerate(table):
        top1, top5, count = totals[3 * r : 3 * r + 3]
        flat = sorted({q for qs in row.scales for q in qs})
        entry = {"method": row.method, "scales": flat}
        if len({tuple(qs) for qs in row.scales}) > 1:
            entry["scales_per_net"] = row.scales
        entry["top1_error"] = 1 - top1 / count if count else None
        if len(ev.class_names) >= 5:
            entry["top5_error"] = 1 - top5 / count if count else None
        entry["images"] = int(count)
        results.append(entry)
    return results
