"""One place that seeds every random number generator."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def derive_seed(seed: int, *parts: int) -> int:
    """A new seed from a base seed and counters (stage, epoch), stable across runs and resumes."""
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**31 - 1)
    return value
