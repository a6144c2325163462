"""The op table: every augmentation op as (x, m) with a normalised magnitude m, plus DHA's op lists.

Magnitude convention: m = 0 is the identity for every op. Signed ops (geometric ones and the four
enhance ops) take m in [-1, 1], the sign giving the direction; the others take m in [0, 1] (1 = full
strength). The physical range of each op lives here, in one place:

| op | argument at magnitude m |
| --- | --- |
| rotate | 30 m degrees (counter-clockwise for m > 0) |
| shear_x / shear_y | shear 0.3 m |
| translate_x / translate_y | 0.45 m of the width / height |
| brightness / color / contrast / sharpness | enhance factor 1 + 0.9 m (0.1 .. 1.9) |
| posterize | keep 8 - round(7 m) bits (8 .. 1) |
| solarize | threshold 1 - m (fraction of 256 levels; m = 1 inverts every pixel) |
| hflip / invert / auto_contrast / equalize / sample_pairing | blend weight m |

These ranges make DHA's arguments (section 4.1 of the reference) reachable, see `dha_level_to_magnitude`,
and are the ones the joint DARTS + Faster-AA ops use as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from augment import functional as AF

ROTATE_DEGREES = 30.0
SHEAR = 0.3
TRANSLATE = 0.45
ENHANCE = 0.9
MIN_BITS = 1
DHA_MAX_LEVEL = 8.0


@dataclass(frozen=True)
class OpSpec:
    """One augmentation op: (x, m) -> x' with m normalised (m = 0 identity) and how its gradient behaves."""

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]  # (x, m) with m normalised as above (m = 0 identity)
    signed: bool  # m in [-1, 1] (True) or [0, 1]
    differentiable: bool  # True: autograd gradient in m; False: straight-through (see the op's docstring)
    has_identity: bool  # m = 0 gives x back exactly
    # Geometric ops: m [B], height, width -> [B, 2, 3] matrices for `functional.affine`, so that
    # apply_per_sample can resample every geometric sample of a batch in one grid_sample.
    affine: Callable[[Tensor, int, int], Tensor] | None = None
    # The op reads other samples of the batch (sample_pairing): it must see the whole batch.
    mixes_batch: bool = False


# Matrix builders at normalised magnitude: the single place where geometric ranges are applied.
def _rotate_m(m: Tensor, h: int, w: int) -> Tensor:
    return AF.rotate_matrix(ROTATE_DEGREES * m, h, w)


def _shear_x_m(m: Tensor, h: int, w: int) -> Tensor:
    return AF.shear_x_matrix(SHEAR * m, h, w)


def _shear_y_m(m: Tensor, h: int, w: int) -> Tensor:
    return AF.shear_y_matrix(SHEAR * m, h, w)


def _translate_x_m(m: Tensor, h: int, w: int) -> Tensor:
    return AF.translate_x_matrix(TRANSLATE * m, h, w)


def _translate_y_m(m: Tensor, h: int, w: int) -> Tensor:
    return AF.translate_y_matrix(TRANSLATE * m, h, w)


def _geometric(matrix: Callable[[Tensor, int, int], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """(x, m) op resampling x by matrix(m) with zero fill."""
    def op(x: Tensor, m: Tensor) -> Tensor:
        return AF.affine(x, matrix(AF.as_batch(m, x), x.shape[2], x.shape[3]))
    op.__name__ = matrix.__name__.strip("_").removesuffix("_m")
    return op


def _enhance(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """(x, m) op calling an enhance op with factor 1 + 0.9 m."""
    def op(x: Tensor, m: Tensor) -> Tensor:
        return fn(x, 1.0 + ENHANCE * AF.as_batch(m, x))
    op.__name__ = fn.__name__
    return op


def posterize_bits(m: Tensor) -> Tensor:
    """Bits kept at magnitude m in [0, 1]: 8 - round(7 m), so m = 0 keeps 8 (identity) and m = 1 keeps 1."""
    return 8.0 - torch.round((8 - MIN_BITS) * m.clamp(0.0, 1.0))


def posterize_op(x: Tensor, m: Tensor) -> Tensor:
    """Posterize at magnitude m; straight-through in m: backward as x + m * (posterize(x, 1 bit) - x)."""
    m = AF.as_batch(m, x)
    hard = AF.posterize(x, posterize_bits(m))
    if not (m.requires_grad and torch.is_grad_enabled()):
        return hard  # no backward: skip the surrogate's full-strength image
    return AF.straight_through(hard, x, m, AF.posterize(x, float(MIN_BITS)))


def solarize_op(x: Tensor, m: Tensor) -> Tensor:
    """Solarize with threshold 1 - m; straight-through in m: backward as x + m * ((1 - x) - x)."""
    m = AF.as_batch(m, x)
    hard = AF.solarize(x, 1.0 - m.clamp(0.0, 1.0))
    if not (m.requires_grad and torch.is_grad_enabled()):
        return hard
    return AF.straight_through(hard, x, m, 1.0 - x)


def _spec(name: str, fn: Callable[[Tensor, Tensor], Tensor], signed: bool, differentiable: bool = True,
          **extra) -> OpSpec:
    return OpSpec(name, fn, signed, differentiable, True, **extra)


OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    _spec("identity", AF.identity, signed=False),
    _spec("shear_x", _geometric(_shear_x_m), signed=True, affine=_shear_x_m),
    _spec("shear_y", _geometric(_shear_y_m), signed=True, affine=_shear_y_m),
    _spec("translate_x", _geometric(_translate_x_m), signed=True, affine=_translate_x_m),
    _spec("translate_y", _geometric(_translate_y_m), signed=True, affine=_translate_y_m),
    _spec("rotate", _geometric(_rotate_m), signed=True, affine=_rotate_m),
    _spec("hflip", AF.hflip, signed=False),
    _spec("auto_contrast", AF.auto_contrast, signed=False),
    _spec("invert", AF.invert, signed=False),
    _spec("equalize", AF.equalize, signed=False),
    _spec("solarize", solarize_op, signed=False, differentiable=False),
    _spec("posterize", posterize_op, signed=False, differentiable=False),
    _spec("contrast", _enhance(AF.contrast), signed=True),
    _spec("color", _enhance(AF.color), signed=True),
    _spec("brightness", _enhance(AF.brightness), signed=True),
    _spec("sharpness", _enhance(AF.sharpness), signed=True),
    _spec("sample_pairing", AF.sample_pairing, signed=False, mixes_batch=True),
)}

# The 16 ops of the joint DARTS + Faster-AutoAugment paper, in its order.
FASTER_AA_OPS: tuple[str, ...] = (
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "auto_contrast", "hflip", "invert",
    "equalize", "solarize", "posterize", "contrast", "color", "brightness", "sharpness", "sample_pairing",
)

_DHA_14 = ("auto_contrast", "equalize", "rotate", "posterize", "solarize", "color", "contrast", "brightness",
           "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "identity")
# aug_choice -> DHA's op list in its index order (the policy matrix rows/columns follow it).
DHA_OPS: dict[int, tuple[str, ...]] = {
    14: _DHA_14,
    4: ("shear_x", "shear_y", "translate_x", "translate_y"),
    11: tuple(n for n in _DHA_14 if n not in ("color", "contrast", "brightness")),
    15: _DHA_14 + ("invert",),
}

_DHA_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_DHA_ENHANCE = ("color", "contrast", "brightness", "sharpness")
_DHA_FULL = ("auto_contrast", "equalize", "identity", "invert")


LEVEL_SCALES = ("strength", "reference")


def dha_level_to_magnitude(name: str, level: Tensor, sign: Tensor, scale: str = "reference") -> Tensor:
    """DHA's level (clipped to [0, 8]) -> our normalised m for op `name`; `sign` (+-1) orients signed ops.

    scale "reference": DHA's mapping, in which a LOW level is the strongest setting of six ops:
    color / contrast / brightness / sharpness factor 1.8 L + 0.1 (0.1 at level 0: a near-black or grey
    image), posterize to int(3 L + 1) bits (1 bit at level 0), solarize above int(256 L) (everything
    inverted at level 0). So DHA's search magnitude 1 (levels in [0, 1]) applies these at almost full
    strength. scale "strength": level 0 is the identity for every op with an argument and level 8 the
    reference's extreme: enhance factors 1 +- 0.9 L (random sign), posterize 8 - 4 L bits (8..4),
    solarize above 256 (1 - L).
    """
    if scale not in LEVEL_SCALES:
        raise ValueError(f"level scale must be one of {LEVEL_SCALES}, got {scale!r}")
    frac = level.clamp(0.0, DHA_MAX_LEVEL) / DHA_MAX_LEVEL  # DHA's L
    if name in _DHA_FULL:
        return torch.ones_like(frac)  # no argument in DHA: full strength
    if scale == "strength":
        if name in _DHA_SIGNED or name in _DHA_ENHANCE:
            return frac * sign.to(frac.dtype)
        if name == "posterize":
            return 4.0 * frac / (8 - MIN_BITS)
        if name == "solarize":
            return frac
    if name in _DHA_SIGNED:
        # rotate 30 L degrees, shear 0.3 L, translate 0.45 L: exactly our ranges, so m = +-L.
        return frac * sign.to(frac.dtype)
    if name in _DHA_ENHANCE:
        # factor 1.8 L + 0.1 = 1 + 0.9 (2 L - 1); DHA draws no sign for these.
        return 2.0 * frac - 1.0
    if name == "posterize":
        bits = torch.floor(3.0 * frac + 1.0)  # int(3 L + 1): 1..4 bits
        return (8.0 - bits) / (8 - MIN_BITS)
    if name == "solarize":
        return 1.0 - torch.floor(256.0 * frac) / 256.0  # threshold int(256 L) of 256 levels
    raise ValueError(f"op {name!r} is not one of DHA's ops {sorted(set(DHA_OPS[15]))}")
