"""Which images each rank trains on at each step: one global order per epoch."""

from __future__ import annotations

import numpy as np


class EpochBatchSampler:
    """Per epoch, a permutation drawn from (seed, epoch) is cut into global batches
    (the last incomplete one dropped, so every step averages the same number of
    images); rank r takes the r-th of `world` equal slices of each. The union over
    ranks of a step's images is the same for any number of processes, which is what
    makes synchronous data parallelism give the single-process result. `start_step`
    resumes mid-epoch."""

    def __init__(self, size: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} does not split over {world} processes")
        if size < global_batch:
            raise ValueError(f"{size} training images are fewer than one batch of {global_batch}")
        self.size, self.global_batch = size, global_batch
        self.rank, self.world, self.seed = rank, world, seed
        self.local_batch = global_batch // world
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def order(self, epoch: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 1])))
        return rng.permutation(self.size)

    def __iter__(self):
        order = self.order(self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            start = step * self.global_batch + self.rank * self.local_batch
            yield order[start : start + self.local_batch].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step
