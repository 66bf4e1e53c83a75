"""Learning-rate schedules: the paper's (÷10 when validation accuracy stops improving) and a
one-cycle schedule for short runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class PlateauSchedule:
    """lr × factor once more than `patience` epochs in a row bring no better top-1
    accuracy (torch's ReduceLROnPlateau counts the same way), at most
    `max_drops` times (the paper: ×0.1, 3 times). Fed the same all-reduced accuracy on
    every rank, every rank takes the same decision."""

    lr: float
    factor: float = 0.1
    patience: int = 1
    max_drops: int = 3
    best: float = -1.0
    epochs_without_gain: int = 0
    drops: int = 0

    per_step = False  # the optimizer's lr changes only when `step` says so

    def step(self, accuracy: float) -> bool:
        """Record an epoch's validation accuracy; True if the learning rate dropped."""
        if accuracy > self.best:
            self.best = accuracy
            self.epochs_without_gain = 0
            return False
        self.epochs_without_gain += 1
        if self.epochs_without_gain > self.patience and self.drops < self.max_drops:
            self.lr *= self.factor
            self.drops += 1
            self.epochs_without_gain = 0
            return True
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class OneCycleSchedule:
    """The learning rate of every step, a function of the step alone (so a resume needs no
    state): linear warm-up from 0 to `peak` over the first `warmup` fraction of the run's
    steps, then half a cosine down to 0 at the last step. Not the paper's: a run of a few
    epochs has no time to wait for a plateau, and batch norm nets take the high peak."""

    peak: float
    warmup: float = 0.2
    lr: float = 0.0  # of the step last set; the log and summary show it
    drops = 0
    max_drops = 0
    per_step = True

    def at(self, step: int, total: int) -> float:
        """The learning rate for SGD step `step` (0-based) of `total`."""
        ramp = max(1, round(self.warmup * total)) if self.warmup > 0 else 0
        if step < ramp:
            return self.peak * (step + 1) / ramp
        rest = max(1, total - ramp)
        return self.peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / rest)))

    def step(self, accuracy: float) -> bool:
        """Validation does not steer it."""
        return False

    def state_dict(self) -> dict:
        return {"peak": self.peak, "warmup": self.warmup, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def make_schedule(cfg):
    """The schedule a TrainConfig asks for."""
    if cfg.lr_schedule == "one-cycle":
        return OneCycleSchedule(cfg.lr, cfg.lr_warmup)
    return PlateauSchedule(cfg.lr, cfg.lr_factor, cfg.lr_patience, cfg.lr_drops)
