"""The candidate operations: shapes, the zero op, FactorizedReduce, drop path."""
import pytest
import torch

from models.genotypes import PRIMITIVES_DARTS
from torch import nn

from models.operations import (OPS, DepthwiseConv2d, DilatedDepthwiseConv2d, FactorizedReduce, Identity, Zero,
                               depthwise_conv, drop_path, make_op)


def test_ops_table_matches_primitives():
    assert set(OPS) == set(PRIMITIVES_DARTS)


@pytest.mark.parametrize("name", PRIMITIVES_DARTS)
@pytest.mark.parametrize("size", [8, 7])
def test_every_op_keeps_shape_at_stride_1_and_halves_at_stride_2(name, size):
    torch.manual_seed(0)
    x = torch.rand(2, 4, size, size)
    assert make_op(name, 4, 1).eval()(x).shape == (2, 4, size, size)
    half = (size + 1) // 2
    assert make_op(name, 4, 2).eval()(x).shape == (2, 4, half, half)


def test_zero_and_identity():
    x = torch.rand(2, 4, 6, 6)
    assert isinstance(make_op("skip_connect", 4, 1), Identity)
    assert isinstance(make_op("skip_connect", 4, 2), FactorizedReduce)
    assert torch.equal(make_op("skip_connect", 4, 1)(x), x)
    for stride in (1, 2):
        out = Zero(stride)(x)
        assert out.shape == (2, 4, 6 // stride, 6 // stride) and not out.any()


def test_non_affine_ops_have_no_bn_parameters():
    op = make_op("sep_conv_3x3", 4, 1, affine=False)
    bns = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight is None for m in bns)


def test_make_op_unknown_name():
    with pytest.raises(KeyError):
        make_op("conv_9x9", 4, 1)


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(ValueError):
        FactorizedReduce(4, 5)
    assert FactorizedReduce(3, 6)(torch.rand(1, 3, 5, 5)).shape == (1, 6, 3, 3)


def test_drop_path():
    x = torch.rand(64, 2, 3, 3) + 0.5
    assert drop_path(x, 0.0) is x
    torch.manual_seed(0)
    out = drop_path(x, 0.25)
    kept = out.flatten(1).ne(0).all(dim=1)
    dropped = out.flatten(1).eq(0).all(dim=1)
    assert bool((kept | dropped).all())              # whole samples, never parts
    assert 0 < int(dropped.sum()) < 64
    assert torch.allclose(out[kept], x[kept] / 0.75)  # survivors rescaled


def test_drop_path_of_a_share_drops_what_one_process_with_the_global_batch_would():
    x = torch.rand(12, 2, 3, 3) + 0.5
    torch.manual_seed(3)
    whole = drop_path(x, 0.5)
    shares = []
    for rank in range(3):  # every rank draws from the same seeded stream
        torch.manual_seed(3)
        shares.append(drop_path(x[4 * rank:4 * (rank + 1)], 0.5, shard=(rank, 3)))
    assert torch.equal(torch.cat(shares), whole)
    torch.manual_seed(3)
    assert not torch.equal(drop_path(x[4:8], 0.5), whole[4:8])  # a share's own mask would not be the same


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


def test_sep_conv_uses_the_small_map_depthwise_conv():
    op = make_op("sep_conv_5x5", 4, 1)
    assert sum(isinstance(m, DepthwiseConv2d) for m in op.modules()) == 2
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 4)
    expected = nn.Sequential(*[nn.Conv2d(4, 4, 5, 1, 2, groups=4, bias=False) if isinstance(m, DepthwiseConv2d) else m
                               for m in op.op])
    for a, b in zip(expected, op.op):
        a.load_state_dict(b.state_dict())
    assert torch.allclose(op(x), expected(x), atol=1e-6)


def _reference_factorized_reduce(op: FactorizedReduce, x: torch.Tensor) -> torch.Tensor:
    """The DARTS definition: conv_1 on the even pixels, conv_2 on the odd ones, zero-padded at odd borders."""
    x = torch.relu(x)
    shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    y = torch.cat([nn.functional.conv2d(x, op.conv_1.weight, stride=2),
                   nn.functional.conv2d(shifted, op.conv_2.weight, stride=2)], dim=1)
    return op.bn(y)


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_factorized_reduce_matches_the_darts_definition(size, channels_last):
    torch.manual_seed(0)
    op = FactorizedReduce(3, 6).double()
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    params = [op.conv_1.weight, op.conv_2.weight, op.bn.weight]
    got, want = op(x), _reference_factorized_reduce(op, x)
    assert torch.allclose(got, want, atol=1e-12)
    upstream = torch.randn_like(want)
    for g, h in zip(torch.autograd.grad(got, [x] + params, upstream), torch.autograd.grad(want, [x] + params, upstream)):
        assert torch.allclose(g, h, atol=1e-12)


def _input_grad_layout(op: nn.Module, x: torch.Tensor) -> bool:
    """Whether the gradient reaching op's input (behind a ReLU, as in a cell) is channels_last."""
    seen = []
    x = x.detach().requires_grad_(True)
    r = torch.relu(x)
    r.register_hook(lambda g: seen.append(g.is_contiguous(memory_format=torch.channels_last)))
    op(r).sum().backward()
    return seen[0]


@pytest.mark.parametrize("name,stride", [("skip_connect", 2), ("dil_conv_3x3", 1), ("dil_conv_3x3", 2),
                                         ("dil_conv_5x5", 2), ("sep_conv_3x3", 2), ("none", 2)])
def test_strided_ops_hand_channels_last_gradients_upstream(name, stride):
    # A mixed-layout gradient sends every upstream ReLU/BN/conv backward down a 3-8x slower path.
    torch.manual_seed(0)
    op = make_op(name, 8, stride).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 8, 8).to(memory_format=torch.channels_last)
    if name == "none":  # its gradient is zero but must still keep the layout
        op = nn.Sequential(nn.Identity(), op)
        x = x + 0
    assert _input_grad_layout(op, x)


def test_sub_grid_equals_slicing_forward_and_backward():
    from models.operations import sub_grid
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_(True)
    got, want = sub_grid(x, 2), x[:, :, ::2, ::2]
    assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(want)
    g, = torch.autograd.grad(got, x, upstream)
    h, = torch.autograd.grad(want, x, upstream)
    assert torch.equal(g, h) and g.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name,stride", [("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("dil_conv_3x3", 1),
                                         ("dil_conv_5x5", 2), ("skip_connect", 2)])
def test_an_activated_input_skips_the_ops_own_relu(name, stride):
    torch.manual_seed(0)
    op = make_op(name, 4, stride).double()
    assert op.relu_first
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    assert torch.allclose(op(torch.relu(x), activated=True), op(x), atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_input_conv_is_the_plain_conv(channels_last):
    from models.operations import WholeInputConv2d
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
    from models.operations import global_avg_pool
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_(True)
    y = global_avg_pool(x)
    assert torch.allclose(y, x.mean((2, 3)))
    upstream = torch.randn_like(y)
    g, = torch.autograd.grad(y, x, upstream)
    h, = torch.autograd.grad(x.mean((2, 3)), x, upstream)
    assert torch.allclose(g, h) and g.is_contiguous(memory_format=torch.channels_last)
