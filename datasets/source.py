"""What a dataset builder receives and returns, before caps and the train/val split are applied."""

from dataclasses import dataclass
from pathlib import Path

from datasets.base import ImageDataset, PILTransform
from utils.errors import DatasetNotFoundError


@dataclass(frozen=True)
class SourceRequest:
    """Arguments every builder receives."""

    name: str
    root: Path
    image_size: int
    download: bool
    num_classes: int | None


@dataclass
class SourceData:
    """A builder's result: the full training pool, the test set and their facts."""

    pool: ImageDataset
    test: ImageDataset
    num_classes: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # For file-backed pools: the deterministic transform the val slice uses instead of the train one.
    eval_transform: PILTransform | None = None
    # Set for file-backed sources that should be decoded into memory at this size; decoding waits
    # until after the caps so a capped quick run never decodes the whole folder.
    decode_size: int | None = None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def not_found(req: SourceRequest, expected: str, downloadable: bool = False) -> DatasetNotFoundError:
    """The one-line error for a dataset missing from its root."""
    hint = '; set "download": true in the dataset section to fetch it' if downloadable else ""
    return DatasetNotFoundError(f"dataset '{req.name}' not found in '{req.root}': expected {expected}{hint}")
