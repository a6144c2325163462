"""Oxford Flowers-102: the original DHA ImageFolder layout if present, else torchvision's Flowers102 files."""

from torchvision import datasets as tvd

from datasets.folders import from_samples, scan_folders
from datasets.source import SourceData, SourceRequest, not_found
from datasets.torchvision_sets import load_torchvision


def build_flowers102(req: SourceRequest) -> SourceData:
    """Flowers-102: ImageFolder when <root>/train/ exists, else torchvision train+val as pool and test as test."""
    if (req.root / "train").is_dir():
        return from_samples(req, *scan_folders(req))
    base = req.root / "flowers-102"
    expected = (f"{req.root}/train/<class>/<image> with {req.root}/val/ or {req.root}/test/, "
                f"or {base}/ (torchvision's Flowers102 layout)")
    if not req.download and not base.is_dir():
        raise not_found(req, expected, downloadable=True)
    splits = {
        split: load_torchvision(
            req, expected, lambda s=split: tvd.Flowers102(str(req.root), split=s, download=req.download)
        )
        for split in ("train", "val", "test")
    }
    # torchvision exposes no public list of files; these attributes are stable since torchvision 0.12.
    samples = {s: [(str(f), int(y)) for f, y in zip(d._image_files, d._labels)] for s, d in splits.items()}
    return from_samples(req, samples["train"] + samples["val"], samples["test"], 102)
