"""Batch augmentation on the device: random crop, horizontal flip, Cutout."""
import pytest
import torch

from augment.fixed import TrainAugment, cutout, random_crop, random_flip


def _images(b=4, c=3, h=10, w=12, seed=0):
    # strictly positive values, so zero padding is distinguishable from image content
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.1


def _shifted(x, dy, dx):
    """out[i, j] = x[i + dy, j + dx], zero outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def test_random_crop_keeps_shape_and_zero_padding_is_identity():
    x = _images()
    assert random_crop(x, 0) is x
    out = random_crop(x, 3, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_random_crop_is_a_shifted_copy_with_zero_fill(padding):
    x = _images(b=8)
    out = random_crop(x, padding, torch.Generator().manual_seed(padding))
    shifts = set()
    for b in range(x.shape[0]):
        matches = [(dy, dx) for dy in range(-padding, padding + 1) for dx in range(-padding, padding + 1)
                   if torch.equal(out[b], _shifted(x[b], dy, dx))]
        assert len(matches) == 1, f"sample {b} is not a shifted copy"
        shifts.add(matches[0])
    assert len(shifts) > 1   # the shift is drawn per sample


def test_random_crop_covers_all_offsets():
    x = _images(b=64, h=6, w=6)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    seen = set()
    for b in range(x.shape[0]):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if torch.equal(out[b], _shifted(x[b], dy, dx)):
                    seen.add((dy, dx))
    assert len(seen) == 9


def test_random_flip_gives_input_or_mirror_per_sample():
    x = _images(b=16)
    out = random_flip(x, torch.Generator().manual_seed(3))
    flipped = 0
    for b in range(x.shape[0]):
        same, mirror = torch.equal(out[b], x[b]), torch.equal(out[b], x[b].flip(-1))
        assert same != mirror
        flipped += mirror
    assert 0 < flipped < x.shape[0]


@pytest.mark.parametrize("size", [2, 4])
def test_cutout_sets_one_square_to_fill_and_nothing_else(size):
    x = _images(b=16, h=12, w=12)
    fill = torch.tensor([5.0, 6.0, 7.0])
    out = cutout(x, size, fill, torch.Generator().manual_seed(size))
    assert out.shape == x.shape
    full_squares = 0
    for b in range(x.shape[0]):
        changed = (out[b] != x[b])
        # the same pixels change in every channel, and they hold the per-channel fill
        mask = changed[0]
        assert all(torch.equal(changed[c], mask) for c in range(3))
        for c in range(3):
            assert (out[b, c][mask] == fill[c]).all()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert len(ys) > 0   # the centre is inside the image, so some pixels always change
        hgt, wid = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert hgt <= size and wid <= size
        assert int(mask.sum()) == hgt * wid   # a filled rectangle (clipped square)
        full_squares += (hgt == size and wid == size)
    assert full_squares > 0


def test_cutout_size_zero_is_identity():
    x = _images()
    assert cutout(x, 0, torch.zeros(3)) is x


def test_same_generator_seed_same_result():
    x = _images(b=8)
    aug = TrainAugment(crop_padding=2, flip=True, cutout_size=4, mean=(0.1, 0.2, 0.3))
    a = aug(x, torch.Generator().manual_seed(42))
    b = aug(x, torch.Generator().manual_seed(42))
    c = aug(x, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for fn in (lambda g: random_crop(x, 2, g), lambda g: random_flip(x, g),
               lambda g: cutout(x, 3, torch.zeros(3), g)):
        assert torch.equal(fn(torch.Generator().manual_seed(7)), fn(torch.Generator().manual_seed(7)))


def test_train_augment_disabled_parts_are_identity():
    x = _images()
    aug = TrainAugment(crop_padding=0, flip=False, cutout_size=0)
    assert torch.equal(aug(x, torch.Generator().manual_seed(0)), x)
    assert aug.describe() == {"random_crop_padding": 0, "horizontal_flip": False, "cutout": 0}


def test_train_augment_fill_is_the_mean_and_not_saved():
    aug = TrainAugment(cutout_size=4, flip=False, mean=(0.1, 0.2, 0.3))
    assert "fill" not in aug.state_dict()
    x = _images(b=4, h=8, w=8) + 10.0   # far from the fill value
    out = aug(x, torch.Generator().manual_seed(0))
    changed = out != x
    assert changed.any()
    for c, m in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[:, c][changed[:, c]], torch.tensor(m))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_augment_on_cuda():
    aug = TrainAugment(crop_padding=2, flip=True, cutout_size=4).cuda()
    x = _images().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = aug(x, g)
    assert out.device.type == "cuda" and out.shape == x.shape
    g2 = torch.Generator(device="cuda").manual_seed(0)
    assert torch.equal(out, aug(x, g2))
