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


def test_shared_relus_run_once_per_tensor_and_leave_outputs_unchanged():
    from torch.utils._python_dispatch import TorchDispatchMode

    from models.cells import Activations
    from models.genotypes import DARTS_V2
    from models.network import Network

    class CountRelu(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += func in (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = Network(DARTS_V2, 4, 3, 3).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    unshared = Activations.run
    try:  # the same network without sharing: every op applies its own ReLU
        Activations.run = lambda self, op, t: op(t)
        with CountRelu() as counter:
            want = net(x)
        separate = counter.calls
    finally:
        Activations.run = unshared
    with CountRelu() as counter:
        got = net(x)
    assert torch.allclose(got, want, atol=1e-12)
    # the stem output feeds both preprocessors of cell 0 (and cell 1's preprocess0): ReLU'd once
    assert counter.calls < separate
    acts = Activations()
    t = torch.randn(3)
    assert acts.relu(t) is acts.relu(t)


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


def _step_state(net, recompute_cells, seed=0):
    """Loss, every gradient and every buffer after one forward / backward with `recompute_cells`."""
    net.recompute_cells = recompute_cells
    torch.manual_seed(seed)  # drop path draws its masks from the global RNG
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    logits, aux = net.forward_with_aux(x)
    loss = logits.logsumexp(1).mean() - logits[:, 0].mean() + (0 if aux is None else 0.4 * aux.square().mean())
    net.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {n: b.clone() for n, b in net.named_buffers()}


def _recompute_nets():
    from models.darts import DartsSupernet
    from models.genotypes import DARTS_V2
    from models.ista import IstaSupernet
    from models.network import Network
    yield lambda: DartsSupernet(init_channels=4, num_classes=3, layers=3, steps=2)
    yield lambda: IstaSupernet(single_stage=True, init_channels=4, num_classes=3, layers=3)
    yield lambda: Network(DARTS_V2, 4, 3, 3, auxiliary=True)


@pytest.mark.parametrize("make", list(_recompute_nets()), ids=["darts", "ista_single", "network"])
@pytest.mark.parametrize("recompute_cells", [-1, 2])
def test_recomputed_cells_give_the_same_step(make, recompute_cells):
    torch.manual_seed(0)
    net = make().train()
    net.drop_path_prob = 0.3  # the recompute must draw the same masks
    start = {n: b.clone() for n, b in net.named_buffers()}
    loss, grads, buffers = _step_state(net, 0)
    net.load_state_dict({**net.state_dict(), **start})
    loss_r, grads_r, buffers_r = _step_state(net, recompute_cells)
    assert torch.equal(loss, loss_r)
    assert grads.keys() == grads_r.keys() and any("cells.0." in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_r[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)
    # BatchNorm running statistics move once per step, not again in the backward's second run
    moved = [n for n in buffers if "running_mean" in n and not torch.equal(buffers[n], start[n])]
    assert moved and all(torch.equal(buffers_r[n], buffers[n]) for n in buffers)


def test_only_the_first_cells_run_again_in_backward():
    """What each cell keeps is measured by bench/memory.py; here: which cells recompute."""
    from models.ista import IstaSupernet
    net = IstaSupernet(single_stage=True, init_channels=4, num_classes=3, layers=5).train()
    runs = [0] * len(net.cells)
    for i, cell in enumerate(net.cells):
        cell.preprocess1.register_forward_hook(lambda *_, i=i: runs.__setitem__(i, runs[i] + 1))
    net.recompute_cells = 2
    loss = net(torch.rand(8, 3, 16, 16)).sum()
    assert runs == [1] * 5
    loss.backward()
    assert runs == [2, 2, 1, 1, 1]
    with torch.no_grad():  # nothing to recompute for
        net(torch.rand(8, 3, 16, 16))
    assert runs == [3, 3, 2, 2, 2]


def test_a_cell_boundary_forgets_the_relus_the_next_cell_cannot_read():
    from models.cells import Activations, call_cell
    acts = Activations()
    s0, s1, inner = torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3)
    seen = {}

    def cell(a, b, cell_acts):
        seen.update({name: cell_acts.relu(t) for name, t in (("s0", a), ("s1", b), ("inner", inner))})
        return seen["s0"] + seen["s1"] + seen["inner"]

    call_cell(cell, s0, s1, acts, recompute=False)
    assert acts.relu(s1) is seen["s1"]  # the next cell's first input: still cached
    assert acts.relu(s0) is not seen["s0"] and acts.relu(inner) is not seen["inner"]
    assert torch.equal(acts.relu(s0), seen["s0"])
