"""Top-k accuracy: the one count that training's validation and the test protocol share."""

from __future__ import annotations

import torch
from vggspec.compiler.ir.ops.task import CLASSIFICATION, TOP_K


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> tuple[int, int]:
    """(top-1 correct, top-k correct): the classification task's count."""
    return CLASSIFICATION.correct(scores, labels, k)
