"""Top-k accuracy: the one count that training's validation and the test protocol share."""

from __future__ import annotations

import torch

TOP_K = 5  # the paper's top-5 error


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> tuple[int, int]:
    """(top-1 correct, top-k correct) of scores (n, classes), of any monotonic kind (logits,
    posteriors), against integer labels (n,); k is capped at the number of classes."""
    if len(labels) == 0:
        return 0, 0
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    hits = top.eq(labels.to(top.device)[:, None])
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())
