"""Architecture update rules: finite-difference Hessian-vector product, first order, unrolled, joint."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from hpo.weight_update import WeightUpdate
from models.darts import DartsSupernet
from search.arch_step import (ArchStep, FirstOrderArchStep, JointArchStep, SecondOrderArchStep,
                              make_arch_optimizer)
from search.policy_step import PolicyStep


class Tiny(nn.Module):
    """A float64 model whose loss couples the weights and `alpha` non-linearly."""

    def __init__(self, seed=0, n_in=4, n_out=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * 0.5)
        self.bias = nn.Parameter(torch.randn(n_out, generator=g, dtype=torch.float64) * 0.1)
        self.alpha = nn.Parameter(torch.randn(n_out, generator=g, dtype=torch.float64) * 0.5)

    def arch_parameters(self):
        return [self.alpha]

    def forward(self, x):
        h = x @ self.weight.t() + self.bias
        return torch.tanh(h) * self.alpha.exp() + h * self.alpha.pow(2)


def _batch(seed, n=6, n_in=4, n_out=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, n_in, generator=g, dtype=torch.float64),
            torch.randint(0, n_out, (n,), generator=g))


def _split(net):
    arch = {n: p for n, p in net.named_parameters() if any(p is a for a in net.arch_parameters())}
    weights = {n: p for n, p in net.named_parameters() if n not in arch}
    return weights, arch


def _loss_at(net):
    def loss_at(w, a, batch):
        return nn.functional.cross_entropy(functional_call(net, {**w, **a}, (batch[0],)), batch[1])
    return loss_at


def test_hessian_vector_matches_double_backward():
    net = Tiny()
    weights, arch = _split(net)
    batch = _batch(1)
    loss_at = _loss_at(net)
    g = torch.Generator().manual_seed(2)
    vector = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in weights.values()]

    approx = SecondOrderArchStep.hessian_vector(loss_at, weights, arch, batch, vector)

    grads = torch.autograd.grad(loss_at(weights, arch, batch), list(weights.values()), create_graph=True)
    dot = sum((gw * v).sum() for gw, v in zip(grads, vector))
    exact = torch.autograd.grad(dot, list(arch.values()))
    assert len(approx) == len(exact) == 1
    for a, e in zip(approx, exact):
        assert e.abs().max() > 1e-3   # a non-trivial mixed derivative
        rel = (a - e).norm() / e.norm()
        assert rel < 1e-3


def test_hessian_vector_is_scale_aware():
    """The eps scaling is 0.01/||v||: the result is linear in v, large or small."""
    net = Tiny(seed=3)
    weights, arch = _split(net)
    batch = _batch(4)
    g = torch.Generator().manual_seed(5)
    v = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in weights.values()]
    base = SecondOrderArchStep.hessian_vector(_loss_at(net), weights, arch, batch, v)[0]
    for s in (1e-3, 1e3):
        scaled = SecondOrderArchStep.hessian_vector(_loss_at(net), weights, arch, batch, [s * t for t in v])[0]
        assert torch.allclose(scaled, s * base, rtol=1e-3, atol=1e-12 * s)


def test_second_order_gradient_matches_exact_unrolled_gradient():
    """With an SGD(lr=1) arch optimizer the step reveals the gradient; compare with autograd through w'."""
    net = Tiny(seed=6)
    train, val = _batch(7), _batch(8)
    lr, momentum, wd = 0.1, 0.9, 3e-3
    w_opt = torch.optim.SGD([net.weight, net.bias], lr=lr, momentum=momentum, weight_decay=wd)
    # one weight step so momentum buffers exist
    nn.functional.cross_entropy(net(train[0]), train[1]).backward()
    w_opt.step()
    w_opt.zero_grad(set_to_none=True)

    weights, arch = _split(net)
    loss_at = _loss_at(net)
    alpha = arch["alpha"]
    g_train = torch.autograd.grad(loss_at(weights, arch, train), list(weights.values()), create_graph=True)
    unrolled = {}
    for (n, w), gw in zip(weights.items(), g_train):
        buf = w_opt.state[w]["momentum_buffer"]
        unrolled[n] = w.detach() - lr * (gw + wd * w.detach() + momentum * buf)
    exact = torch.autograd.grad(loss_at(unrolled, arch, val), [alpha])[0]

    before = alpha.detach().clone()
    w_before = {n: w.detach().clone() for n, w in weights.items()}
    step = SecondOrderArchStep(torch.optim.SGD([alpha], lr=1.0), momentum=momentum, weight_decay=wd)
    step.update(net, train, val, lr, w_opt)
    used = before - alpha.detach()
    assert (used - exact).norm() / exact.norm() < 1e-3
    assert alpha.grad is None
    for n, w in weights.items():
        assert torch.equal(w, w_before[n])
        assert w.grad is None


@pytest.fixture
def supernet():
    # layers=3: one normal cell and two reduction cells, so both alphas are used
    torch.manual_seed(0)
    net = DartsSupernet(init_channels=4, num_classes=3, layers=3, steps=2).train()
    return net


def _batches():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    return (x[:2], y[:2]), (x[2:], y[2:])


def test_first_order_moves_only_arch_parameters(supernet):
    net = supernet
    train, val = _batches()
    sentinel = {id(p): torch.full_like(p, 7.0) for p in net.weight_parameters()}
    for p in net.weight_parameters():
        p.grad = sentinel[id(p)].clone()
    w_before = [p.detach().clone() for p in net.weight_parameters()]
    a_before = [a.detach().clone() for a in net.arch_parameters()]
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    step = FirstOrderArchStep(make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=1e-3))
    # through the hook the Searcher calls: it reads the lr from the weight update, the batch from the stream
    step.before_weights(net, train, lambda: val, WeightUpdate(w_opt), PolicyStep())
    for p, b in zip(net.weight_parameters(), w_before):
        assert torch.equal(p, b)
        assert torch.equal(p.grad, sentinel[id(p)])
    for a, b in zip(net.arch_parameters(), a_before):
        assert not torch.equal(a, b)
        assert a.grad is None


def test_first_order_skips_frozen_arch_parameters(supernet):
    net = supernet
    train, val = _batches()
    net.alpha_reduce.requires_grad_(False)
    before = net.alpha_reduce.detach().clone()
    step = FirstOrderArchStep(make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=0.0))
    step.update(net, train, val, 0.1, torch.optim.SGD(net.weight_parameters(), lr=0.1))
    assert torch.equal(net.alpha_reduce, before)


def test_second_order_on_supernet_changes_only_alphas(supernet):
    net = supernet
    train, val = _batches()
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    nn.functional.cross_entropy(net(train[0]), train[1]).backward()
    w_opt.step()
    w_opt.zero_grad(set_to_none=True)
    w_before = {n: p.detach().clone() for n, p in net.named_parameters() if not n.startswith("alpha")}
    buffers_before = {n: b.clone() for n, b in net.named_buffers()}
    a_before = [a.detach().clone() for a in net.arch_parameters()]
    step = SecondOrderArchStep(make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=1e-3),
                               momentum=0.9, weight_decay=3e-4)
    step.update(net, train, val, 0.05, w_opt)
    for a, b in zip(net.arch_parameters(), a_before):
        assert not torch.equal(a, b)
        assert a.grad is None
    for n, p in net.named_parameters():
        if n in w_before:
            assert torch.equal(p, w_before[n]), n
            assert p.grad is None, n
    assert buffers_before, "the supernet should have BN running statistics"
    for n, b in net.named_buffers():
        assert torch.equal(b, buffers_before[n]), n


def test_second_order_step_is_the_same_with_recomputed_cells(supernet):
    net = supernet
    train, val = _batches()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    results = []
    for recompute_cells in (0, -1):
        net.load_state_dict(state)
        net.recompute_cells = recompute_cells
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
        step = SecondOrderArchStep(make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=0.0),
                                   momentum=0.9, weight_decay=3e-4)
        step.update(net, train, val, 0.05, w_opt)
        results.append([a.detach().clone() for a in net.arch_parameters()])
        assert net.recompute_cells == recompute_cells
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert not torch.equal(results[0][0], state["alpha_normal"])


def test_joint_step_updates_and_clears(supernet):
    net = supernet
    train, _ = _batches()
    step = JointArchStep(make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=0.0))
    a_before = [a.detach().clone() for a in net.arch_parameters()]
    step.before_weights(net, train, lambda: pytest.fail("a joint step reads no validation batch"), None, None)
    assert all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), a_before))
    w_before = [p.detach().clone() for p in net.weight_parameters()]
    nn.functional.cross_entropy(net(train[0]), train[1]).backward()
    step.after_backward()
    for a, b in zip(net.arch_parameters(), a_before):
        assert not torch.equal(a, b)
        assert a.grad is None
    # the weight optimizer owns the weights: their gradients are left for it
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad)
    assert all(torch.equal(p, b) for p, b in zip(net.weight_parameters(), w_before))


def test_arch_optimizer_settings_and_state_round_trip(supernet):
    net = supernet
    opt = make_arch_optimizer(net.arch_parameters(), lr=3e-4, weight_decay=1e-3)
    group = opt.param_groups[0]
    assert group["betas"] == (0.5, 0.999) and group["lr"] == 3e-4 and group["weight_decay"] == 1e-3
    step = JointArchStep(opt)
    net(torch.rand(2, 3, 8, 8)).sum().backward()
    step.after_backward()
    state = step.state_dict()
    other = JointArchStep(make_arch_optimizer(net.arch_parameters(), lr=1.0, weight_decay=0.0))
    other.load_state_dict(state)
    assert other.optimizer.param_groups[0]["lr"] == 3e-4
    assert other.optimizer.state_dict()["state"][0]["step"] == 1


def test_base_arch_step_is_a_no_op(supernet):
    step = ArchStep()
    assert step.state_dict() == {}
    step.load_state_dict({})
    before = [a.detach().clone() for a in supernet.arch_parameters()]
    train, val = _batches()
    step.before_weights(supernet, train, lambda: val, None, None)
    step.after_backward()
    assert all(torch.equal(a, b) for a, b in zip(supernet.arch_parameters(), before))


def _no_normal_cell_step(kind):
    torch.manual_seed(0)
    net = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2).train()
    assert all(cell.reduction for cell in net.cells)   # layers=2: both cells reduce
    train, val = _batches()
    opt = make_arch_optimizer(net.arch_parameters(), lr=0.01, weight_decay=0.0)
    step = FirstOrderArchStep(opt) if kind is FirstOrderArchStep else SecondOrderArchStep(opt, 0.9, 0.0)
    normal, reduce = net.alpha_normal.detach().clone(), net.alpha_reduce.detach().clone()
    step.update(net, train, val, 0.1, torch.optim.SGD(net.weight_parameters(), lr=0.1))
    assert not torch.equal(net.alpha_reduce, reduce)
    assert torch.equal(net.alpha_normal, normal)       # unused: no gradient, no Adam step


def test_first_order_step_works_without_a_normal_cell():
    _no_normal_cell_step(FirstOrderArchStep)


def test_second_order_step_works_without_a_normal_cell():
    _no_normal_cell_step(SecondOrderArchStep)
