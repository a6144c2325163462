"""The candidate operations: shapes, the zero op, FactorizedReduce, drop path."""
import pytest
import torch
from torch import nn

from models.fast_ops import DepthwiseConv2d
from models.genotypes import PRIMITIVES_DARTS
from models.operations import OPS, FactorizedReduce, Identity, Zero, drop_path, make_op


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


@pytest.mark.parametrize("name,stride", [("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("dil_conv_3x3", 1),
                                         ("dil_conv_5x5", 2), ("skip_connect", 2)])
def test_an_activated_input_skips_the_ops_own_relu(name, stride):
    torch.manual_seed(0)
    op = make_op(name, 4, stride).double()
    assert op.relu_first
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    assert torch.allclose(op(torch.relu(x), activated=True), op(x), atol=1e-12)
