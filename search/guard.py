"""The guard that skips steps with a non-finite loss or gradient and stops a stage that keeps failing."""
from __future__ import annotations

import torch

from utils.errors import UserError


class NonFiniteError(UserError):
    """Too many steps in a row had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts the steps skipped for a non-finite loss or weight gradient; `patience` in a row stop
    the stage with a NonFiniteError (the last checkpoint stays the valid one)."""

    def __init__(self, patience: int):
        self.patience, self.in_row, self.total = patience, 0, 0

    def passed(self, value: torch.Tensor) -> bool:
        """True when `value` is finite (one host sync); else count the skip, and stop at `patience`."""
        if bool(torch.isfinite(value).all()):
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        if self.in_row >= self.patience:
            raise NonFiniteError(f"training stopped: {self.in_row} steps in a row had a non-finite loss or gradient "
                                 "(each was skipped); lower the learning rates or check the data")
        return False

    def state_dict(self) -> dict:
        """The counters."""
        return {"in_row": self.in_row, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        self.in_row, self.total = state["in_row"], state["total"]
