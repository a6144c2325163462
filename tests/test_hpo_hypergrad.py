"""HyperGradient: float64 values that move at DHA's tiny h_lr, bounds, restart, state."""
import io
import math

import pytest
import torch

from hpo.hypergrad import HyperGradient, lookahead_hypergradients


def test_starts_at_midpoints_and_moves_at_tiny_h_lr_in_float64():
    hyper = HyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), h_lr=1e-8)
    assert all(c.dtype == torch.float64 for c in hyper.coords)
    assert hyper.values() == pytest.approx({"lr": 0.0255, "wd": 3e-4}, rel=1e-12)
    hyper.apply(torch.tensor(-1e-2, dtype=torch.float64), torch.tensor(6e-5, dtype=torch.float64))
    # float32 would round 0.0255 + 1e-10 back to 0.0255 (reference section 5)
    assert hyper.values()["lr"] != 0.0255
    assert torch.tensor(0.0255, dtype=torch.float32) + 1e-10 == torch.tensor(0.0255, dtype=torch.float32)


def test_clamped_to_bounds_and_restart():
    hyper = HyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), h_lr=1.0, h_momentum=0.0)
    hyper.apply(torch.tensor(-100.0, dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64))
    assert hyper.values() == pytest.approx({"lr": 0.05, "wd": 1e-4}, rel=1e-12)
    hyper.restart()
    assert hyper.values() == pytest.approx({"lr": 0.0255, "wd": 3e-4}, rel=1e-12)


def test_state_round_trip():
    a = HyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), h_lr=1e-3)
    for _ in range(3):
        a.apply(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    b = HyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), h_lr=1e-3)
    buffer = io.BytesIO()  # through bytes, as a checkpoint does (no shared momentum tensors)
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    a.apply(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    b.apply(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    assert a.values() == b.values()


def test_lookahead_formula():
    # w' = 4, u = 2, lr = 0.5 -> w = w' + lr u = 5; dL/dlr = -<g, u> = -6; dL/dwd = -lr <g, w> = -7.5
    g, u, w_new = [torch.ones(3)], [torch.full((3,), 2.0)], [torch.full((3,), 4.0)]
    d_lr, d_wd = lookahead_hypergradients(g, u, w_new, lr=0.5)
    assert float(d_lr) == -6.0 and float(d_wd) == -7.5


# --- the scale-free log rule --------------------------------------------------------------------

def _log_run(scale: float, steps: int = 60):
    from hpo.hypergrad import LogHyperGradient
    hyper = LogHyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), step=0.02)
    g = torch.Generator().manual_seed(0)
    trace = []
    for _ in range(steps):
        d = torch.randn(2, generator=g, dtype=torch.float64) + torch.tensor([-0.3, 0.2], dtype=torch.float64)
        hyper.apply(scale * 1e-3 * d[0], scale * 1e-6 * d[1])
        trace.append([math.log(v) for v in hyper.values().values()])
    return torch.tensor(trace, dtype=torch.float64)


def test_log_rule_trajectory_does_not_depend_on_the_loss_scale():
    base = _log_run(1.0)
    for scale in (10.0, 0.1, 1e4):
        torch.testing.assert_close(_log_run(scale), base, rtol=0, atol=1e-9)
    lr_path = base[:, 0]
    assert lr_path.max() - lr_path.min() > 0.3  # it moves: up, with a mean-negative dL/dlr


def test_log_rule_starts_at_midpoints_and_stays_in_bounds():
    from hpo.hypergrad import LogHyperGradient
    hyper = LogHyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), step=0.5)
    assert hyper.values() == pytest.approx({"lr": 0.0255, "wd": 3e-4}, rel=1e-12)
    for _ in range(50):
        hyper.apply(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert hyper.values() == pytest.approx({"lr": 0.05, "wd": 1e-4}, rel=1e-12)
    hyper.restart()
    assert hyper.values() == pytest.approx({"lr": 0.0255, "wd": 3e-4}, rel=1e-12)


def test_log_rule_through_the_weight_update_is_scale_free(monkeypatch):
    # The whole path (validation pass, look-ahead, log step) with the validation loss times 10.
    from hpo.hypergrad import LogHyperGradient
    from hpo.weight_update import HyperUpdate
    real = torch.nn.functional.cross_entropy

    def run(scale):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        hyper = LogHyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-2), step=0.05)
        update = HyperUpdate(opt, hyper, net)
        g = torch.Generator().manual_seed(1)
        logs = []
        for step in range(20):
            x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
            val = (torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
            opt.zero_grad()
            real(net(x), y).backward()
            with monkeypatch.context() as m:
                m.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: scale * real(*a, **k))
                update.step(step, lambda: val)
            logs.append([math.log(v) for v in hyper.values().values()])
        return torch.tensor(logs, dtype=torch.float64)

    torch.testing.assert_close(run(10.0), run(1.0), rtol=0, atol=1e-9)
