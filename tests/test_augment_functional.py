"""Semantics of the pure batched ops in augment/functional.py, with PIL as the oracle where it defines the op."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from augment import functional as AF


def _uint8_batch(b: int = 4, c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images as floats in [0, 1] (what the loader hands to the ops)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g).float() / 255.0


def _pil(img: torch.Tensor) -> Image.Image:
    """[3, H, W] float in [0, 1] on the 8-bit grid -> RGB PIL image."""
    return Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy())


def _from_pil(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float in [0, 1]."""
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def _pil_batch(x: torch.Tensor, op) -> torch.Tensor:
    """Apply a PIL op image by image."""
    return torch.stack([_from_pil(op(_pil(img), i)) for i, img in enumerate(x)])


# ---------------------------------------------------------------- geometric


def test_rotate_90_degrees_is_rot90_counter_clockwise():
    x = torch.rand(2, 3, 6, 6)
    assert torch.allclose(AF.rotate(x, 90.0), x.rot90(1, (2, 3)), atol=1e-5)
    assert torch.allclose(AF.rotate(x, torch.tensor([-90.0, 90.0])),
                          torch.stack([x[0].rot90(-1, (1, 2)), x[1].rot90(1, (1, 2))]), atol=1e-5)


def test_rotate_90_degrees_on_a_non_square_image_turns_pixels_about_the_centre():
    # Output pixel (dx, dy) from the centre reads input (-dy, dx) at 90 degrees (y points down).
    x = torch.rand(1, 1, 5, 9)
    out = AF.rotate(x, 90.0)
    checked = 0
    for r in range(5):
        for c in range(9):
            dx, dy = c - 4, r - 2
            sr, sc = 2 + dx, 4 - dy
            if 0 <= sr < 5 and 0 <= sc < 9:
                assert torch.allclose(out[0, 0, r, c], x[0, 0, sr, sc], atol=1e-5)
                checked += 1
    assert checked == 25


def test_translate_moves_content_right_and_down_by_a_fraction_of_the_size():
    x = torch.rand(1, 3, 8, 8)
    right = AF.translate_x(x, 0.25)  # 2 pixels
    assert torch.allclose(right[..., 2:], x[..., :-2], atol=1e-6)
    assert right[..., :2].abs().max() == 0  # zero padding
    down = AF.translate_y(x, -0.25)  # 2 pixels up
    assert torch.allclose(down[..., :-2, :], x[..., 2:, :], atol=1e-6)


def test_geometric_fill_colour_pads_uncovered_pixels():
    x = torch.rand(2, 3, 8, 8)
    fill = torch.tensor([0.1, 0.5, 0.9])
    out = AF.translate_x(x, 0.5, fill=fill)
    assert torch.allclose(out[..., :4], fill.view(1, 3, 1, 1).expand(2, 3, 8, 4), atol=1e-6)
    assert torch.allclose(out[..., 4:], x[..., :4], atol=1e-6)


def test_shear_x_follows_pil_matrix_about_the_centre():
    # Output (x, y) reads input (x + s * y) with y measured from the centre row: shear 1 on 5 rows shifts
    # row r by r - 2 pixels to the left.
    x = torch.rand(1, 1, 5, 9)
    out = AF.shear_x(x, 1.0)
    for r in range(5):
        d = r - 2
        expected = torch.zeros(9)
        src = torch.arange(9) + d
        ok = (src >= 0) & (src < 9)
        expected[ok] = x[0, 0, r, src[ok]]
        assert torch.allclose(out[0, 0, r], expected, atol=1e-5)
    out_y = AF.shear_y(x.transpose(2, 3), 1.0)  # the same relation with rows and columns swapped
    assert torch.allclose(out_y, out.transpose(2, 3), atol=1e-5)


def test_identity_matrix_returns_x_exactly_for_any_size():
    for h, w in [(5, 7), (31, 31), (224, 224)]:
        x = torch.rand(2, 3, h, w)
        assert torch.equal(AF.affine(x, AF.identity_matrix(2)), x)
        assert torch.equal(AF.rotate(x, 0.0), x)


def test_hflip_blend():
    x = torch.rand(3, 3, 4, 5)
    assert torch.allclose(AF.hflip(x, 1.0), x.flip(3), atol=1e-6)
    assert torch.equal(AF.hflip(x, 0.0), x)
    assert torch.allclose(AF.hflip(x, 0.25), 0.25 * x.flip(3) + 0.75 * x, atol=1e-6)


# ---------------------------------------------------------------- colour


def test_brightness_factor_semantics():
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(AF.brightness(x, 0.5), 0.5 * x)
    assert AF.brightness(x, 0.0).abs().max() == 0
    assert torch.equal(AF.brightness(x, 1.0), x)
    assert torch.allclose(AF.brightness(x, 1.5), (1.5 * x).clamp(max=1.0))


def test_invert_blend():
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(AF.invert(x, 1.0), 1 - x, atol=1e-6)
    assert torch.allclose(AF.invert(x, 0.5), torch.full_like(x, 0.5), atol=1e-6)


def test_solarize_thresholds_match_pil():
    x = _uint8_batch()
    for level in (0, 1, 77, 128, 255, 256):
        expected = _pil_batch(x, lambda img, i: ImageOps.solarize(img, level))
        assert torch.allclose(AF.solarize(x, level / 256), expected, atol=1e-6), level
    assert torch.allclose(AF.solarize(x, 0.0), 1 - x, atol=1e-6)  # threshold 0 inverts everything
    assert torch.equal(AF.solarize(x, 1.0), x)


def test_posterize_matches_pil_and_one_bit_leaves_two_levels():
    x = _uint8_batch()
    for bits in range(1, 9):
        expected = _pil_batch(x, lambda img, i: ImageOps.posterize(img, bits))
        assert torch.allclose(AF.posterize(x, float(bits)), expected, atol=1e-6), bits
    levels = (AF.posterize(x, 1.0) * 255).round().unique()
    assert set(levels.tolist()) <= {0.0, 128.0}


def test_posterize_eight_bits_is_exact_identity_on_any_float_image():
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(AF.posterize(x, 8.0), x)


def test_equalize_matches_pil_per_image_and_channel():
    x = _uint8_batch(b=3, h=16, w=16)
    x[1, 2] = x[1, 2] * 0.3  # a low-contrast channel
    x[2, 0] = 0.5  # a flat channel: PIL leaves it unchanged
    x = (x * 255).round() / 255
    expected = _pil_batch(x, lambda img, i: ImageOps.equalize(img))
    assert torch.allclose(AF.equalize(x, 1.0), expected, atol=1e-6)


def test_equalize_of_a_uniform_ramp_is_unchanged():
    ramp = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16) / 255.0
    x = torch.cat([ramp, ramp.flip(3), ramp.transpose(2, 3)], 1)
    assert torch.allclose(AF.equalize(x, 1.0), x, atol=1e-6)


def test_auto_contrast_matches_pil_and_stretches_to_full_range():
    x = _uint8_batch() * 0.5 + 0.2
    x = (x * 255).round() / 255
    ac = AF.auto_contrast(x, 1.0)
    assert torch.allclose(ac.amin((2, 3)), torch.zeros(4, 3)) and torch.allclose(ac.amax((2, 3)), torch.ones(4, 3))
    expected = _pil_batch(x, lambda img, i: ImageOps.autocontrast(img))
    assert (ac - expected).abs().max() <= 1.01 / 255  # PIL truncates its lookup table to integers
    flat = torch.full((1, 3, 4, 4), 0.3)
    assert torch.equal(AF.auto_contrast(flat, 1.0), flat)


@pytest.mark.parametrize("op,enhancer", [
    (AF.color, ImageEnhance.Color), (AF.contrast, ImageEnhance.Contrast),
    (AF.brightness, ImageEnhance.Brightness), (AF.sharpness, ImageEnhance.Sharpness),
])
def test_enhance_ops_match_pil_up_to_8_bit_rounding(op, enhancer):
    x = _uint8_batch()
    for factor in (0.1, 0.5, 1.0, 1.9):
        expected = _pil_batch(x, lambda img, i: enhancer(img).enhance(factor))
        # PIL rounds intermediate 8-bit images (the contrast mean, the smoothed image): a few levels.
        assert (op(x, factor) - expected).abs().max() <= 3 / 255, factor


def test_sharpness_keeps_the_border_and_small_images():
    x = torch.rand(2, 3, 6, 7)
    out = AF.sharpness(x, 0.0)  # the smoothed image itself
    assert torch.equal(out[..., 0, :], x[..., 0, :]) and torch.equal(out[..., :, -1], x[..., :, -1])
    tiny = torch.rand(1, 3, 2, 2)
    assert torch.equal(AF.sharpness(tiny, 0.0), tiny)


def test_color_on_single_channel_images_is_identity():
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(AF.color(x, 0.1), x)


def test_sample_pairing_blends_with_the_previous_sample():
    x = torch.rand(3, 3, 4, 4)
    out = AF.sample_pairing(x, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out[1], x[0], atol=1e-6)
    assert torch.allclose(out[2], 0.5 * (x[2] + x[1]), atol=1e-6)


def test_straight_through_forward_is_hard_and_backward_is_the_blend():
    x = torch.rand(2, 3, 4, 4)
    m = torch.tensor([0.3, 0.8], requires_grad=True)
    hard = AF.solarize(x, 1 - m.detach())
    y = AF.straight_through(hard, x, m, 1 - x)
    assert torch.equal(y, hard)
    y.sum().backward()
    assert torch.allclose(m.grad, (1 - 2 * x).sum((1, 2, 3)), atol=1e-4)


def test_equalize_and_posterize_pass_the_gradient_to_x_straight_through():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    (AF.equalize(x, 1.0).sum() + AF.posterize(x, 3.0).sum()).backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))
