"""Epoch-seeded batch iteration: tensor indexing in memory, a DataLoader for files, an endless resumable wrapper."""

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from datasets.base import FileImageDataset, ImageDataset, TensorImageDataset
from datasets.seeding import make_generator, mix_seed

Batch = tuple[torch.Tensor, torch.Tensor]

# Distinct tags so the batch order and the per-item augmentation draws never share a stream.
_ORDER_TAG = 0x0D3
_ITEM_TAG = 0x17E


def _can_pin() -> bool:
    """Whether pinned host memory is meaningful here (an accelerator is present)."""
    return torch.accelerator.is_available()


class _SeededItems(Dataset):
    """View of a FileImageDataset whose random transforms are seeded per (epoch seed, item index)."""

    def __init__(self, dataset: FileImageDataset, epoch_seed: int) -> None:
        """Wrap dataset; epoch_seed fixes every random transform for this epoch."""
        self.dataset = dataset
        self.epoch_seed = epoch_seed

    def __len__(self) -> int:
        """Same length as the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """The wrapped item, with torch's RNG seeded from (epoch seed, index) during its transform."""
        # torchvision's random transforms draw from the global torch RNG; forking it keeps the caller's
        # stream untouched and makes crops independent of worker count and of batch position, so
        # resuming mid-epoch reproduces them exactly.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.epoch_seed, _ITEM_TAG, index))
            return self.dataset[index]


class BatchLoader:
    """One epoch of (x uint8 [B,C,H,W], y int64 [B]) batches whose order is a pure function of (seed, epoch)."""

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        workers: int = 0,
        pin_memory: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """Configure iteration; nothing is loaded until iterated. `shard` = (rank, world): each of
        `world` processes takes its slice of every global batch of batch_size * world items (in rank
        order, so the slices put together are one process's batch of that size)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(dataset, (TensorImageDataset, FileImageDataset)):
            raise TypeError(f"unsupported dataset type {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.workers = workers
        self.pin_memory = pin_memory
        self.rank, self.world = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and per-image augmentation) the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n, size = len(self.dataset), self.batch_size * self.world
        return n // size if self.drop_last else math.ceil(n / size)

    def order(self) -> torch.Tensor:
        """Item indices in the order the current epoch visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=make_generator(self.seed, self.epoch, _ORDER_TAG))

    def iterate(self, start_batch: int = 0) -> Iterator[Batch]:
        """Iterate the current epoch starting at batch index start_batch (for exact mid-epoch resume)."""
        # Order is computed now, not lazily, so a later set_epoch cannot change a started iterator.
        size = self.batch_size * self.world
        order = self.order()[start_batch * size: len(self) * size]
        # A short last batch (drop_last false) splits as evenly as it can; a rank may get none of it.
        shares = [chunk.tensor_split(self.world)[self.rank] for chunk in order.split(size)]
        shares = [idx for idx in shares if len(idx)]
        if isinstance(self.dataset, TensorImageDataset):
            return self._iter_tensors(shares)
        return self._iter_files(shares)

    def __iter__(self) -> Iterator[Batch]:
        """Iterate the whole current epoch."""
        return self.iterate(0)

    def _iter_tensors(self, batches: list[torch.Tensor]) -> Iterator[Batch]:
        """Slice the in-memory tensors directly: much faster than a per-item DataLoader."""
        images, labels = self.dataset.images, self.dataset.labels
        pin = self.pin_memory and _can_pin()
        for idx in batches:
            x, y = images[idx], labels[idx]
            yield (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    def _iter_files(self, batches: list[torch.Tensor]) -> Iterator[Batch]:
        """Decode files through a DataLoader with an explicit batch sampler and per-item seeding."""
        batches = [idx.tolist() for idx in batches]
        loader = DataLoader(
            _SeededItems(self.dataset, mix_seed(self.seed, self.epoch)),
            batch_sampler=batches,
            num_workers=self.workers,
            pin_memory=self.pin_memory and _can_pin(),
            generator=make_generator(self.seed, self.epoch),
        )
        yield from loader


class InfiniteBatches:
    """Endless batches from a BatchLoader, resumable from (epoch_key, passes, position)."""

    def __init__(self, loader: BatchLoader, epoch_key: int = 0) -> None:
        """Start at the first batch of the pass keyed by epoch_key."""
        if len(loader) == 0:
            raise ValueError("InfiniteBatches needs a loader with at least one batch")
        self.loader = loader
        self._epoch_key = epoch_key
        self._passes = 0
        self._position = 0
        self._iterator: Iterator[Batch] | None = None

    def _loader_epoch(self) -> int:
        """Epoch handed to the loader: the key itself on the first pass, a mixed value on later ones."""
        # Mixing (rather than key + passes) keeps extra passes within one epoch from replaying the
        # order of the next epoch's first pass.
        return self._epoch_key if self._passes == 0 else mix_seed(self._epoch_key, self._passes)

    def __iter__(self) -> "InfiniteBatches":
        """Itself: it is its own iterator."""
        return self

    def __next__(self) -> Batch:
        """The next batch, starting a new pass when the current one is exhausted."""
        while True:
            if self._iterator is None:
                self.loader.set_epoch(self._loader_epoch())
                self._iterator = self.loader.iterate(self._position)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._passes += 1
                self._position = 0
                self._iterator = None
                continue
            self._position += 1
            return batch

    def reset(self, epoch_key: int) -> None:
        """Restart deterministically from the first batch of the pass keyed by epoch_key."""
        self._epoch_key = epoch_key
        self._passes = 0
        self._position = 0
        self._iterator = None

    def state_dict(self) -> dict[str, int]:
        """Counters that identify the next batch exactly."""
        return {"epoch_key": self._epoch_key, "passes": self._passes, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume so that the next batch equals the one that followed when state_dict() was taken."""
        self._epoch_key = int(state["epoch_key"])
        self._passes = int(state["passes"])
        self._position = int(state["position"])
        self._iterator = None
