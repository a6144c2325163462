"""Device resolution: `auto` picks CUDA when present, else CPU."""
from __future__ import annotations

import torch

from utils.errors import UserError


def resolve_device(name: str = "auto", cudnn_benchmark: bool = True, deterministic: bool = False) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with the cuDNN switches applied."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
        torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
        torch.backends.cudnn.deterministic = deterministic
    elif name != "cpu":
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)

