"""A torch DataLoader for these datasets: persistent worker processes, pinned only on CUDA."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _one_thread_per_worker(_worker_id: int) -> None:
    # Each worker decodes one image at a time; torch's intra-op threads would only
    # oversubscribe the cores the training process needs.
    torch.set_num_threads(1)


def default_workers(processes: int = 1, cores: int | None = None) -> int:
    """Loader processes per evaluation process when none are asked for: none up to 4 cores
    per process, where the net is the bottleneck and a loader process only takes a core from
    it (the demo's `run eval` on the shared 2-core machine: 13.3 images/s with none against
    11.5 with one; bench/eval.py --demo), else one per 8 cores, at most 4."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_process = max(1, (cores or 1) // max(1, processes))
    return 0 if per_process <= 4 else min(4, per_process // 8 or 1)


def make_loader(
    dataset: Dataset,
    batch_size: int | None,
    workers: int,
    sampler: Sampler | Iterable | None = None,
    *,
    batch_sampler: Sampler | Iterable | None = None,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
    prefetch_factor: int = 2,
    pin_memory: bool | None = None,
) -> DataLoader:
    """DataLoader over `dataset` with `workers` processes (0: load in this process).

    No shuffling here: pass a sampler (e.g. DistributedSampler, reseeded each epoch) so the
    order is reproducible; the items themselves are already deterministic. Workers persist
    across epochs, so call the dataset's `set_epoch` before each `iter(loader)`. Use either
    `batch_size` (with an optional `sampler`) or `batch_sampler` (with batch_size None).
    `pin_memory`: pin batches for the copy to a GPU; None: when CUDA is available."""
    if batch_sampler is not None and (batch_size is not None or sampler is not None):
        raise ValueError("give batch_sampler alone, with batch_size=None and no sampler")
    extra = {}
    if workers > 0:
        extra = {
            "persistent_workers": True,
            "prefetch_factor": prefetch_factor,
            "worker_init_fn": _one_thread_per_worker,
        }
    return DataLoader(
        dataset,
        batch_size=batch_size if batch_sampler is None else 1,
        sampler=sampler,
        batch_sampler=batch_sampler,
        num_workers=workers,
        drop_last=drop_last if batch_sampler is None else False,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        **extra,
    )
