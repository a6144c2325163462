"""BatchLoader / InfiniteBatches: deterministic per (seed, epoch) order, coverage, drop_last, exact resume."""

from pathlib import Path

import torch
from PIL import Image

from datasets import BatchLoader, FileImageDataset, InfiniteBatches, TensorImageDataset
from datasets.transforms import train_transform


def tensor_ds(n: int = 50) -> TensorImageDataset:
    """Images whose first pixel encodes the item index, so batches reveal the order."""
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return TensorImageDataset(images, torch.arange(n) % 3)


def ids(batches: list) -> list[int]:
    """Item indices visited, in order."""
    return [int(v) for x, _ in batches for v in x[:, 0, 0, 0]]


def epoch(loader: BatchLoader, e: int) -> list:
    """All batches of epoch e."""
    loader.set_epoch(e)
    return list(loader)


def test_order_is_function_of_seed_and_epoch() -> None:
    a = BatchLoader(tensor_ds(), 8, shuffle=True, drop_last=False, seed=1)
    b = BatchLoader(tensor_ds(), 8, shuffle=True, drop_last=False, seed=1)
    assert ids(epoch(a, 3)) == ids(epoch(b, 3))
    assert ids(epoch(a, 3)) != ids(epoch(a, 4))
    assert ids(epoch(a, 3)) != ids(epoch(BatchLoader(tensor_ds(), 8, shuffle=True, drop_last=False, seed=2), 3))


def test_every_item_once_and_drop_last() -> None:
    full = BatchLoader(tensor_ds(50), 8, shuffle=True, drop_last=False, seed=0)
    batches = epoch(full, 0)
    assert len(full) == len(batches) == 7 and sorted(ids(batches)) == list(range(50))
    x, y = batches[0]
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 2, 2) and y.dtype == torch.int64
    dropped = BatchLoader(tensor_ds(50), 8, shuffle=True, drop_last=True, seed=0)
    batches = epoch(dropped, 0)
    assert len(dropped) == len(batches) == 6 and all(len(y) == 8 for _, y in batches)
    assert len(set(ids(batches))) == 48
    ordered = BatchLoader(tensor_ds(10), 4, shuffle=False, drop_last=False, seed=0)
    assert ids(list(ordered)) == list(range(10))


def test_infinite_batches_resume_and_reset() -> None:
    loader = BatchLoader(tensor_ds(20), 6, shuffle=True, drop_last=True, seed=5)
    stream = InfiniteBatches(loader)
    for _ in range(7):  # crosses two pass boundaries (3 batches per pass)
        next(stream)
    state = stream.state_dict()
    expected = ids([next(stream) for _ in range(5)])
    resumed = InfiniteBatches(BatchLoader(tensor_ds(20), 6, shuffle=True, drop_last=True, seed=5))
    resumed.load_state_dict(state)
    assert ids([next(resumed) for _ in range(5)]) == expected

    stream.reset(4)
    first = ids([next(stream) for _ in range(3)])
    assert first == ids(epoch(BatchLoader(tensor_ds(20), 6, shuffle=True, drop_last=True, seed=5), 4))
    second_pass = ids([next(stream) for _ in range(3)])
    assert second_pass != first
    stream.reset(4)
    assert ids([next(stream) for _ in range(6)]) == first + second_pass


def file_ds(root: Path, n: int = 12) -> FileImageDataset:
    """A FileImageDataset of distinct gradient PNGs with the random train transform."""
    samples = []
    for i in range(n):
        arr = (torch.arange(40 * 40 * 3).view(40, 40, 3) * (i + 1) % 256).to(torch.uint8).numpy()
        path = root / f"{i}.png"
        Image.fromarray(arr).save(path)
        samples.append((str(path), i % 2))
    return FileImageDataset(samples, train_transform(24))


def test_file_loader_same_epoch_same_crops_and_exact_resume(tmp_path: Path) -> None:
    ds = file_ds(tmp_path)
    loader = BatchLoader(ds, 4, shuffle=True, drop_last=False, seed=0)
    one, two = epoch(loader, 2), epoch(loader, 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    assert one[0][0].shape == (4, 3, 24, 24) and one[0][0].dtype == torch.uint8
    other = epoch(loader, 3)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, other))
    # Mid-epoch resume: batches from position 1 equal the uninterrupted run's batches 1..
    loader.set_epoch(2)
    tail = list(loader.iterate(1))
    assert len(tail) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(tail, one[1:]))


def test_file_loader_workers_match_single_process(tmp_path: Path) -> None:
    ds = file_ds(tmp_path, n=8)
    main = epoch(BatchLoader(ds, 4, shuffle=True, drop_last=False, seed=0), 1)
    pooled = epoch(BatchLoader(ds, 4, shuffle=True, drop_last=False, seed=0, workers=2), 1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, pooled))
