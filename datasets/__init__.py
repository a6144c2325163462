"""Datasets as uint8 image tensors plus labels, seeded splits, and resumable epoch-seeded batch loaders."""

from datasets.base import DataSplits, FileImageDataset, TensorImageDataset, split_train_val
from datasets.loaders import BatchLoader, InfiniteBatches
from datasets.registry import DATASETS, build_splits

__all__ = [
    "build_splits",
    "DATASETS",
    "DataSplits",
    "TensorImageDataset",
    "FileImageDataset",
    "BatchLoader",
    "InfiniteBatches",
    "split_train_val",
]
