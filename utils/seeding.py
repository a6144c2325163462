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


def rng_state(device: torch.device) -> dict:
    """torch's generator states on the host and on `device` (what a mid-epoch checkpoint must hold)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    """Inverse of `rng_state`."""
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
