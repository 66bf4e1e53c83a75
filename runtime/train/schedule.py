"""The paper's learning-rate rule: divide by 10 when validation accuracy stops improving."""

from __future__ import annotations

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
