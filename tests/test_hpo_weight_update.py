"""The weight update: the hypergradient of lr and wd equals the finite-difference derivative of the val loss
after one step; the overlapped validation pass reproduces the sequential run."""
import pytest
import torch
from torch import nn

from hpo.hypergrad import HyperGradient
from hpo.schedule import CosineSchedule
from hpo.weight_update import HyperUpdate, WeightUpdate

LR, WD = 0.1, 0.01


def _data():
    g = torch.Generator().manual_seed(0)
    xt, xv = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 5, generator=g, dtype=torch.float64)
    return (xt, torch.randint(0, 3, (16,), generator=g)), (xv, torch.randint(0, 3, (16,), generator=g))


def _setup(momentum: float, warm: int):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=momentum, weight_decay=WD)
    (xt, yt), _ = _data()
    for _ in range(warm):  # earlier steps give the momentum buffer a history
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net, opt


def _val_loss_after_step(lr: float, wd: float, momentum: float, warm: int) -> float:
    net, opt = _setup(momentum, warm)
    (xt, yt), (xv, yv) = _data()
    for group in opt.param_groups:
        group["lr"], group["weight_decay"] = lr, wd
    opt.zero_grad()
    nn.functional.cross_entropy(net(xt), yt).backward()
    opt.step()
    return nn.functional.cross_entropy(net(xv), yv).item()


@pytest.mark.parametrize("momentum,warm", [(0.0, 0), (0.9, 0), (0.9, 3)])
def test_hypergradients_match_finite_differences(momentum, warm):
    eps = 1e-6
    fd_lr = (_val_loss_after_step(LR + eps, WD, momentum, warm) - _val_loss_after_step(LR - eps, WD, momentum, warm)) / (2 * eps)
    fd_wd = (_val_loss_after_step(LR, WD + eps, momentum, warm) - _val_loss_after_step(LR, WD - eps, momentum, warm)) / (2 * eps)
    net, opt = _setup(momentum, warm)
    (xt, yt), val = _data()
    hyper = HyperGradient(lr_bounds=(LR, LR), wd_bounds=(WD, WD), h_lr=0.0)
    opt.zero_grad()
    nn.functional.cross_entropy(net(xt), yt).backward()
    HyperUpdate(opt, hyper, net).step(0, lambda: val)
    d_lr, d_wd = float(hyper.last["d_lr"]), float(hyper.last["d_wd"])
    assert abs(d_lr - fd_lr) <= 1e-4 * abs(fd_lr)
    assert abs(d_wd - fd_wd) <= 1e-4 * abs(fd_wd)


def test_an_annealed_learned_lr_steps_at_the_schedule_fall_and_learns_the_peak():
    shape = CosineSchedule(LR, LR / 10, 4, WD)
    factor = shape.lr(2) / LR  # 0.55: halfway down the cosine
    eps = 1e-6
    fd_peak = (_val_loss_after_step((LR + eps) * factor, WD, 0.9, 2)
               - _val_loss_after_step((LR - eps) * factor, WD, 0.9, 2)) / (2 * eps)
    net, opt = _setup(0.9, 2)
    (xt, yt), val = _data()
    hyper = HyperGradient(lr_bounds=(LR, LR), wd_bounds=(WD, WD), h_lr=0.0)
    update = HyperUpdate(opt, hyper, net, shape=shape)
    update.start_epoch(2)
    opt.zero_grad()
    nn.functional.cross_entropy(net(xt), yt).backward()
    update.step(0, lambda: val)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * factor, rel=1e-12)
    assert update.values(2)["lr"] == pytest.approx(LR * factor, rel=1e-12) and hyper.values()["lr"] == LR
    assert abs(float(hyper.last["d_lr"]) - fd_peak) <= 1e-4 * abs(fd_peak)


def test_hyper_step_takes_the_same_weight_step_as_plain_sgd():
    (xt, yt), val = _data()
    net_a, opt_a = _setup(0.9, 1)
    net_b, opt_b = _setup(0.9, 1)
    hyper = HyperGradient(lr_bounds=(LR, LR), wd_bounds=(WD, WD), h_lr=0.0)
    for net, opt, update in ((net_a, opt_a, WeightUpdate(opt_a)), (net_b, opt_b, HyperUpdate(opt_b, hyper, net_b))):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        update.step(0, lambda: val)
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(a, b)


def test_every_n_steps_and_train_signal():
    (xt, yt), val = _data()
    net, opt = _setup(0.9, 0)
    hyper = HyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-2), h_lr=1e-2, every=2)
    calls = []
    update = HyperUpdate(opt, hyper, net)
    for step in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        update.step(step, lambda: calls.append(1) or val)
    assert len(calls) == 2  # steps 0 and 2
    train_signal = HyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-2), h_lr=1e-2, signal="train")
    update = HyperUpdate(opt, train_signal, net)
    before = train_signal.values()
    for step in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        update.step(step, lambda: pytest.fail("the train signal needs no val batch"))
    assert train_signal.values() != before


@pytest.mark.parametrize("reference", [False, True])
def test_val_pass_leaves_bn_running_stats_alone_unless_reference(reference, tmp_path):
    # Through the builder, as a run wires it: a probe forward, or the reference's plain one.
    from conftest import tiny_config

    from models.genotypes import DARTS_V2
    from models.network import Network
    from search.build import build_weight_update, sections_for
    from search.modes import MODES
    from utils.config import config_from_dict

    cfg, _ = config_from_dict(tiny_config(tmp_path, hpo={"reference_val_pass": reference, "overlap": False}))
    spec = MODES["ista_single_hpo"].stages[0]
    torch.manual_seed(0)
    net = Network(DARTS_V2, init_channels=4, num_classes=3, layers=2).train()
    update = build_weight_update(spec, sections_for(cfg, spec), net, epochs=1)
    x = torch.rand(6, 3, 8, 8)
    y = torch.randint(0, 3, (6,))
    nn.functional.cross_entropy(net(x), y).backward()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    update.step(0, lambda: (torch.rand(6, 3, 8, 8), y))
    moved = [k for k, v in net.state_dict().items() if "running_mean" in k and not torch.equal(v, before[k])]
    assert bool(moved) == reference


@pytest.fixture
def two_threads(torch_threads):
    torch_threads(2)  # the background pass needs at least two


def _hyper_run(background: bool, steps: int = 5, bad_val_at: int | None = None):
    """Steps in the Searcher's order: backward, finish the previous step's val pass, weight step."""
    (xt, yt), val = _data()
    net, opt = _setup(0.9, 0)
    hyper = HyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-2), h_lr=1e-2)
    update = HyperUpdate(opt, hyper, net, background=background)
    pending, threads = [], []
    for step in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        update.finish_pending()
        batch = (val[0][:, :3], val[1]) if step == bad_val_at else val
        update.step(step, lambda: batch)
        pending.append(update._pending is not None)
        threads.append(torch.get_num_threads())
    update.finish_pending()
    return net, hyper, pending, threads


def test_background_val_pass_reproduces_the_sequential_run(two_threads):
    net_seq, hyper_seq, pending_seq, _ = _hyper_run(False)
    net_bg, hyper_bg, pending_bg, threads = _hyper_run(True)
    assert pending_seq == [False] * 5 and pending_bg == [True] * 5
    assert threads == [1] * 5 and torch.get_num_threads() == 2  # the main thread's share, then restored
    assert hyper_bg.values() != HyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-2), h_lr=1e-2).values()
    for key in ("lr", "wd"):
        assert hyper_bg.values()[key] == pytest.approx(hyper_seq.values()[key], rel=1e-12)
    for a, b in zip(net_seq.parameters(), net_bg.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_background_errors_surface_and_restore_threads(two_threads):
    with pytest.raises(RuntimeError):
        _hyper_run(True, steps=3, bad_val_at=1)  # a val batch of the wrong width fails in the helper
    assert torch.get_num_threads() == 2


def test_background_pass_also_takes_the_dot_products_off_the_main_thread(two_threads, monkeypatch):
    import threading

    import hpo.weight_update as weight_update
    callers = []
    real = weight_update.lookahead_hypergradients

    def recording(*args):
        callers.append(threading.current_thread() is threading.main_thread())
        return real(*args)

    monkeypatch.setattr(weight_update, "lookahead_hypergradients", recording)
    _hyper_run(True, steps=3)
    assert callers == [False] * 3
    _hyper_run(False, steps=2)
    assert callers[3:] == [True] * 2


def test_carry_state_hands_the_momentum_buffers_on_but_not_the_lr():
    from hpo.schedule import CosineSchedule
    (xt, yt), _ = _data()
    net, opt = _setup(0.9, 2)  # two steps: momentum buffers exist
    before = WeightUpdate(opt, CosineSchedule(0.1, 0.0, 5, 0.0))
    after = WeightUpdate(torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3),
                         CosineSchedule(0.05, 0.0, 5, 1e-3))
    after.load_carry_state(before.carry_state())
    for p in net.parameters():
        assert torch.equal(after.optimizer.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])
    assert after.lr == 0.05 and after.optimizer.param_groups[0]["weight_decay"] == 1e-3
