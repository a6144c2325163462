"""Fixed schedules of the weight learning rate; the loop owns the epoch counter and passes it in."""
from __future__ import annotations

import math


class CosineSchedule:
    """lr(epoch) = lr_min + (lr_max - lr_min) (1 + cos(pi epoch / total)) / 2; fixed weight decay."""

    def __init__(self, lr_max: float, lr_min: float, total_epochs: int, weight_decay: float):
        self.lr_max, self.lr_min, self.total, self.weight_decay = lr_max, lr_min, max(1, total_epochs), weight_decay

    def lr(self, epoch: int) -> float:
        """Learning rate of `epoch` (0-based)."""
        return self.lr_min + (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * min(epoch, self.total) / self.total)) / 2

    def values(self, epoch: int) -> dict[str, float]:
        """lr and wd of `epoch`, for logging and hparams.json."""
        return {"lr": self.lr(epoch), "wd": self.weight_decay}

    def state_dict(self) -> dict:
        """Stateless: everything is a function of the epoch."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


class ConstantSchedule(CosineSchedule):
    """A constant learning rate (DHA's single-stage search runs at `w_lr`)."""

    def __init__(self, lr: float, weight_decay: float):
        super().__init__(lr, lr, 1, weight_decay)

    def lr(self, epoch: int) -> float:
        """Always the same."""
        return self.lr_max
