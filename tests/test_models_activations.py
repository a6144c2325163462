"""The forward's shared ReLUs and the cells that rerun their forward in backward (recompute_cells)."""
import pytest
import torch

from models.activations import Activations, call_cell


def test_shared_relus_run_once_per_tensor_and_leave_outputs_unchanged():
    from torch.utils._python_dispatch import TorchDispatchMode

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
    acts = Activations()
    s0, s1, inner = torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3)
    seen = {}

    def cell(a, b, acts):
        seen.update({name: acts.relu(t) for name, t in (("s0", a), ("s1", b), ("inner", inner))})
        return seen["s0"] + seen["s1"] + seen["inner"]

    call_cell(cell, s0, s1, acts, recompute=False)
    assert acts.relu(s1) is seen["s1"]  # the next cell's first input: still cached
    assert acts.relu(s0) is not seen["s0"] and acts.relu(inner) is not seen["inner"]
    assert torch.equal(acts.relu(s0), seen["s0"])
