"""Seeded synthetic, learnable images for tests and smoke runs (no files needed)."""

import math

import torch

from datasets.base import TensorImageDataset
from datasets.source import SourceData, SourceRequest
from utils.errors import ConfigError

POOL_SIZE = 256
TEST_SIZE = 64
DEFAULT_CLASSES = 10
# Fixed so that every run (whatever its seed) sees identical data.
_FAKE_SEED = 1234


def _prototypes(num_classes: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Per-class clean images [K,3,S,S] in [0,1]: a class colour plus a class-specific stripe pattern."""
    colours = torch.rand(num_classes, 3, generator=gen) * 0.6 + 0.2
    phases = torch.rand(num_classes, generator=gen) * 2 * math.pi
    coord = torch.arange(size, dtype=torch.float32) / size
    protos = torch.empty(num_classes, 3, size, size)
    for k in range(num_classes):
        # Frequency and orientation vary with the class so classes differ in shape as well as colour.
        wave = torch.sin(2 * math.pi * (1 + k % 4) * coord + phases[k])
        pattern = wave.view(1, size).expand(size, size) if (k // 4) % 2 == 0 else wave.view(size, 1).expand(size, size)
        protos[k] = colours[k].view(3, 1, 1) + 0.15 * pattern
    return protos


def _sample(protos: torch.Tensor, count: int, gen: torch.Generator) -> TensorImageDataset:
    """count noisy images with balanced, shuffled labels."""
    num_classes = protos.shape[0]
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=gen)]
    images = protos[labels] + 0.08 * torch.randn(protos[labels].shape, generator=gen)
    return TensorImageDataset(images.mul_(255).round_().clamp_(0, 255).to(torch.uint8), labels)


def build_fake(req: SourceRequest) -> SourceData:
    """num_classes (default 10) classes of 3-channel images: 256 training-pool and 64 test images."""
    num_classes = req.num_classes if req.num_classes is not None else DEFAULT_CLASSES
    if num_classes < 2:
        raise ConfigError(f"fake dataset needs at least 2 classes, got {num_classes}")
    gen = torch.Generator()
    gen.manual_seed(_FAKE_SEED)
    protos = _prototypes(num_classes, req.image_size, gen)
    return SourceData(
        pool=_sample(protos, POOL_SIZE, gen),
        test=_sample(protos, TEST_SIZE, gen),
        num_classes=num_classes, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )
