"""Dataset containers (in-memory and file-backed), the split bundle, and the seeded train/val split."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets.imageops import load_rgb
from datasets.seeding import make_generator
from utils.errors import ConfigError, UserError

PILTransform = Callable[[Image.Image], torch.Tensor]

# Tags keep the split permutation independent of other draws that use the same run seed.
_SPLIT_TAG = 0x5B1
_SUBSET_TAG = 0xCA9


class TensorImageDataset(Dataset):
    """In-memory dataset: uint8 images [N,C,H,W] and int64 labels [N]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Wrap tensors; images must be uint8 [N,C,H,W] and labels have N entries."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        """Number of images."""
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Image uint8 [C,H,W] and its integer label."""
        return self.images[index], int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> "TensorImageDataset":
        """A new dataset holding only the given indices (a copy, so the parent can be freed)."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(self.images[indices].contiguous(), self.labels[indices].clone())


class FileImageDataset(Dataset):
    """File-backed dataset: decodes (path, label) samples with PIL on access and applies a transform."""

    def __init__(self, samples: list[tuple[str, int]], transform: PILTransform) -> None:
        """Keep the sample list; transform maps an RGB PIL image to a uint8 [C,H,W] tensor."""
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Decoded, transformed image uint8 [C,H,W] and its integer label."""
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label

    @property
    def labels(self) -> torch.Tensor:
        """All labels as an int64 tensor, without decoding any image."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def subset(self, indices: torch.Tensor, transform: PILTransform | None = None) -> "FileImageDataset":
        """A new dataset with the given indices, optionally with another transform (e.g. eval for val)."""
        chosen = [self.samples[i] for i in torch.as_tensor(indices, dtype=torch.int64).tolist()]
        return FileImageDataset(chosen, transform if transform is not None else self.transform)


ImageDataset = TensorImageDataset | FileImageDataset


@dataclass
class DataSplits:
    """Train/val/test datasets plus the facts the model and device-side normalisation need."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # True: train is un-augmented uint8 in memory, crop/flip happen on the device; False: the
    # per-image train transform already did RandomResizedCrop + flip.
    in_memory: bool


def split_train_val(n: int, val_ratio: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint split of range(n): (sorted train indices, sorted val indices), val = max(1, round(n*ratio))."""
    if not 0.0 <= val_ratio < 1.0:
        raise ConfigError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if n < 2:
        raise UserError(f"cannot split {n} training image(s) into train and val: need at least 2")
    n_val = min(n - 1, max(1, round(n * val_ratio)))
    perm = torch.randperm(n, generator=make_generator(seed, _SPLIT_TAG))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def seeded_subset_indices(n: int, keep: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of size min(n, keep) of range(n)."""
    if keep >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=make_generator(seed, _SUBSET_TAG))[:keep].sort().values
