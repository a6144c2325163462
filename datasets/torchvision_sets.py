"""CIFAR-10, CIFAR-100 and SVHN through torchvision, held in memory as uint8 tensors."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision import datasets as tvd

from datasets.base import TensorImageDataset
from datasets.imageops import resize_uint8
from datasets.source import SourceData, SourceRequest, not_found
from utils.errors import DatasetNotFoundError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def load_torchvision(req: SourceRequest, expected: str, make: Callable[[], Any]) -> Any:
    """Call a torchvision constructor, turning its missing/corrupt/download errors into one-line errors;
    a failed download leaves no folder behind that was not there before."""
    created = [p for p in (req.root, *req.root.parents) if not p.exists()]
    try:
        return make()
    except (RuntimeError, OSError) as err:
        for folder in created:  # deepest first; only the ones the download made and left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        # torchvision raises RuntimeError for missing/corrupt files and URLError (an OSError) when a
        # download fails; either way the user needs the layout, not a traceback.
        detail = " ".join(str(err).split())
        raise DatasetNotFoundError(f"{not_found(req, expected, downloadable=True)} ({detail})") from None


def _to_dataset(images: np.ndarray, labels: Any, image_size: int) -> TensorImageDataset:
    """uint8 [N,C,H,W] numpy images and labels to a (resized) TensorImageDataset."""
    tensor = resize_uint8(torch.from_numpy(np.ascontiguousarray(images)), image_size)
    return TensorImageDataset(tensor, torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def _cifar(req: SourceRequest, cls: type, folder: str, layout: str, classes: int,
           mean: tuple[float, ...], std: tuple[float, ...]) -> SourceData:
    """Shared loader for the two CIFAR variants (NHWC uint8 arrays in torchvision)."""
    expected = f"{req.root / folder}/ (torchvision's {layout} layout)"
    if not req.download and not (req.root / folder).is_dir():
        raise not_found(req, expected, downloadable=True)
    train = load_torchvision(req, expected, lambda: cls(str(req.root), train=True, download=req.download))
    test = load_torchvision(req, expected, lambda: cls(str(req.root), train=False, download=False))
    return SourceData(
        pool=_to_dataset(train.data.transpose(0, 3, 1, 2), train.targets, req.image_size),
        test=_to_dataset(test.data.transpose(0, 3, 1, 2), test.targets, req.image_size),
        num_classes=classes, channels=3, mean=mean, std=std,
    )


def build_cifar10(req: SourceRequest) -> SourceData:
    """CIFAR-10: 50k train pool, official 10k test split."""
    return _cifar(req, tvd.CIFAR10, "cifar-10-batches-py", "CIFAR-10", 10, CIFAR10_MEAN, CIFAR10_STD)


def build_cifar100(req: SourceRequest) -> SourceData:
    """CIFAR-100: 50k train pool, official 10k test split."""
    return _cifar(req, tvd.CIFAR100, "cifar-100-python", "CIFAR-100", 100, CIFAR100_MEAN, CIFAR100_STD)


def build_svhn(req: SourceRequest) -> SourceData:
    """SVHN: the 73k 'train' split as pool (not 'extra'), official test split."""
    files = [req.root / "train_32x32.mat", req.root / "test_32x32.mat"]
    expected = f"{files[0]} and {files[1]} (torchvision's SVHN layout)"
    if not req.download and not all(f.is_file() for f in files):
        raise not_found(req, expected, downloadable=True)
    train = load_torchvision(req, expected, lambda: tvd.SVHN(str(req.root), split="train", download=req.download))
    test = load_torchvision(req, expected, lambda: tvd.SVHN(str(req.root), split="test", download=req.download))
    # torchvision already stores SVHN as NCHW with label 10 mapped to 0.
    return SourceData(
        pool=_to_dataset(train.data, train.labels, req.image_size),
        test=_to_dataset(test.data, test.labels, req.image_size),
        num_classes=10, channels=3, mean=SVHN_MEAN, std=SVHN_STD,
    )
