"""Pure batched image ops: x [B, C, H, W] float in [0, 1] plus a per-sample argument [B] -> same shape in [0, 1].

Arguments are physical (degrees, shear, fraction of the size, enhance factor, bits, threshold, blend
weight); `augment/ops.py` maps normalised magnitudes onto them. Nothing here draws random numbers.

* Geometric ops share one path, `affine`: per-sample 2x3 matrices in `F.affine_grid`'s normalised
  coordinates (output -> input), bilinear `grid_sample`, padding with zeros or a `fill` colour. The
  matrix builders (`rotate_matrix`, ...) let a caller fuse several geometric ops into one sampling pass.
* Colour ops follow PIL's ImageEnhance/ImageOps definitions, written as `x + w * (other - x)` so that
  the neutral argument returns x bit for bit.
* Ops whose output is piecewise constant in x (posterize, the equalize lookup) pass the gradient to x
  straight through; `straight_through` gives ops that are piecewise constant in their argument
  (posterize bits, solarize threshold) a gradient in the magnitude.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma, the weights of PIL's convert("L").
_LUMA = (0.299, 0.587, 0.114)


def _per_sample(arg: Tensor | float, x: Tensor) -> Tensor:
    """An argument [B] (or a scalar) in x's dtype and device, shaped [B, 1, 1, 1] to broadcast over images."""
    return torch.as_tensor(arg, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def as_batch(arg: Tensor | float, x: Tensor) -> Tensor:
    """An argument [B] (or a scalar) in x's dtype and device, shaped [B] (scalars broadcast to the batch)."""
    return torch.as_tensor(arg, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])


def _blend(x: Tensor, other: Tensor, weight: Tensor) -> Tensor:
    """x + weight * (other - x), clamped (PIL's Image.blend(x, other, weight)); weight 0 returns x exactly."""
    # torch.lerp is one kernel, and exact at both ends: start at weight 0, end at weight 1.
    return torch.lerp(x, other.expand_as(x), weight).clamp(0.0, 1.0)


def straight_through(hard: Tensor, x: Tensor, m: Tensor, full: Tensor) -> Tensor:
    """Forward `hard`; gradient in m as for the blend x + m * (full - x) between identity and full strength."""
    m = _per_sample(m, x)
    # m - m.detach() is exactly 0 forward, so the value is `hard` bit for bit.
    return hard + (m - m.detach()) * (full - x).detach()


# --------------------------------------------------------------------------------------------------
# geometric


def _theta(a11: Tensor, a12: Tensor, a13: Tensor, a21: Tensor, a22: Tensor, a23: Tensor) -> Tensor:
    """Per-sample [B, 2, 3] matrix from six [B] tensors."""
    return torch.stack((torch.stack((a11, a12, a13), -1), torch.stack((a21, a22, a23), -1)), -2)


def identity_matrix(batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                    ) -> Tensor:
    """[B, 2, 3] identity matrices in affine_grid's convention."""
    return torch.eye(2, 3, dtype=dtype, device=device).expand(batch, 2, 3)


def rotate_matrix(degrees: Tensor, height: int, width: int) -> Tensor:
    """Matrices rotating the content counter-clockwise by `degrees` [B] about the image centre."""
    rad = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(rad)
    # In pixel units the output -> input map is [[c, -s], [s, c]] (y points down); affine_grid's
    # normalised coordinates scale x by width/2 and y by height/2, hence the aspect factors.
    return _theta(cos, -sin * (height / width), zero, sin * (width / height), cos, zero)


def shear_x_matrix(shear: Tensor, height: int, width: int) -> Tensor:
    """Matrices for PIL's ShearX about the centre: output (x, y) reads input (x + shear * y, y)."""
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _theta(one, shear * (height / width), zero, zero, one, zero)


def shear_y_matrix(shear: Tensor, height: int, width: int) -> Tensor:
    """Matrices for PIL's ShearY about the centre: output (x, y) reads input (x, y + shear * x)."""
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _theta(one, zero, zero, shear * (width / height), one, zero)


def translate_x_matrix(fraction: Tensor, height: int, width: int) -> Tensor:
    """Matrices moving the content right by `fraction` [B] of the width (negative: left)."""
    one, zero = torch.ones_like(fraction), torch.zeros_like(fraction)
    # The normalised width is 2, so a fraction f of it is 2 f; the input is read at x - shift.
    return _theta(one, zero, -2.0 * fraction, zero, one, zero)


def translate_y_matrix(fraction: Tensor, height: int, width: int) -> Tensor:
    """Matrices moving the content down by `fraction` [B] of the height (negative: up)."""
    one, zero = torch.ones_like(fraction), torch.zeros_like(fraction)
    return _theta(one, zero, zero, zero, one, -2.0 * fraction)


def _affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """F.affine_grid(theta, ..., align_corners=False) by broadcasting: its batched matmul is slow on CPU."""
    # Pixel centres in normalised coordinates, (2 i + 1) / size - 1, as affine_grid computes them.
    u = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1
    v = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    t = theta.unsqueeze(-1).unsqueeze(-1)  # [B, 2, 3, 1, 1]
    rows = t[:, :, 1] * v.view(-1, 1) + t[:, :, 2]  # [B, 2, H, 1]: the part that depends on y only
    grid = t[:, :, 0] * u + rows  # [B, 2, H, W]
    return grid.permute(0, 2, 3, 1)


def affine(x: Tensor, theta: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """Bilinear resampling of each sample by its [2, 3] output->input matrix; outside pixels get `fill`."""
    theta = theta.to(x.dtype)
    grid = _affine_grid(theta, x.shape[2], x.shape[3])
    if isinstance(fill, (int, float)) and fill == 0:
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        # Zero padding of (x - fill) plus fill interpolates towards `fill` outside, for any colour.
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        out = F.grid_sample(x - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill_t
    # The normalised grid is rounded unless the size is a power of two, so the identity matrix would
    # give x only up to ~1e-5 (224 px); return x itself there and keep the sampling gradient
    # (out - out.detach() is exactly 0 forward).
    eye = (theta == identity_matrix(1, x.dtype, x.device)).flatten(1).all(1).view(-1, 1, 1, 1)
    out = torch.where(eye, x.detach() + (out - out.detach()) if out.requires_grad else x, out)
    return out.clamp(0.0, 1.0)


def rotate(x: Tensor, degrees: Tensor | float, fill: Tensor | float = 0.0) -> Tensor:
    """Rotate each sample counter-clockwise by `degrees` [B] about its centre."""
    return affine(x, rotate_matrix(as_batch(degrees, x), x.shape[2], x.shape[3]), fill)


def shear_x(x: Tensor, shear: Tensor | float, fill: Tensor | float = 0.0) -> Tensor:
    """Horizontal shear about the centre by `shear` [B] (PIL's ShearX matrix (1, s, 0, 0, 1, 0))."""
    return affine(x, shear_x_matrix(as_batch(shear, x), x.shape[2], x.shape[3]), fill)


def shear_y(x: Tensor, shear: Tensor | float, fill: Tensor | float = 0.0) -> Tensor:
    """Vertical shear about the centre by `shear` [B] (PIL's ShearY matrix (1, 0, 0, s, 1, 0))."""
    return affine(x, shear_y_matrix(as_batch(shear, x), x.shape[2], x.shape[3]), fill)


def translate_x(x: Tensor, fraction: Tensor | float, fill: Tensor | float = 0.0) -> Tensor:
    """Shift the content right by `fraction` [B] of the width."""
    return affine(x, translate_x_matrix(as_batch(fraction, x), x.shape[2], x.shape[3]), fill)


def translate_y(x: Tensor, fraction: Tensor | float, fill: Tensor | float = 0.0) -> Tensor:
    """Shift the content down by `fraction` [B] of the height."""
    return affine(x, translate_y_matrix(as_batch(fraction, x), x.shape[2], x.shape[3]), fill)


def hflip(x: Tensor, weight: Tensor | float) -> Tensor:
    """weight * mirrored + (1 - weight) * x: a flip that is differentiable in its weight [B]."""
    return _blend(x, x.flip(3), _per_sample(weight, x))


# --------------------------------------------------------------------------------------------------
# colour


def grayscale(x: Tensor) -> Tensor:
    """[B, 1, H, W] luma (PIL's convert("L") weights for RGB; the channel mean otherwise)."""
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL Brightness: blend with black, x * factor [B] (1 = identity, 0 = black)."""
    return (x * _per_sample(factor, x)).clamp(0.0, 1.0)


def color(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL Color (saturation): blend with the grayscale image (1 = identity, 0 = gray)."""
    return _blend(x, grayscale(x), 1.0 - _per_sample(factor, x))


def contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL Contrast: blend with each image's mean gray level (1 = identity, 0 = flat gray)."""
    # PIL rounds the mean to an 8-bit level; the float mean keeps the op differentiable in x.
    return _blend(x, grayscale(x).mean((2, 3), keepdim=True), 1.0 - _per_sample(factor, x))


def smooth(x: Tensor) -> Tensor:
    """PIL's SMOOTH filter (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13) with the 1-pixel border kept from x."""
    b, c, h, w = x.shape
    if h < 3 or w < 3:
        return x
    # The kernel is a 3x3 box plus 4 x the centre: two separable box passes over slices beat a
    # depthwise conv2d on small images on CPU.
    cols = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    box = cols[..., :-2, :] + cols[..., 1:-1, :] + cols[..., 2:, :]
    inner = (box + 4.0 * x[..., 1:-1, 1:-1]) / 13.0
    border = torch.ones(h, w, dtype=torch.bool, device=x.device)
    border[1:-1, 1:-1] = False
    return torch.where(border, x, F.pad(inner, (1, 1, 1, 1)))


def sharpness(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL Sharpness: blend with the smoothed image (1 = identity, 0 = smoothed, 2 = sharpened)."""
    return _blend(x, smooth(x), 1.0 - _per_sample(factor, x))


def invert(x: Tensor, weight: Tensor | float) -> Tensor:
    """weight * (1 - x) + (1 - weight) * x: inversion that is differentiable in its weight [B]."""
    return _blend(x, 1.0 - x, _per_sample(weight, x))


def auto_contrast(x: Tensor, weight: Tensor | float) -> Tensor:
    """PIL AutoContrast (each image and channel rescaled min..max -> 0..1), blended in by weight [B]."""
    lo = x.amin((2, 3), keepdim=True)
    span = x.amax((2, 3), keepdim=True) - lo
    flat = span <= 0
    # A flat channel stays as it is (PIL); dividing by 1 there keeps the unused branch and its gradient finite.
    stretched = torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(span), span))
    return _blend(x, stretched, _per_sample(weight, x))


def _to_levels(x: Tensor) -> Tensor:
    """8-bit levels of x as float: round(255 x) clipped to 0..255 (exact for images decoded from uint8)."""
    return (x * 255.0).round().clamp(0.0, 255.0)


def equalize_levels(x: Tensor) -> Tensor:
    """PIL ImageOps.equalize per image and channel on 256 bins; no gradient (piecewise constant in x)."""
    b, c, h, w = x.shape
    levels = _to_levels(x.detach()).long().flatten(2)  # [B, C, HW]
    # All histograms in one scatter_add (each image and channel has its own row of 256 bins); on CPU it
    # is also several times faster than one bincount over offset levels.
    hist = torch.zeros(b, c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(2, levels, torch.ones(1, dtype=torch.long, device=x.device).expand_as(levels))
    bins = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, bins, 0).amax(2, keepdim=True)  # highest non-empty level
    step = torch.div(h * w - hist.gather(2, last), 255, rounding_mode="floor")  # PIL leaves the last bin out
    before = hist.cumsum(2) - hist  # pixels strictly below each level
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    # Scale the 256-entry tables, not the gathered image.
    out = (lut.clamp(max=255).to(x.dtype) / 255.0).gather(2, levels).view(b, c, h, w)
    # step == 0 (one level, or nearly all pixels in the top one): PIL leaves the channel unchanged.
    return torch.where((step == 0).view(b, c, 1, 1), x.detach(), out)


def equalize(x: Tensor, weight: Tensor | float) -> Tensor:
    """Histogram equalisation blended in by weight [B]; the gradient to x is passed straight through."""
    # Differentiable in the weight (a blend); in x the lookup is piecewise constant, so the backward
    # pass treats equalize(x) as x (straight-through), keeping gradients for ops applied before it.
    return (x + _per_sample(weight, x) * (equalize_levels(x) - x).detach()).clamp(0.0, 1.0)


def solarize(x: Tensor, threshold: Tensor | float) -> Tensor:
    """PIL Solarize: invert 8-bit levels >= 256 * threshold [B] (threshold 1: identity, 0: all inverted)."""
    # The threshold is a fraction of 256 levels as in PIL (0..256), so threshold 1 leaves level 255 alone.
    # round(255 x) >= T is 255 x >= T - 1/2: one pass instead of rounding every pixel.
    inverted = x.detach() * 255.0 >= _per_sample(threshold, x).detach() * 256.0 - 0.5
    return torch.where(inverted, 1.0 - x, x)


def posterize(x: Tensor, bits: Tensor | float) -> Tensor:
    """PIL Posterize: keep the top `bits` [B] (1..8) bits of each 8-bit level; 8 returns x unchanged."""
    bits = _per_sample(bits, x).detach().round().clamp(1.0, 8.0)
    step = torch.pow(2.0, 8.0 - bits)
    hard = torch.floor(_to_levels(x.detach()) / step) * step / 255.0
    hard = torch.where(bits >= 8, x.detach(), hard)
    # Forward: the posterized image; backward: identity in x (x - x.detach() is exactly 0 forward).
    return hard + (x - x.detach()) if x.requires_grad else hard


def sample_pairing(x: Tensor, weight: Tensor | float) -> Tensor:
    """Blend each sample with the previous one in the batch (x.roll(1, 0)) by weight [B]."""
    return _blend(x, x.roll(1, 0), _per_sample(weight, x))


def identity(x: Tensor, m: Tensor | float | None = None) -> Tensor:
    """x unchanged (the magnitude is ignored)."""
    return x
