"""Fixed learning-rate schedules."""
import math

import pytest

from hpo.schedule import ConstantSchedule, CosineSchedule


def test_cosine_endpoints_and_midpoint():
    s = CosineSchedule(lr_max=0.1, lr_min=0.001, total_epochs=10, weight_decay=3e-4)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(10) == pytest.approx(0.001)
    assert s.lr(5) == pytest.approx((0.1 + 0.001) / 2)
    assert s.lr(3) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * 0.3)) / 2)


def test_cosine_is_monotone_decreasing_and_clamped():
    s = CosineSchedule(0.05, 0.0, 7, 0.0)
    lrs = [s.lr(e) for e in range(8)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert all(0.0 <= v <= 0.05 for v in lrs)
    # past the end it stays at lr_min
    assert s.lr(20) == pytest.approx(0.0)


def test_cosine_with_zero_epochs_does_not_divide_by_zero():
    s = CosineSchedule(0.1, 0.01, 0, 0.0)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(1) == pytest.approx(0.01)


def test_constant_schedule():
    s = ConstantSchedule(0.025, 3e-4)
    assert {s.lr(e) for e in range(0, 50, 7)} == {0.025}
    assert s.values(3) == {"lr": 0.025, "wd": 3e-4}


def test_values_have_lr_and_wd():
    s = CosineSchedule(0.1, 0.0, 4, 5e-4)
    v = s.values(2)
    assert set(v) == {"lr", "wd"}
    assert v["lr"] == pytest.approx(s.lr(2)) and v["wd"] == 5e-4


def test_state_dict_round_trip_is_stateless():
    s = CosineSchedule(0.1, 0.0, 4, 5e-4)
    state = s.state_dict()
    assert state == {}
    other = CosineSchedule(0.1, 0.0, 4, 5e-4)
    other.load_state_dict(state)
    assert [other.lr(e) for e in range(5)] == [s.lr(e) for e in range(5)]
