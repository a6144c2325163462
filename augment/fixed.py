"""Always-on training augmentation applied to whole batches on the device: crop, flip, Cutout."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and take a random same-size crop per sample. x: [B, C, H, W]."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b, 1, 1, 1), device=x.device, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b, 1, 1, 1), device=x.device, generator=generator)
    rows = (oy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(b, c, h, w + 2 * padding)
    cols = (ox + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each sample horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int, fill: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One size x size square per sample (centre uniform, clipped at the borders) set to `fill`."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - size // 2) & (ys < cy + size // 2) & (xs >= cx - size // 2) & (xs < cx + size // 2)
    return torch.where(inside.unsqueeze(1), fill.view(1, -1, 1, 1).to(x.dtype), x)


class TrainAugment(nn.Module):
    """Crop-with-padding, horizontal flip and Cutout on a float batch in [0, 1].

    Cutout fills with the dataset mean: the reference zeroes after normalisation, the same thing.
    """

    def __init__(self, crop_padding: int = 0, flip: bool = True, cutout_size: int = 0,
                 mean: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.crop_padding, self.flip, self.cutout_size = crop_padding, flip, cutout_size
        self.register_buffer("fill", torch.tensor(list(mean), dtype=torch.float32), persistent=False)

    def pre(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop and flip: before any searched policy (as DHA and Faster-AA order them)."""
        x = random_crop(x, self.crop_padding, generator)
        return random_flip(x, generator) if self.flip else x

    def post(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cutout: after the policy."""
        return cutout(x, self.cutout_size, self.fill, generator)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: [B, C, H, W] in [0, 1] -> augmented batch of the same shape (pre, then post)."""
        return self.post(self.pre(x, generator), generator)

    def describe(self) -> dict:
        """JSON description (the fixed part of policy.json)."""
        return {"random_crop_padding": self.crop_padding, "horizontal_flip": self.flip, "cutout": self.cutout_size}
