"""The single-path supernet: one op per edge runs, its gradient reaches alpha, tau anneals."""
import pytest
import torch

from models.gdas import GdasSupernet, hard_gumbel
from models.genotypes import PRIMITIVES_DARTS


def _net(**kw):
    torch.manual_seed(0)
    return GdasSupernet(init_channels=4, num_classes=3, layers=3, steps=2, **kw)


def _count_op_calls(net):
    """{(cell, edge): number of op forwards} recorded by hooks on every candidate op."""
    calls, handles = {}, []
    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for op in edge.ops:
                handles.append(op.register_forward_hook(
                    lambda m, i, o, key=(c, e): calls.__setitem__(key, calls.get(key, 0) + 1)))
    return calls, handles


def test_a_training_forward_runs_exactly_one_op_per_edge_and_the_backward_reaches_alpha():
    net = _net().train()
    calls, handles = _count_op_calls(net)
    loss = net(torch.rand(2, 3, 8, 8)).square().mean()
    for h in handles:
        h.remove()
    edges = sum(len(cell.edges) for cell in net.cells)
    assert len(calls) == edges and set(calls.values()) == {1}
    loss.backward()
    for alpha in net.arch_parameters():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    # only the chosen op of an edge received a weight gradient
    normal, _ = net.active_ops()
    edge = net.cells[0].edges[0]
    for k, op in enumerate(edge.ops):
        grads = [p.grad for p in op.parameters()]
        if grads:
            assert any(g is not None and g.abs().sum() > 0 for g in grads) == (k == normal[0][0]), k


def test_hard_gumbel_is_one_hot_in_value_and_follows_alpha_in_frequency():
    alpha = torch.tensor([[0.0, 2.0, 0.0, -1.0]]).repeat(4000, 1).requires_grad_()
    weights, index = hard_gumbel(alpha, tau=1.0)
    assert torch.equal(weights.detach().sum(1), torch.ones(4000)) and set(weights.detach().unique().tolist()) <= {0.0, 1.0}
    freq = torch.bincount(index, minlength=4).float() / 4000
    # argmax of log p + Gumbel noise is a draw from p = softmax(alpha) (the Gumbel-max trick)
    assert torch.allclose(freq, alpha[0].detach().softmax(0), atol=0.03)
    (weights[:, 1].sum()).backward()
    assert alpha.grad.abs().sum() > 0


def test_tau_anneals_from_max_to_min_over_the_search_epochs():
    net = _net(epochs=5, tau_max=10.0, tau_min=0.1)
    taus = []
    for epoch in range(5):
        net.on_epoch_start(epoch)
        taus.append(net.tau)
    assert taus[0] == 10.0 and taus[-1] == pytest.approx(0.1) and taus == sorted(taus, reverse=True)


def test_evaluation_runs_the_argmax_op_without_randomness():
    net = _net().eval()
    with torch.no_grad():
        net.alpha_normal[:, PRIMITIVES_DARTS.index("sep_conv_3x3")] = 5.0
        x = torch.rand(2, 3, 8, 8)
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    normal, _ = net.active_ops()
    assert all(ops == [PRIMITIVES_DARTS.index("sep_conv_3x3")] for ops in normal)
    assert all(op == "sep_conv_3x3" for op, _ in net.genotype().normal)


def test_bad_temperatures_are_refused():
    with pytest.raises(ValueError, match="tau_min"):
        _net(tau_max=0.1, tau_min=1.0)
