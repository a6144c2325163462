"""The CPU stand-ins of models/fast_ops.py: the same values and gradients as the plain ops, layouts kept."""
import pytest
import torch
from torch import nn

from models.fast_ops import DilatedDepthwiseConv2d, WholeInputConv2d, depthwise_conv, global_avg_pool, sub_grid


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dilated_depthwise_conv_equals_the_plain_dilated_conv(kernel, stride, size, channels_last):
    torch.manual_seed(0)
    conv = DilatedDepthwiseConv2d(4, 4, kernel, stride, padding=kernel - 1, dilation=2, groups=4, bias=False).double()
    x = torch.randn(3, 4, size, size, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = nn.functional.conv2d(x, conv.weight, None, stride, kernel - 1, 2, 4)
    got = conv(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-12)
    upstream = torch.randn_like(expected)
    gx, gw = torch.autograd.grad(expected, (x, conv.weight), upstream)
    hx, hw = torch.autograd.grad(got, (x, conv.weight), upstream)
    assert torch.allclose(hx, gx, atol=1e-12) and torch.allclose(hw, gw, atol=1e-12)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel,size", [(5, 4), (5, 2), (3, 2), (5, 1), (3, 3), (5, 7)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_on_maps_smaller_than_the_kernel_is_the_plain_conv(kernel, size, stride, channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 4, size, size + 1, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(4, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    expected = nn.functional.conv2d(x, weight, bias, stride, kernel // 2, 1, 4)
    got = depthwise_conv(x, weight, bias, stride, kernel // 2, 4)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-12)
    upstream = torch.randn_like(expected)
    for g, h in zip(torch.autograd.grad(got, (x, weight, bias), upstream, retain_graph=True),
                    torch.autograd.grad(expected, (x, weight, bias), upstream)):
        assert torch.allclose(g, h, atol=1e-12)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.autograd.grad(got, x, upstream.contiguous(memory_format=torch.channels_last))[0] \
            .is_contiguous(memory_format=torch.channels_last)


def test_sub_grid_equals_slicing_forward_and_backward():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_(True)
    got, want = sub_grid(x, 2), x[:, :, ::2, ::2]
    assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(want)
    g, = torch.autograd.grad(got, x, upstream)
    h, = torch.autograd.grad(want, x, upstream)
    assert torch.equal(g, h) and g.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_input_conv_is_the_plain_conv(channels_last):
    torch.manual_seed(0)
    conv = WholeInputConv2d(6, 5, 2, bias=True).double()
    x = torch.randn(3, 6, 2, 2, dtype=torch.float64)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    got = conv(x)
    want = nn.functional.conv2d(x, conv.weight, conv.bias)
    assert got.shape == want.shape == (3, 5, 1, 1) and torch.allclose(got, want, atol=1e-12)
    upstream = torch.randn_like(want)
    grads = torch.autograd.grad(got, (x, conv.weight, conv.bias), upstream)
    for g, h in zip(grads, torch.autograd.grad(want, (x, conv.weight, conv.bias), upstream)):
        assert torch.allclose(g, h, atol=1e-12)
    # A channels_last weight is read in memory order: its gradient needs no layout copy either.
    assert grads[1].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    bigger = torch.randn(1, 6, 3, 3, dtype=torch.float64)  # any other input size: the ordinary conv
    assert torch.allclose(conv(bigger), nn.functional.conv2d(bigger, conv.weight, conv.bias), atol=1e-12)


def test_global_avg_pool_is_the_mean_and_keeps_the_gradient_layout():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_(True)
    y = global_avg_pool(x)
    assert torch.allclose(y, x.mean((2, 3)))
    upstream = torch.randn_like(y)
    g, = torch.autograd.grad(y, x, upstream)
    h, = torch.autograd.grad(x.mean((2, 3)), x, upstream)
    assert torch.allclose(g, h) and g.is_contiguous(memory_format=torch.channels_last)
