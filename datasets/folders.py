"""ImageFolder-layout datasets (root/train/<class>/<image> plus root/test/ or root/val/)."""

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from datasets.base import FileImageDataset, TensorImageDataset
from datasets.imageops import decode_to_tensor
from datasets.source import IMAGENET_MEAN, IMAGENET_STD, SourceData, SourceRequest, not_found
from datasets.transforms import eval_transform, train_transform
from utils.errors import DatasetNotFoundError

# At or below this size whole folders are decoded into memory; larger images stay on disk.
IN_MEMORY_MAX_SIZE = 64

Samples = list[tuple[str, int]]


def folder_expected(root: Path) -> str:
    """The layout description used in every ImageFolder 'not found' message."""
    return f"{root}/train/<class>/<image> and {root}/val/ or {root}/test/"


def _bad_layout(req: SourceRequest, problem: str) -> DatasetNotFoundError:
    """A one-line error for a folder that exists but does not have the expected layout."""
    return DatasetNotFoundError(
        f"dataset '{req.name}' in '{req.root}' has the wrong layout: {problem}; expected {folder_expected(req.root)}"
    )


def _subdirs(path: Path) -> set[str]:
    """Names of the immediate sub-folders of path."""
    return {p.name for p in path.iterdir() if p.is_dir()}


def scan_folders(req: SourceRequest, test_names: tuple[str, ...] = ("test", "val")) -> tuple[Samples, Samples, int]:
    """(train samples, test samples, number of classes) with class index = sorted train class folder names."""
    train_dir = req.root / "train"
    test_dir = next((req.root / n for n in test_names if (req.root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise not_found(req, folder_expected(req.root))
    try:
        classes, class_to_idx = find_classes(train_dir)
    except FileNotFoundError:
        raise _bad_layout(req, f"no class folders in {train_dir}") from None
    if len(classes) < 2:
        raise _bad_layout(req, f"{train_dir} has {len(classes)} class folder; a classifier needs at least 2")
    try:
        train = make_dataset(train_dir, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError:
        raise _bad_layout(req, f"some class folders in {train_dir} hold no images") from None
    unknown = sorted(_subdirs(test_dir) - set(classes))
    if unknown:
        raise _bad_layout(req, f"{test_dir} has class folders not in train/: {', '.join(unknown[:5])}")
    # A test set may legitimately lack some classes, so empty ones are allowed there.
    test = make_dataset(test_dir, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not test:
        raise _bad_layout(req, f"no images in class folders under {test_dir}")
    return train, test, len(classes)


def from_samples(req: SourceRequest, pool: Samples, test: Samples, num_classes: int) -> SourceData:
    """SourceData for (path, label) lists: decoded into memory when small, file-backed with crops otherwise."""
    small = req.image_size <= IN_MEMORY_MAX_SIZE
    evaluate = eval_transform(req.image_size)
    return SourceData(
        pool=FileImageDataset(pool, evaluate if small else train_transform(req.image_size)),
        test=FileImageDataset(test, evaluate),
        num_classes=num_classes, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        eval_transform=None if small else evaluate,
        decode_size=req.image_size if small else None,
    )


def materialize(dataset: FileImageDataset, size: int) -> TensorImageDataset:
    """Decode every file (squashed to size x size) into an in-memory TensorImageDataset."""
    images = decode_to_tensor([path for path, _ in dataset.samples], size)
    return TensorImageDataset(images, dataset.labels)


def build_imagefolder(req: SourceRequest) -> SourceData:
    """Generic ImageFolder set: train/ plus test/ (or val/ when test/ is absent)."""
    return from_samples(req, *scan_folders(req))


def build_imagenet(req: SourceRequest) -> SourceData:
    """ImageNet in ImageFolder layout: train/ plus val/ (used as the test set)."""
    # ImageNet's test/ is unlabelled, so val/ wins when both exist.
    return from_samples(req, *scan_folders(req, ("val", "test")))

