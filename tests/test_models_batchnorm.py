"""The CPU row-view batch norm: the stock BatchNorm2d's results, gradients and running statistics."""
import pytest
import torch
from torch import nn

from models.batchnorm import BatchNorm2d


def _pair(c: int, **kwargs):
    torch.manual_seed(0)
    ours, stock = BatchNorm2d(c, **kwargs).double(), nn.BatchNorm2d(c, **kwargs).double()
    if ours.weight is not None:
        with torch.no_grad():
            for m in (ours, stock):
                m.weight.copy_(torch.linspace(0.5, 1.5, c))
                m.bias.copy_(torch.linspace(-1, 1, c))
    return ours, stock


@pytest.mark.parametrize("c", [3, 8, 12, 24])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"momentum": None}, {"track_running_stats": False}])
def test_training_path_matches_the_stock_module(c, kwargs):
    ours, stock = _pair(c, **kwargs)
    for step in range(3):  # running statistics accumulate the same way
        x = (3 * torch.randn(4, c, 5, 6, dtype=torch.float64) + 1).to(memory_format=torch.channels_last)
        assert ours._row_path(x)
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y1, y2 = ours(x1), stock(x2)
        assert y1.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(y1, y2, atol=1e-10)
        upstream = torch.randn_like(y2)
        params1 = [p for p in (ours.weight, ours.bias) if p is not None]
        params2 = [p for p in (stock.weight, stock.bias) if p is not None]
        g1 = torch.autograd.grad(y1, [x1] + params1, upstream)
        g2 = torch.autograd.grad(y2, [x2] + params2, upstream)
        assert g1[0].is_contiguous(memory_format=torch.channels_last)
        for a, b in zip(g1, g2):
            assert torch.allclose(a, b, atol=1e-10)
    for name, buffer in stock.named_buffers():
        assert torch.allclose(dict(ours.named_buffers())[name].double(), buffer.double(), atol=1e-12), name
    assert set(ours.state_dict()) == set(stock.state_dict())


def test_other_inputs_take_the_stock_path():
    bn = BatchNorm2d(8)
    assert not bn._row_path(torch.randn(2, 8, 4, 4))  # NCHW
    assert not bn._row_path(torch.randn(2, 16, 4, 4).to(memory_format=torch.channels_last))  # C % 16 == 0
    assert not bn.eval()._row_path(torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last))


def test_float32_training_step_agrees_with_the_stock_module():
    ours, stock = BatchNorm2d(8).float(), nn.BatchNorm2d(8)
    x = (5 * torch.randn(32, 8, 16, 16) + 2).to(memory_format=torch.channels_last)
    assert torch.allclose(ours(x), stock(x), atol=1e-5)
    assert torch.allclose(ours.running_var, stock.running_var, rtol=1e-5)
