"""The op table: contract of every op at normalised magnitude, gradients, and DHA's level mapping."""
import pytest
import torch

from augment import functional as AF
from augment.ops import DHA_OPS, FASTER_AA_OPS, OPS, dha_level_to_magnitude

# Ops whose gradient in x is the exact autograd one (equalize and posterize pass it straight through).
EXACT_IN_X = sorted(set(OPS) - {"equalize", "posterize"})


def _images(b: int = 4, c: int = 3, h: int = 16, w: int = 18, dtype: torch.dtype = torch.float32,
            seed: int = 0) -> torch.Tensor:
    """Random low-contrast images on the 8-bit grid (what loaders produce, so level-based ops agree across
    dtypes), with enough pixels per level for equalize and auto_contrast to act."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(40, 200, (b, c, h, w), generator=g).to(dtype) / 255.0)


def _magnitudes(name: str, b: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random magnitudes in the op's range, away from 0."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, generator=g, dtype=dtype) * 0.8 + 0.15
    if OPS[name].signed:
        m = m * torch.where(torch.arange(b) % 2 == 0, 1.0, -1.0).to(dtype)
    return m


def test_table_lists():
    assert len(FASTER_AA_OPS) == 16 and len(set(FASTER_AA_OPS)) == 16
    assert FASTER_AA_OPS[:5] == ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
    assert FASTER_AA_OPS[-1] == "sample_pairing"
    assert DHA_OPS[14] == ("auto_contrast", "equalize", "rotate", "posterize", "solarize", "color", "contrast",
                           "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "identity")
    assert DHA_OPS[4] == ("shear_x", "shear_y", "translate_x", "translate_y")
    assert len(DHA_OPS[11]) == 11 and not {"color", "contrast", "brightness"} & set(DHA_OPS[11])
    assert DHA_OPS[15][:14] == DHA_OPS[14] and DHA_OPS[15][14] == "invert"
    names = set(FASTER_AA_OPS) | {n for ops in DHA_OPS.values() for n in ops}
    assert names <= set(OPS) and "identity" in OPS
    assert all(spec.name == name for name, spec in OPS.items())


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range(name, channels, dtype):
    x = torch.rand(4, channels, 7, 10, dtype=dtype)
    for m in (_magnitudes(name, 4, dtype=dtype), torch.ones(4, dtype=dtype),
              -torch.ones(4, dtype=dtype) if OPS[name].signed else torch.zeros(4, dtype=dtype)):
        y = OPS[name].fn(x, m)
        assert y.shape == x.shape and y.dtype == dtype
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(OPS))
def test_zero_magnitude_is_identity(name):
    assert OPS[name].has_identity
    for x in (torch.rand(3, 3, 7, 10), torch.rand(2, 1, 31, 31, dtype=torch.float64)):
        y = OPS[name].fn(x, torch.zeros(x.shape[0], dtype=x.dtype))
        assert (y - x).abs().max() <= 1e-6


@pytest.mark.parametrize("name", sorted(OPS))
def test_float32_matches_float64(name):
    x = _images()
    m = _magnitudes(name, 4)
    y32 = OPS[name].fn(x, m)
    y64 = OPS[name].fn(x.double(), m.double())
    assert (y32.double() - y64).abs().max() <= 1e-5


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck(name):
    spec = OPS[name]
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    m = torch.tensor([0.37, -0.61] if spec.signed else [0.37, 0.61], dtype=torch.float64)
    x.requires_grad_(name in EXACT_IN_X)
    m.requires_grad_(spec.differentiable)
    if not (x.requires_grad or m.requires_grad):
        pytest.skip("no exact gradient to check (straight-through in x and m)")
    assert torch.autograd.gradcheck(spec.fn, (x, m), fast_mode=True)


@pytest.mark.parametrize("name", sorted(set(OPS) - {"identity"}))
def test_every_op_passes_a_nonzero_gradient_to_m(name):
    x = _images()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))  # a generic downstream loss
    for m0 in (0.0, 0.5):  # at the identity too: a policy may start there
        m = torch.full((4,), m0, requires_grad=True)
        (OPS[name].fn(x, m) * weights).sum().backward()
        assert (m.grad.abs() > 0).all(), (name, m0, m.grad)


@pytest.mark.parametrize("name", [n for n in sorted(OPS) if not OPS[n].differentiable])
def test_straight_through_ops_forward_is_the_hard_op(name):
    x = _images()
    m = torch.tensor([0.2, 0.5, 0.8, 1.0], requires_grad=True)
    y = OPS[name].fn(x, m)
    hard = {"posterize": lambda: AF.posterize(x, 8 - torch.round(7 * m.detach())),
            "solarize": lambda: AF.solarize(x, 1 - m.detach())}[name]()
    assert torch.equal(y, hard)


@pytest.mark.parametrize("name", sorted(set(OPS) - {"identity"}))
def test_magnitudes_are_per_sample(name):
    x = _images(b=2)
    m = torch.tensor([0.0, 0.9 if not OPS[name].signed else -0.9])
    y = OPS[name].fn(x, m)
    assert torch.equal(y[0], x[0])
    assert (y[1] - x[1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(OPS))
def test_deterministic(name):
    x, m = _images(), _magnitudes(name, 4)
    assert torch.equal(OPS[name].fn(x, m), OPS[name].fn(x, m))


def test_full_strength_semantics():
    x = _images()
    one = torch.ones(4)
    assert torch.allclose(OPS["hflip"].fn(x, one), x.flip(3), atol=1e-6)
    assert torch.allclose(OPS["invert"].fn(x, one), 1 - x, atol=1e-6)
    assert torch.allclose(OPS["solarize"].fn(x, one), 1 - x, atol=1e-6)
    assert set((OPS["posterize"].fn(x, one) * 255).round().unique().tolist()) <= {0.0, 128.0}
    assert torch.allclose(OPS["brightness"].fn(x, -one), 0.1 * x, atol=1e-6)  # factor 1 - 0.9
    assert torch.allclose(OPS["rotate"].fn(x[..., :9, :9], one), AF.rotate(x[..., :9, :9], 30.0))
    assert torch.allclose(OPS["translate_x"].fn(x, -one), AF.translate_x(x, -0.45))
    assert torch.allclose(OPS["shear_y"].fn(x, one), AF.shear_y(x, 0.3))


def _dha_reference(name: str, x: torch.Tensor, level: float, sign: float) -> torch.Tensor:
    """DHA's op at a level, written with the physical arguments of section 4.1 of the reference."""
    frac = min(max(level, 0.0), 8.0) / 8
    enhance = 1.8 * frac + 0.1
    return {
        "rotate": lambda: AF.rotate(x, 30 * frac * sign),
        "shear_x": lambda: AF.shear_x(x, 0.3 * frac * sign),
        "shear_y": lambda: AF.shear_y(x, 0.3 * frac * sign),
        "translate_x": lambda: AF.translate_x(x, 0.45 * frac * sign),
        "translate_y": lambda: AF.translate_y(x, 0.45 * frac * sign),
        "color": lambda: AF.color(x, enhance),
        "contrast": lambda: AF.contrast(x, enhance),
        "brightness": lambda: AF.brightness(x, enhance),
        "sharpness": lambda: AF.sharpness(x, enhance),
        "posterize": lambda: AF.posterize(x, float(int(3 * frac + 1))),
        "solarize": lambda: AF.solarize(x, int(256 * frac) / 256),
        "auto_contrast": lambda: AF.auto_contrast(x, 1.0),
        "equalize": lambda: AF.equalize(x, 1.0),
        "invert": lambda: AF.invert(x, 1.0),
        "identity": lambda: x,
    }[name]()


@pytest.mark.parametrize("name", DHA_OPS[15])
def test_dha_levels_reach_dhas_arguments(name):
    x = _images(b=1, h=9, w=9)
    for level in (0.0, 3.0, 8.0, 10.0):  # 10: the tune magnitude, clipped to 8
        for sign in (1.0, -1.0):
            m = dha_level_to_magnitude(name, torch.tensor([level]), torch.tensor([sign]))
            assert m.abs().max() <= 1 and (OPS[name].signed or m.min() >= 0)
            assert torch.allclose(OPS[name].fn(x, m), _dha_reference(name, x, level, sign), atol=1e-5), (level, sign)


def test_dha_level_endpoints():
    lv = torch.tensor([0.0, 8.0])
    pos, neg = torch.ones(2), -torch.ones(2)
    assert torch.equal(dha_level_to_magnitude("rotate", lv, neg), torch.tensor([0.0, -1.0]))  # -30 degrees at 8
    assert torch.equal(dha_level_to_magnitude("translate_y", lv, pos), torch.tensor([0.0, 1.0]))
    assert torch.equal(dha_level_to_magnitude("color", lv, neg), torch.tensor([-1.0, 1.0]))  # factor 0.1 .. 1.9
    assert torch.equal(dha_level_to_magnitude("brightness", torch.tensor([4.0]), pos), torch.tensor([0.0]))
    assert torch.allclose(dha_level_to_magnitude("posterize", lv, pos), torch.tensor([1.0, 4 / 7]))  # 1 .. 4 bits
    assert torch.equal(dha_level_to_magnitude("solarize", lv, pos), torch.tensor([1.0, 0.0]))  # threshold 0 .. 256
    assert torch.equal(dha_level_to_magnitude("equalize", lv, pos), torch.ones(2))
    with pytest.raises(ValueError, match="hflip"):
        dha_level_to_magnitude("hflip", lv, pos)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(OPS))
def test_cuda_matches_cpu(name):
    x, m = _images(), _magnitudes(name, 4)
    y = OPS[name].fn(x.cuda(), m.cuda())
    assert y.device.type == "cuda"
    assert (y.cpu() - OPS[name].fn(x, m)).abs().max() <= 1e-5


def test_strength_scale_makes_level_zero_the_identity_and_level_eight_the_reference_extreme():
    zero, eight, pos, neg = torch.tensor([0.0]), torch.tensor([8.0]), torch.tensor([1.0]), torch.tensor([-1.0])
    for name in ("rotate", "shear_x", "translate_y", "color", "contrast", "brightness", "sharpness", "posterize",
                 "solarize"):
        assert torch.equal(dha_level_to_magnitude(name, zero, pos, "strength"), torch.zeros(1)), name
    # the reference is at its strongest at level 0 for these
    assert torch.equal(dha_level_to_magnitude("brightness", zero, pos), torch.tensor([-1.0]))  # factor 0.1
    assert torch.equal(dha_level_to_magnitude("solarize", zero, pos), torch.tensor([1.0]))  # all inverted
    # level 8: the reference's extremes (enhance factor 0.1 or 1.9 by sign, solarize everything)
    assert torch.equal(dha_level_to_magnitude("brightness", eight, neg, "strength"), torch.tensor([-1.0]))
    assert torch.equal(dha_level_to_magnitude("color", eight, pos, "strength"), torch.tensor([1.0]))
    assert torch.equal(dha_level_to_magnitude("solarize", eight, pos, "strength"), torch.tensor([1.0]))
    assert torch.allclose(dha_level_to_magnitude("posterize", eight, pos, "strength"), torch.tensor([4 / 7]))  # 4 bits
    assert torch.equal(dha_level_to_magnitude("equalize", zero, pos, "strength"), torch.ones(1))  # no argument
    with pytest.raises(ValueError, match="level scale"):
        dha_level_to_magnitude("rotate", zero, pos, "linear")
