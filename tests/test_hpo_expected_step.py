"""The look-ahead of the expected step: step t's validation gradient is paired with step t+1's gradient
and step t's other update parts (not step t's own batch gradient), the weight decay's derivative is
the one-step rule's, the overlapped pass gives the sequential values, and a resume between the two
steps continues exactly."""
import copy

import pytest
import torch
from torch import nn

from hpo.hypergrad import HyperGradient
from hpo.weight_update import HyperUpdate

LR, WD = 0.1, 0.01
WIDE = ((0.01, 0.5), (1e-4, 1e-1))


def _batches():
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
            for _ in range(7)]
    return data[:6], data[6]  # training batches, one validation batch


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _update(net, lookahead, bounds=((LR, LR), (WD, WD)), h_lr=0.0, background=False):
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    hyper = HyperGradient(lr_bounds=bounds[0], wd_bounds=bounds[1], h_lr=h_lr)
    return HyperUpdate(opt, hyper, net, background=background, lookahead=lookahead)


def _step(net, update, batch, step, val):
    """The Searcher's order: backward, finish a background pass, weight step."""
    update.optimizer.zero_grad()
    nn.functional.cross_entropy(net(batch[0]), batch[1]).backward()
    update.finish_pending()
    update.step(step, lambda: val)


def _grads(net, batch):
    return torch.autograd.grad(nn.functional.cross_entropy(net(batch[0]), batch[1]), list(net.parameters()))


def test_the_validation_gradient_waits_for_the_next_steps_gradient():
    train, val = _batches()
    net = _net()
    update = _update(net, "expected")
    w_start = [p.detach().clone() for p in net.parameters()]
    _step(net, update, train[0], 0, val)
    assert update.hyper.last["d_lr"] == 0.0  # step 0's pass waits for step 1
    at_w1 = copy.deepcopy(net)
    _step(net, update, train[1], 1, val)
    # step 0 had no momentum history: its update parts besides its batch's gradient are wd * w_start
    by_hand = -sum((gv * (WD * w + gn)).sum()
                   for gv, w, gn in zip(_grads(at_w1, val), w_start, _grads(at_w1, train[1])))
    assert float(update.hyper.last["d_lr"]) == pytest.approx(float(by_hand), rel=1e-12)
    one_step_net = _net()
    one_step = _update(one_step_net, "step")
    _step(one_step_net, one_step, train[0], 0, val)
    assert float(one_step.hyper.last["d_lr"]) != pytest.approx(float(by_hand), rel=1e-3)
    assert float(update.hyper.last["d_wd"]) == pytest.approx(float(one_step.hyper.last["d_wd"]), rel=1e-12)


def _learning_run(background, steps=6):
    train, val = _batches()
    net = _net()
    update = _update(net, "expected", bounds=WIDE, h_lr=1e-2, background=background)
    for step in range(steps):
        _step(net, update, train[step], step, val)
    update.finish_pending()
    return net, update


def test_the_overlapped_pass_gives_the_sequential_values(torch_threads):
    torch_threads(2)
    net_seq, seq = _learning_run(False)
    net_bg, bg = _learning_run(True)
    assert seq.hyper.values() != {"lr": sum(WIDE[0]) / 2, "wd": sum(WIDE[1]) / 2}  # it learned
    for key in ("lr", "wd"):
        assert bg.hyper.values()[key] == pytest.approx(seq.hyper.values()[key], rel=1e-12)
    for a, b in zip(net_seq.parameters(), net_bg.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_resume_between_the_pass_and_its_completion_continues_exactly():
    train, val = _batches()
    net = _net()
    update = _update(net, "expected", bounds=WIDE, h_lr=1e-2)
    for step in range(2):
        _step(net, update, train[step], step, val)
    assert update.expected.waiting is not None
    twin = copy.deepcopy(net)
    resumed = _update(twin, "expected", bounds=WIDE, h_lr=1e-2)
    resumed.load_state_dict(copy.deepcopy(update.state_dict()))  # as through a checkpoint file
    for step in range(2, 6):
        _step(net, update, train[step], step, val)
        _step(twin, resumed, train[step], step, val)
    assert resumed.hyper.values() == update.hyper.values()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_an_unknown_lookahead_is_refused():
    with pytest.raises(ValueError, match="lookahead"):
        _update(_net(), "two_steps")


def test_the_expected_step_is_the_default_in_one_process_and_several(tmp_path):
    from conftest import tiny_config

    from models.genotypes import DARTS_V2
    from models.network import Network
    from search.build import build_weight_update, sections_for
    from search.modes import MODES
    from utils.config import config_from_dict
    from utils.distributed import Distributed

    cfg, _ = config_from_dict(tiny_config(tmp_path))
    spec = MODES["ista_single_hpo"].stages[0]
    net = Network(DARTS_V2, init_channels=4, num_classes=3, layers=2)
    for dist in (Distributed(), Distributed(rank=0, world=2)):
        assert build_weight_update(spec, sections_for(cfg, spec), net, epochs=1, dist=dist).expected is not None
    cfg, _ = config_from_dict(tiny_config(tmp_path, hpo={"lookahead": "step"}))
    assert build_weight_update(spec, sections_for(cfg, spec), net, epochs=1).expected is None
