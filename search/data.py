"""A run's data: splits, loaders and the fixed train-time augmentation, each distinct dataset built once."""
from __future__ import annotations

import torch

from augment.fixed import TrainAugment
from datasets import BatchLoader, DataSplits, InfiniteBatches, build_splits
from utils.config_sections import ArchConfig, DatasetConfig
from utils.distributed import Distributed
from utils.errors import UserError


class RunData:
    """Each distinct (dataset, input size) of a run, built once: checked before a run folder exists
    (a missing dataset or a batch larger than a split fails there) and shared by every stage."""

    def __init__(self, seed: int, dist: Distributed = Distributed()):
        self.seed, self.dist = seed, dist
        self._built: dict[tuple, tuple[DataSplits, dict]] = {}  # key: (dataset name, its repr, input size)

    def get(self, ds: DatasetConfig, arch: ArchConfig) -> tuple[DataSplits, dict]:
        """(splits, loaders) of a stage's dataset at its input size."""
        key = (ds.name, repr(ds), arch.input_size)
        if key not in self._built:
            data = build_data(ds, arch, self.seed)
            self._built[key] = (data, build_loaders(data, ds, self.seed, self.dist))
        return self._built[key]

    def summary(self) -> list[str]:
        """One line per dataset built."""
        return [f"data {key[0]}: {len(d.train)} train / {len(d.val)} val / {len(d.test)} test, "
                f"{d.num_classes} classes, {d.channels}x{d.image_size}x{d.image_size}"
                for key, (d, _) in self._built.items()]


def build_data(ds: DatasetConfig, arch: ArchConfig, seed: int) -> DataSplits:
    """Train / val / test splits of the configured dataset."""
    return build_splits(ds.name, ds.root, image_size=arch.input_size, val_ratio=ds.val_ratio, seed=seed,
                        download=ds.download, val_in_train=ds.val_in_train, num_classes=ds.num_class,
                        max_train=ds.max_train, max_test=ds.max_test, mean=ds.mean, std=ds.std)


def build_train_augment(ds: DatasetConfig, arch: ArchConfig, data: DataSplits) -> TrainAugment:
    """Crop/flip on the device for in-memory data (file loaders crop and flip per image), Cutout always."""
    padding = 0
    if ds.random_crop and data.in_memory:
        padding = ds.crop_padding if ds.crop_padding is not None else arch.input_size // 8
    return TrainAugment(crop_padding=padding, flip=ds.flip and data.in_memory, cutout_size=ds.cutout_size or 0,
                        mean=data.mean)


def build_loaders(data: DataSplits, ds: DatasetConfig, seed: int, dist: Distributed = Distributed()) -> dict:
    """Training batches, an endless validation stream (bilevel updates) and evaluation loaders; with
    several processes, each process's share of every global batch (dataset.batch_size per process)."""
    size = ds.batch_size * dist.world
    per = f" x {dist.world} processes" if dist.world > 1 else ""
    if len(data.train) < size:
        raise UserError(f"the training split has {len(data.train)} images, fewer than one batch "
                        f"(dataset.batch_size={ds.batch_size}{per}); lower the batch size")
    if dist.world > 1 and len(data.val) < size:  # every rank's validation share must be the same size
        raise UserError(f"the validation split has {len(data.val)} images, fewer than one batch "
                        f"(dataset.batch_size={ds.batch_size}{per}); lower the batch size or raise dataset.val_ratio")
    common = dict(seed=seed, workers=ds.workers, pin_memory=ds.pin, shard=(dist.rank, dist.world))
    return {
        "train": BatchLoader(data.train, ds.batch_size, shuffle=True, drop_last=True, **common),
        # Full batches only, as DHA's FitSampler: a pass's leftover few images would otherwise make
        # one hypergradient / architecture step in every pass a noisy small-batch one.
        "val_stream": InfiniteBatches(BatchLoader(data.val, ds.batch_size, shuffle=True,
                                                  drop_last=len(data.val) >= size, **common)),
        "val": BatchLoader(data.val, ds.batch_size, shuffle=False, drop_last=False, **common),
        "test": BatchLoader(data.test, ds.batch_size, shuffle=False, drop_last=False, **common),
    }


def build_eval_transform(ds: DatasetConfig, arch: ArchConfig, data: DataSplits, device: torch.device):
    """None, or (reference quirk `cutout_eval`) the Cutout the original also applied to val / test."""
    if not ds.cutout_eval or not ds.cutout_size:
        return None
    return TrainAugment(cutout_size=ds.cutout_size, flip=False, mean=data.mean).to(device).post
