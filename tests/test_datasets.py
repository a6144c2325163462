"""Behaviour of dataset building: splits, caps, the built-in sets, ImageFolder layouts and error messages."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DATASETS, FileImageDataset, TensorImageDataset, build_splits, split_train_val
from utils.errors import ConfigError, DatasetNotFoundError, UserError

REAL_SUBSET = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset"

# Class folder -> solid colour, so labels can be checked from pixels after loading.
COLOURS = {"b_red": (220, 20, 20), "a_green": (20, 220, 20), "c_blue": (20, 20, 220)}


def make_folder(root: Path, splits: tuple[str, ...] = ("train", "test"), per_class: int = 4, size: int = 40) -> Path:
    """Write a tiny ImageFolder tree of solid-colour PNGs."""
    for split in splits:
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size + i), colour).save(folder / f"{i}.png")
    return root


def build(name: str, root: object = None, **kw: object):
    """build_splits with test-friendly defaults."""
    args = {"image_size": 16, "val_ratio": 0.1, "seed": 0} | kw
    return build_splits(name, root, **args)


def test_split_train_val_disjoint_sorted_deterministic() -> None:
    train, val = split_train_val(100, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(val, val.sort().values) and torch.equal(train, train.sort().values)
    again_train, again_val = split_train_val(100, 0.1, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_train_val(100, 0.1, seed=4)[1])
    assert len(split_train_val(10, 0.001, seed=0)[1]) == 1


def test_fake_shapes_dtype_classes_and_determinism() -> None:
    s = build("fake", num_classes=4)
    assert s.in_memory and isinstance(s.train, TensorImageDataset)
    assert (s.num_classes, s.channels, s.image_size) == (4, 3, 16)
    assert len(s.train) + len(s.val) == 256 and len(s.val) == 26 and len(s.test) == 64
    x, y = s.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and isinstance(y, int)
    assert set(s.test.labels.tolist()) == {0, 1, 2, 3}
    assert s.mean == (0.5,) * 3 and s.std == (0.25,) * 3
    other = build("fake", num_classes=4, seed=1)
    assert torch.equal(s.test.images, other.test.images)
    assert not torch.equal(s.val.labels, other.val.labels) or not torch.equal(s.val.images, other.val.images)
    assert torch.equal(s.train.images, build("fake", num_classes=4).train.images)


def test_fake_is_learnable_by_nearest_class_mean() -> None:
    s = build("fake")
    feats = s.train.images.float().flatten(1)
    centres = torch.stack([feats[s.train.labels == k].mean(0) for k in range(10)])
    pred = torch.cdist(s.test.images.float().flatten(1), centres).argmin(1)
    assert (pred == s.test.labels).float().mean() > 0.9


def test_val_in_train_keeps_all_training_images() -> None:
    quirk = build("fake", val_in_train=True)
    assert len(quirk.train) == 256 and len(quirk.val) == 26
    normal = build("fake")
    assert torch.equal(quirk.val.images, normal.val.images)
    train_rows = {bytes(img.flatten().tolist()) for img in quirk.train.images}
    assert all(bytes(img.flatten().tolist()) in train_rows for img in quirk.val.images)


def test_caps_limit_pool_and_test() -> None:
    s = build("fake", max_train=50, max_test=20)
    assert len(s.train) + len(s.val) == 50 and len(s.val) == 5 and len(s.test) == 20
    # The test cap ignores the run seed so every run is scored on the same images.
    assert torch.equal(s.test.images, build("fake", max_train=50, max_test=20, seed=9).test.images)


def test_mean_std_override_and_validation() -> None:
    s = build("fake", mean=(0.1, 0.2, 0.3), std=[1, 1, 1])
    assert s.mean == (0.1, 0.2, 0.3) and s.std == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError):
        build("fake", mean=(0.5,))
    with pytest.raises(ConfigError):
        build("fake", std=(0.0, 1.0, 1.0))


def test_num_classes_mismatch_is_config_error() -> None:
    with pytest.raises(ConfigError, match="10 classes"):
        build("digits", num_classes=5)


def test_digits_real_images_fixed_test_split() -> None:
    s = build("digits", image_size=12, seed=0)
    assert s.channels == 1 and s.num_classes == 10 and s.in_memory
    assert s.train.images.shape[1:] == (1, 12, 12) and s.train.images.dtype == torch.uint8
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert len(s.test) == 359 and int(s.train.images.max()) > 200
    assert len(s.mean) == 1 and 0 < s.mean[0] < 1 and 0 < s.std[0] < 1
    other = build("digits", image_size=12, seed=7)
    assert torch.equal(s.test.images, other.test.images) and torch.equal(s.test.labels, other.test.labels)
    assert not torch.equal(s.val.labels, other.val.labels)


def _assert_colour_labels(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Label k must be the k-th class folder in sorted order, identified by its colour."""
    order = sorted(COLOURS)
    for img, label in zip(images, labels.tolist()):
        expected = torch.tensor(COLOURS[order[label]], dtype=torch.float32)
        assert torch.allclose(img.float().mean((1, 2)), expected, atol=2)


def test_imagefolder_in_memory_small(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ("train", "test"), per_class=4)
    s = build("imagefolder", root, image_size=16, val_ratio=0.25)
    assert s.in_memory and isinstance(s.test, TensorImageDataset)
    assert s.num_classes == 3 and len(s.train) == 9 and len(s.val) == 3 and len(s.test) == 12
    assert s.train.images.shape[1:] == (3, 16, 16) and s.train.images.dtype == torch.uint8
    for part in (s.train, s.val, s.test):
        _assert_colour_labels(part.images, part.labels)


def test_imagefolder_uses_val_when_test_absent(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ("train",), per_class=3)
    make_folder(tmp_path / "x", ("val",), per_class=2)
    (tmp_path / "x" / "val").rename(root / "val")
    s = build("sport8", root, image_size=8, val_ratio=0.2)
    assert len(s.test) == 6
    assert len(build("mit67", root, image_size=8, val_ratio=0.2).test) == 6


def test_imagenet_prefers_val_over_test(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ("train", "val"), per_class=2)
    (root / "test" / "a_green").mkdir(parents=True)
    Image.new("RGB", (8, 8), COLOURS["a_green"]).save(root / "test" / "a_green" / "0.png")
    assert len(build("imagenet", root, image_size=8).test) == 6
    assert len(build("imagefolder", root, image_size=8).test) == 1


def test_imagefolder_file_based_large(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ("train", "val"), per_class=4)
    s = build("imagefolder", root, image_size=96, val_ratio=0.25)
    assert not s.in_memory
    assert all(isinstance(d, FileImageDataset) for d in (s.train, s.val, s.test))
    assert len(s.train) == 9 and len(s.val) == 3 and len(s.test) == 12
    x, y = s.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 96, 96)
    # Val is carved from train/ but uses the deterministic eval transform.
    assert s.val.transform is not s.train.transform and torch.equal(s.val[0][0], s.val[0][0])
    stacked = torch.stack([s.test[i][0] for i in range(len(s.test))])
    _assert_colour_labels(stacked, s.test.labels)


def test_bad_layout_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        build("imagefolder", tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder", "sport8", "svhn", "flowers102", "imagenet"])
def test_missing_data_is_one_line_error_with_path(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        build(name, missing)
    message = str(err.value)
    assert "\n" not in message and str(missing) in message and name in message
    if name == "cifar10":
        assert "cifar-10-batches-py" in message and '"download": true' in message
    if name in ("imagefolder", "sport8"):
        assert "train/<class>/<image>" in message


def test_cifar10_folder_present_but_files_missing(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        build("cifar10", tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError) as err:
        build("cifar11", "/tmp")
    assert all(name in str(err.value) for name in DATASETS)


def test_real_cifar10_subset_in_memory() -> None:
    if not (REAL_SUBSET / "train").is_dir():
        pytest.skip(f"{REAL_SUBSET} not present")
    s = build("imagefolder", REAL_SUBSET, image_size=32, val_ratio=0.1, max_train=1000)
    assert s.num_classes == 10 and len(s.test) == 1000 and s.in_memory
    assert len(s.train) == 900 and len(s.val) == 100
    x, _ = s.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert np.bincount(s.test.labels.numpy()).tolist() == [100] * 10
    assert s.train.images.float().std() > 20


def test_flowers102_imagefolder_layout(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ("train", "test"), per_class=2)
    s = build("flowers102", root, image_size=8, val_ratio=0.2)
    assert s.num_classes == 3 and len(s.test) == 6 and s.in_memory


def test_flowers102_torchvision_layout_pools_train_and_val(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flowers-102").mkdir()
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png)
    sizes = {"train": 5, "val": 3, "test": 4}

    class FakeFlowers:
        """Stands in for torchvision's Flowers102, whose real files are md5-checked."""

        def __init__(self, root: str, split: str, download: bool) -> None:
            self._image_files = [png] * sizes[split]
            self._labels = list(range(sizes[split]))

    monkeypatch.setattr("datasets.flowers.tvd.Flowers102", FakeFlowers)
    s = build("flowers102", tmp_path, image_size=8, val_ratio=0.25)
    assert s.num_classes == 102 and len(s.train) + len(s.val) == 8 and len(s.test) == 4
