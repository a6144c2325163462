"""Dataset name -> builder, and build_splits: caps, train/val split and statistics on top of a builder."""

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from datasets.base import (
    DataSplits,
    FileImageDataset,
    ImageDataset,
    PILTransform,
    TensorImageDataset,
    seeded_subset_indices,
    split_train_val,
)
from datasets.digits import build_digits
from datasets.fake import build_fake
from datasets.flowers import build_flowers102
from datasets.folders import build_imagefolder, build_imagenet, materialize
from datasets.source import SourceData, SourceRequest
from datasets.torchvision_sets import build_cifar10, build_cifar100, build_svhn
from utils.errors import ConfigError, UserError

Builder = Callable[[SourceRequest], SourceData]

DATASETS: dict[str, Builder] = {
    "cifar10": build_cifar10,
    "cifar100": build_cifar100,
    "svhn": build_svhn,
    "flowers102": build_flowers102,
    "imagenet": build_imagenet,
    "sport8": build_imagefolder,
    "mit67": build_imagefolder,
    "imagefolder": build_imagefolder,
    "digits": build_digits,
    "fake": build_fake,
}

# Builders that generate or ship their data and so ignore root.
_ROOTLESS = frozenset({"digits", "fake"})
# Test-set caps use a constant seed so runs with different seeds are scored on the same images.
_TEST_CAP_SEED = 0


def _cap(dataset: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    """A seeded subset of at most limit items (the dataset itself when no cap applies)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.subset(seeded_subset_indices(len(dataset), limit, seed))


def _val_subset(pool: ImageDataset, indices: torch.Tensor, transform: PILTransform | None) -> ImageDataset:
    """The val slice of the pool, switched to the eval transform when file-backed."""
    if isinstance(pool, FileImageDataset):
        return pool.subset(indices, transform)
    return pool.subset(indices)


def _stats(name: str, given: Sequence[float] | None, default: tuple[float, ...], channels: int,
           positive: bool) -> tuple[float, ...]:
    """User-given mean/std (validated against the channel count) or the dataset default."""
    if given is None:
        return default
    values = tuple(float(v) for v in given)
    if len(values) != channels:
        raise ConfigError(f"config key 'dataset.{name}' needs {channels} value(s), one per channel of the data, "
                          f"got {len(values)}")
    if positive and min(values) <= 0:
        raise ConfigError(f"config key 'dataset.{name}' values must be > 0, got {values}")
    return values


def _check_args(name: str, root: str | Path | None, image_size: int, max_train: int | None,
                max_test: int | None) -> None:
    """Reject bad arguments before any file is touched."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}': valid names are {', '.join(sorted(DATASETS))}")
    if root is None and name not in _ROOTLESS:
        raise ConfigError(f"dataset '{name}' needs a root folder")
    if image_size < 1:
        raise ConfigError(f"image_size must be >= 1, got {image_size}")
    if max_train is not None and max_train < 2:
        raise ConfigError(f"max_train must be >= 2 (train and val need an image each), got {max_train}")
    if max_test is not None and max_test < 1:
        raise ConfigError(f"max_test must be >= 1, got {max_test}")


def build_splits(
    name: str,
    root: str | Path | None,
    *,
    image_size: int,
    val_ratio: float,
    seed: int,
    download: bool = False,
    val_in_train: bool = False,
    num_classes: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataSplits:
    """Build train/val/test for a named dataset; val is carved from the (capped) training pool with the seed."""
    _check_args(name, root, image_size, max_train, max_test)
    req = SourceRequest(name, Path(root if root is not None else ".").expanduser(), image_size, download, num_classes)
    src = DATASETS[name](req)
    if num_classes is not None and num_classes != src.num_classes:
        raise ConfigError(f"dataset '{name}' has {src.num_classes} classes but num_classes is {num_classes}")

    pool = _cap(src.pool, max_train, seed)
    test = _cap(src.test, max_test, _TEST_CAP_SEED)
    if src.decode_size is not None:
        pool = materialize(pool, src.decode_size)
        test = materialize(test, src.decode_size)

    train_idx, val_idx = split_train_val(len(pool), val_ratio, seed)
    # val_in_train reproduces the original DHA, which trained on all images including the val slice.
    train = pool if val_in_train else pool.subset(train_idx)
    val = _val_subset(pool, val_idx, src.eval_transform)

    return DataSplits(
        train=train, val=val, test=test,
        num_classes=src.num_classes, channels=src.channels, image_size=image_size,
        mean=_stats("mean", mean, src.mean, src.channels, positive=False),
        std=_stats("std", std, src.std, src.channels, positive=True),
        in_memory=isinstance(train, TensorImageDataset),
    )
