"""The DARTS candidate operations as data: `OPS[name](C, stride, affine) -> nn.Module`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.batchnorm import BatchNorm2d
from models.fast_ops import DepthwiseConv2d, DilatedDepthwiseConv2d, layout_of, sub_grid


class Layers(nn.Sequential):
    """nn.Sequential that passes `probe` to its batch norms (a probe forward uses batch statistics
    and leaves the running ones alone); its state_dict keys are nn.Sequential's."""

    def forward(self, x: torch.Tensor, probe: bool = False, skip_first: bool = False) -> torch.Tensor:
        """The layers in order (`skip_first`: x already went through the first one)."""
        for i, layer in enumerate(self):
            if i or not skip_first:
                x = layer(x, probe) if isinstance(layer, BatchNorm2d) else layer(x)
        return x


class ReluFirst(nn.Module):
    """An op whose first layer is a ReLU. A cell that feeds one state to several such ops computes
    relu(state) once and calls `op(relu_state, activated=True)` (see models.cells.Activations)."""

    relu_first = True

    def forward(self, x: torch.Tensor, activated: bool = False, probe: bool = False) -> torch.Tensor:
        """activated=True: x already went through this op's ReLU; probe: see `Layers`."""
        return self.op.forward(x, probe, skip_first=activated)  # no second module call per op


class ReLUConvBN(ReluFirst):
    """ReLU, k x k conv, BatchNorm: the cell preprocessing block (1x1) of DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = Layers(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            BatchNorm2d(c_out, affine=affine),
        )


class DilConv(ReluFirst):
    """ReLU, depthwise dilated k x k conv, pointwise conv, BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = Layers(
            nn.ReLU(inplace=False),
            DilatedDepthwiseConv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            BatchNorm2d(c_out, affine=affine),
        )


class SepConv(ReluFirst):
    """Two stacked depthwise-separable blocks; only the first one strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        # The DARTS layout, so published parameter counts are reproduced exactly.
        self.op = Layers(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=True),  # on the BN output, which nothing else reads (BN's backward needs its input)
            DepthwiseConv2d(c_in, c_in, kernel, 1, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            BatchNorm2d(c_out, affine=affine),
        )


class Identity(nn.Module):
    """Skip connection at stride 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The `none` op: a zero tensor of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return sub_grid(x, self.stride).mul(0.0)


class _TwoSubGrids(torch.autograd.Function):
    """[B, C, H, W] (H, W even) -> [B, 2C, H/2, W/2]: the even-even pixels, then the odd-odd ones.

    Gathered in NHWC order with one copy; the backward scatters into a zero tensor of the input's
    layout. Runs FactorizedReduce's two strided 1x1 convs as one grouped stride-1 conv: oneDNN's
    stride-2 1x1 backward is several times slower, and slicing would hand NCHW gradients upstream.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ctx.shape, ctx.layout = x.shape, layout_of(x)
        cells = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c)
        grids = torch.cat([cells[:, :, 0, :, 0], cells[:, :, 1, :, 1]], dim=-1)
        return grids.permute(0, 3, 1, 2).contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        b, c, h, w = ctx.shape
        full = grad.new_zeros((b, h // 2, 2, w // 2, 2, c))
        g = grad.permute(0, 2, 3, 1)
        full[:, :, 0, :, 0] = g[..., :c]
        full[:, :, 1, :, 1] = g[..., c:]
        return full.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous(memory_format=ctx.layout)


class FactorizedReduce(ReluFirst):
    """Halve the resolution without losing pixels: two offset 1x1 stride-2 convs, concatenated."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, activated: bool = False, probe: bool = False) -> torch.Tensor:
        """conv_1 on the even-even pixels, conv_2 on the odd-odd ones (zero beyond an odd border)."""
        if not activated:
            x = self.relu(x)
        _, _, h, w = x.shape
        if h % 2 == 0 and w % 2 == 0:
            weight = torch.cat([self.conv_1.weight, self.conv_2.weight], dim=0)
            return self.bn(nn.functional.conv2d(_TwoSubGrids.apply(x), weight, groups=2), probe)
        # Odd sizes: shift by one (a negative pad crops the first row and column, a zero one keeps
        # the sizes aligned); unlike slicing, pad's backward keeps the layout.
        shifted = nn.functional.pad(x, (-1, 1, -1, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1), probe)


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}


def make_op(name: str, channels: int, stride: int, affine: bool = True) -> nn.Module:
    """Build the candidate operation `name` for `channels` channels at `stride`."""
    if name not in OPS:
        raise KeyError(f"unknown operation {name!r}; known: {', '.join(OPS)}")
    return OPS[name](channels, stride, affine)


def drop_path(x: torch.Tensor, drop_prob: float, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Zero whole samples with probability `drop_prob` and rescale the rest (DARTS drop path).

    shard (rank, world): x is this rank's equal share of a global batch; the mask is drawn for the
    whole global batch (every rank draws the same numbers) and sliced, so several processes drop what
    one process with the global batch would."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    rank, world = shard
    n = x.shape[0]
    mask = torch.empty(n * world, 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)[rank * n:(rank + 1) * n]
    return x.div(keep).mul(mask)
