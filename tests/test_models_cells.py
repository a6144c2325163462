"""Network skeleton parts: the cell plan, stems, the search cell's contract, Normalize."""
import pytest
import torch

from models.cells import Normalize, SearchCell, Stem, aux_channels, cell_plan
from models.genotypes import PRIMITIVES_ISTA


def test_cell_plan_reductions_and_channels():
    plan = cell_plan("cifar", 16, 8, 48)
    reductions = [i for i, p in enumerate(plan) if p[3]]
    assert reductions == [2, 5]
    assert [p[2] for p in plan] == [16, 16, 32, 32, 32, 64, 64, 64]
    # reduction_prev follows the previous cell; inputs chain through multiplier * C
    assert [p[4] for p in plan] == [False, False, False, True, False, False, True, False]
    assert plan[0][:2] == (48, 48) and plan[1][:2] == (48, 64) and plan[2][:2] == (64, 64)
    assert aux_channels(plan, 8) == 4 * 64


def test_imagenet_plan_starts_after_a_reduction():
    plan = cell_plan("imagenet", 8, 3, 8)
    assert plan[0][4] is True


def test_stems():
    x = torch.rand(2, 3, 32, 32)
    s0, s1 = Stem("cifar", 3, 4)(x)
    assert s0 is s1 and s0.shape == (2, 12, 32, 32)
    s0, s1 = Stem("imagenet", 3, 8)(x)
    assert s0.shape == (2, 8, 8, 8) and s1.shape == (2, 8, 4, 4)
    with pytest.raises(ValueError):
        Stem("mnist", 3, 4)


def test_normalize():
    n = Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([0.5, 0.75]).view(1, 2, 1, 1)
    assert torch.allclose(n(x).flatten(), torch.tensor([0.0, 2.0]))
    assert "mean" in n.state_dict()


def _cell():
    torch.manual_seed(0)
    return SearchCell(2, 2, 4, 4, 4, False, False, PRIMITIVES_ISTA, True, False)


def test_search_cell_weights_and_active_ops():
    cell = _cell().eval()
    x = torch.rand(2, 4, 6, 6)
    n_edges, k = 5, len(PRIMITIVES_ISTA)
    skip = PRIMITIVES_ISTA.index("skip_connect")
    w = torch.zeros(n_edges, k)
    active = [[] for _ in range(n_edges)]
    for e in range(n_edges):
        w[e, skip] = 1.0
        active[e] = [skip]
    out = cell(x, x, w, active)
    assert out.shape == (2, 8, 6, 6)
    s = cell.preprocess1(x)
    # node 0 = s0' + s1' (both preprocessed from x), node 1 = s0' + s1' + node0
    p0 = cell.preprocess0(x)
    assert torch.allclose(out[:, :4], p0 + s, atol=1e-6)
    assert torch.allclose(out[:, 4:], 2 * (p0 + s), atol=1e-6)
    # a weight listed in w but not in `active` is not used
    w2 = w.clone()
    w2[0, 0] = 5.0
    assert torch.equal(cell(x, x, w2, active), out)


def test_search_cell_node_without_active_op_raises():
    cell = _cell()
    x = torch.rand(1, 4, 4, 4)
    active = [[0], [], [], [], []]   # node 1 (edges 2..4) has nothing to compute
    with pytest.raises(RuntimeError):
        cell(x, x, torch.ones(5, len(PRIMITIVES_ISTA)), active)


@pytest.mark.parametrize("layouts", [("nchw", "nchw", "nchw"), ("nhwc", "nhwc", "nhwc"), ("nhwc", "nchw", "nhwc"),
                                     ("nhwc",)])
def test_weighted_sum_matches_the_addcmul_chain_in_value_and_gradients(layouts):
    from models.cells import weighted_sum
    torch.manual_seed(0)
    fmt = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
    outs = [torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt[f]).requires_grad_(True)
            for f in layouts]
    alphas = torch.randn(len(outs) + 1, dtype=torch.float64, requires_grad=True)
    weights = [alphas[i + 1] for i in range(len(outs))]  # 0-d views, as the cells index them
    got = weighted_sum(weights, outs)
    want = sum(w * o for w, o in zip(weights, outs))
    assert torch.allclose(got, want, rtol=1e-12)
    upstream = torch.randn_like(want).contiguous(memory_format=fmt[layouts[0]])
    for g, h in zip(torch.autograd.grad(got, [alphas, *outs], upstream),
                    torch.autograd.grad(want, [alphas, *outs], upstream)):
        assert torch.allclose(g, h, rtol=1e-10, atol=1e-12)
    # Frozen architecture: no weight gradient is asked for, the outputs' gradients still flow.
    frozen = [w.detach() for w in weights]
    g_outs = torch.autograd.grad(weighted_sum(frozen, outs), outs, upstream)
    for g, w in zip(g_outs, frozen):
        assert torch.allclose(g, upstream * w, rtol=1e-12)
    with torch.no_grad():
        assert torch.allclose(weighted_sum(weights, outs), want, rtol=1e-12)


def test_weighted_sum_gradients_when_the_upstream_gradient_is_a_channel_slice():
    """A node feeding the cell's concat gets a channel slice of the concat's (channels_last) gradient."""
    from models.cells import weighted_sum
    torch.manual_seed(1)
    outs = [torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
            .requires_grad_(True) for _ in range(3)]
    alphas = torch.randn(3, dtype=torch.float64, requires_grad=True)
    weights = [alphas[i] for i in range(3)]
    upstream = torch.randn(2, 9, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)[:, 3:6]
    assert not upstream.is_contiguous() and not upstream.is_contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(weighted_sum(weights, outs), [alphas, *outs], upstream)
    want = torch.autograd.grad(sum(w * o for w, o in zip(weights, outs)), [alphas, *outs], upstream)
    for g, h in zip(got, want):
        assert torch.allclose(g, h, rtol=1e-10, atol=1e-12)


def test_weighted_sum_weight_gradients_of_bf16_outputs_keep_float32_digits():
    """Under bf16 autocast the outputs and the upstream gradient are bfloat16; a bfloat16 dot would
    round each weight's gradient to 8 bits (relative error up to 4e-3)."""
    from models.cells import weighted_sum
    torch.manual_seed(2)
    outs = [torch.randn(4, 8, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_(True)
            for _ in range(3)]
    alphas = torch.rand(3, requires_grad=True)
    upstream = torch.randn(4, 8, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last)
    total = weighted_sum([alphas[i] for i in range(3)], outs)  # float32 weights, as the cells pass them
    g_alpha, = torch.autograd.grad(total, alphas, upstream)
    want = torch.stack([(upstream.double() * o.double()).sum() for o in outs])
    assert g_alpha.dtype == torch.float32
    assert torch.allclose(g_alpha.double(), want, rtol=1e-5, atol=1e-4)


def test_weighted_sum_keeps_no_outputs_when_the_weights_are_frozen():
    from models.cells import weighted_sum
    outs = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(3)]
    learned = weighted_sum(list(torch.ones(3, requires_grad=True)), outs)
    frozen = weighted_sum(list(torch.ones(3)), outs)
    assert len(learned.grad_fn.saved_tensors) == 6 and len(frozen.grad_fn.saved_tensors) == 3


def test_weighted_sum_skips_weight_gradients_the_backward_does_not_ask_for(monkeypatch):
    import models.cells as cells
    dots = []
    real = torch.dot
    monkeypatch.setattr(cells.torch, "dot", lambda *a: dots.append(1) or real(*a))
    outs = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(2)]
    alphas = torch.ones(2, requires_grad=True)
    total = cells.weighted_sum([alphas[0], alphas[1]], outs)
    upstream = torch.randn(2, 3, 4, 4)
    torch.autograd.grad(total, outs, upstream, retain_graph=True)  # weights only, as the validation pass
    assert dots == []
    g_alpha, = torch.autograd.grad(total, alphas, upstream)
    assert len(dots) == 2 and torch.allclose(g_alpha, torch.stack([(upstream * o).sum() for o in outs]).detach())
