"""The batched per-sample engine: same result as op-by-op, gradients, both execution paths."""
import pytest
import torch

from augment.apply import apply_per_sample, random_signs
from augment.ops import DHA_OPS, FASTER_AA_OPS, OPS


def _batch(b: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(30, 220, (b, 3, 16, 16), generator=g).float() / 255.0


def _choices(names, b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Every op chosen at least twice, random magnitudes in each op's range (some exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    op_index = torch.arange(b) % len(names)
    op_index = op_index[torch.randperm(b, generator=g)]
    m = torch.rand(b, generator=g)
    signed = torch.tensor([OPS[n].signed for n in names])[op_index]
    m = torch.where(signed, m * random_signs(b, g), m)
    m[:3] = 0.0
    return op_index, m


def _one_by_one(x, op_index, m, names):
    """Reference: each sample through its own op call (the whole batch for ops that pair samples)."""
    rows = []
    for i in range(x.shape[0]):
        spec = OPS[names[int(op_index[i])]]
        if spec.mixes_batch:
            rows.append(spec.fn(x, torch.full_like(m, float(m[i])))[i])
        else:
            rows.append(spec.fn(x[i:i + 1], m[i:i + 1])[0])
    return torch.stack(rows)


@pytest.mark.parametrize("names", [FASTER_AA_OPS, DHA_OPS[14], DHA_OPS[4], ("identity",)])
@pytest.mark.parametrize("grouped", [True, False])
def test_equals_applying_each_sample_individually(names, grouped):
    x = _batch()
    op_index, m = _choices(names, x.shape[0])
    out = apply_per_sample(x, op_index, m, names, grouped=grouped)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - _one_by_one(x, op_index, m, names)).abs().max() <= 1e-6
    assert torch.equal(out[:3], x[:3])  # m = 0 is the identity


@pytest.mark.parametrize("grouped", [True, False])
def test_gradient_reaches_m_and_x_through_two_rounds(grouped):
    names = FASTER_AA_OPS
    x = _batch(32).requires_grad_(True)
    idx1, m1 = _choices(names, 32, seed=1)
    idx2, m2 = _choices(names, 32, seed=2)
    m1 = (m1 * 0.9 + 0.05 * m1.sign()).requires_grad_(True)  # away from 0, where samples would not change
    m2 = (m2 * 0.9 + 0.05 * m2.sign()).requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    y = apply_per_sample(apply_per_sample(x, idx1, m1, names, grouped=grouped), idx2, m2, names, grouped=grouped)
    (y * weights).sum().backward()
    # A few samples may be unaffected by their op (e.g. auto_contrast after an op that already spans 0..1).
    assert (m1.grad != 0).float().mean() > 0.9 and (m2.grad != 0).float().mean() > 0.9
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_grouped_and_masked_paths_agree_including_gradients():
    names = DHA_OPS[15]
    x = _batch()
    op_index, m = _choices(names, x.shape[0], seed=4)
    grads = []
    outs = []
    for grouped in (True, False):
        mm = m.clone().requires_grad_(True)
        out = apply_per_sample(x, op_index, mm, names, grouped=grouped)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(mm.grad)
    assert (outs[0] - outs[1]).abs().max() <= 1e-6
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_geometric_fill_reaches_the_fused_path():
    x = _batch(4)
    fill = torch.tensor([0.2, 0.4, 0.6])
    out = apply_per_sample(x, torch.zeros(4, dtype=torch.long), torch.ones(4), ("translate_x",), fill=fill)
    assert torch.allclose(out[..., 0], fill.view(1, 3, 1).expand(4, 3, 16), atol=1e-6)


def test_float64_and_deterministic():
    names = FASTER_AA_OPS
    x = _batch().double()
    op_index, m = _choices(names, x.shape[0])
    a = apply_per_sample(x, op_index, m.double(), names)
    assert a.dtype == torch.float64 and torch.equal(a, apply_per_sample(x, op_index, m.double(), names))


def test_bad_inputs_raise():
    x = _batch(4)
    with pytest.raises(KeyError, match="nope"):
        apply_per_sample(x, torch.zeros(4, dtype=torch.long), torch.zeros(4), ("identity", "nope"))
    with pytest.raises(ValueError, match="op_index"):
        apply_per_sample(x, torch.tensor([0, 1, 2, 5]), torch.zeros(4), ("identity", "invert", "rotate"))


def test_random_signs():
    s = random_signs((1000,), torch.Generator().manual_seed(0))
    assert set(s.unique().tolist()) == {-1.0, 1.0} and abs(float(s.mean())) < 0.1
    assert torch.equal(s, random_signs(1000, torch.Generator().manual_seed(0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    names = FASTER_AA_OPS
    x = _batch()
    op_index, m = _choices(names, x.shape[0])
    expected = apply_per_sample(x, op_index, m, names)
    for grouped in (None, True):
        out = apply_per_sample(x.cuda(), op_index.cuda(), m.cuda(), names, grouped=grouped)
        assert out.device.type == "cuda" and (out.cpu() - expected).abs().max() <= 1e-5
