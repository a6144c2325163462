"""scikit-learn's 8x8 handwritten digits (1,797 real images shipped with sklearn): a tiny offline benchmark."""

import torch

from datasets.base import TensorImageDataset
from datasets.imageops import resize_uint8
from datasets.source import SourceData, SourceRequest

TEST_FRACTION = 0.2
# Constant, not the run seed: every run is scored on the same held-out images.
_TEST_SPLIT_SEED = 20240607


def fixed_test_indices(n: int) -> torch.Tensor:
    """Sorted indices of the fixed 20% test split."""
    gen = torch.Generator()
    gen.manual_seed(_TEST_SPLIT_SEED)
    return torch.randperm(n, generator=gen)[: round(n * TEST_FRACTION)].sort().values


def build_digits(req: SourceRequest) -> SourceData:
    """Digits as uint8 [N,1,S,S] (0..16 scaled to 0..255), fixed test split, stats from the training pool."""
    # Imported here because sklearn adds about a second to every CLI start that never uses digits.
    from sklearn.datasets import load_digits

    raw = load_digits()
    values = torch.from_numpy(raw.images).float().mul_(255.0 / 16.0).round_().clamp_(0, 255)
    images = resize_uint8(values.to(torch.uint8).unsqueeze(1), req.image_size)
    labels = torch.from_numpy(raw.target).to(torch.int64)
    in_test = torch.zeros(len(labels), dtype=torch.bool)
    in_test[fixed_test_indices(len(labels))] = True
    pool_images = images[~in_test]
    scaled = pool_images.float() / 255.0
    return SourceData(
        pool=TensorImageDataset(pool_images.contiguous(), labels[~in_test]),
        test=TensorImageDataset(images[in_test].contiguous(), labels[in_test]),
        num_classes=10, channels=1,
        mean=(round(scaled.mean().item(), 4),), std=(round(scaled.std().item(), 4),),
    )
