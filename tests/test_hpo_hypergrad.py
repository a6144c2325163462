"""HyperGradient: float64 values that move at DHA's tiny h_lr, bounds, restart, state."""
import io

import pytest
import torch

from hpo.hypergrad import HyperGradient, lookahead_hypergradients


def test_starts_at_midpoints_and_moves_at_tiny_h_lr_in_float64():
    hyper = HyperGradient(lr_bounds=(1e-3, 0.05), wd_bounds=(1e-4, 5e-4), h_lr=1e-8)
    assert hyper.lr.dtype == torch.float64
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
