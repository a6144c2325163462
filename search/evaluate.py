"""Evaluation: loss and top-1 of a model over a loader, one host sync at the end."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from utils.distributed import Distributed


def to_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, C, H, W] on the host -> float in [0, 1] on `device` (non-blocking copy)."""
    return x.to(device, non_blocking=True).to(torch.get_default_dtype()).div_(255.0)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, max_batches: int | None = None,
             transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             dist: Distributed = Distributed()) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy in eval mode (`transform`: the reference's Cutout quirk),
    over every rank's share of the loader."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, device=device, dtype=torch.float64)
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        y = y.to(device, non_blocking=True)
        x = to_input(x, device)
        logits = model(transform(x) if transform is not None else x)
        totals += torch.stack([
            nn.functional.cross_entropy(logits, y, reduction="sum").double(),
            (logits.argmax(1) == y).sum().double(),
            torch.tensor(float(y.numel()), device=device, dtype=torch.float64),
        ])
    model.train(was_training)
    loss, correct, count = dist.sum(totals).tolist()
    return {"loss": loss / max(count, 1), "top1": correct / max(count, 1), "count": int(count)}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device) -> torch.Tensor:
    """Arg-max predictions over a loader (eval mode), on the host."""
    model.eval()
    return torch.cat([model(to_input(x, device)).argmax(1).cpu() for x, _ in loader])
