"""The DARTS candidate operations as data: `OPS[name](C, stride, affine) -> nn.Module`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.batchnorm import BatchNorm2d


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


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last if `x` is laid out NHWC, else the default (NCHW) format."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


class _GlobalAvgPool(torch.autograd.Function):
    """Mean over H, W whose gradient keeps the input's layout (autograd's own expands to NCHW, which
    would send the whole last cell of a channels_last network down the slow mixed-layout paths)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.layout = x.shape, layout_of(x)
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, c, h, w = ctx.shape
        return (grad / (h * w))[:, :, None, None].expand(n, c, h, w).contiguous(memory_format=ctx.layout)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C], the mean over all positions."""
    return _GlobalAvgPool.apply(x) if x.requires_grad else x.mean((2, 3))


class _SubGrid(torch.autograd.Function):
    """x[:, :, ::step, ::step] as a compact tensor whose gradient keeps the input's layout.

    Autograd's own slice backward scatters into a fresh NCHW tensor, so in a channels_last network
    every op upstream of a strided slice would receive mixed-layout gradients and take oneDNN's
    slow conversion paths (3-8x slower ReLU/BN/conv backward, measured on CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: int) -> torch.Tensor:
        ctx.shape, ctx.step, ctx.layout = x.shape, step, layout_of(x)
        return x[:, :, ::step, ::step].contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        full = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        full[:, :, ::ctx.step, ::ctx.step] = grad
        return full, None


def sub_grid(x: torch.Tensor, step: int) -> torch.Tensor:
    """Every `step`-th row and column of x (from the first), layout kept in forward and backward."""
    return _SubGrid.apply(x, step)


def _fold_nhwc(x: torch.Tensor, d: int) -> torch.Tensor:
    """[B, C, H, W] -> [B*d*d, C, H/d, W/d] channels_last: the d x d interleaved sub-grids as a batch."""
    b, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).reshape(b, h // d, d, w // d, d, c)  # a view for channels_last input
    return nhwc.permute(0, 2, 4, 1, 3, 5).reshape(b * d * d, h // d, w // d, c).permute(0, 3, 1, 2)


def _unfold_nhwc(y: torch.Tensor, b: int, d: int) -> torch.Tensor:
    """Inverse of `_fold_nhwc` for a channels_last y: [B*d*d, C, h, w] -> [B, C, h*d, w*d] channels_last."""
    _, c, h, w = y.shape
    nhwc = y.permute(0, 2, 3, 1).reshape(b, d, d, h, w, c)
    return nhwc.permute(0, 3, 1, 4, 2, 5).reshape(b, h * d, w * d, c).permute(0, 3, 1, 2)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
                   groups: int) -> torch.Tensor:
    """An undilated (grouped) conv; on CPU an input smaller than the kernel is first zero-padded up to it.

    oneDNN's weight gradient takes a reference path when the kernel is larger than the image (a 5x5
    kernel on a 4x4 map, as in the last stage's dilated sub-grids: 4.4 ms instead of 0.9 ms for
    128 x 32 maps). Extra zero rows and columns at the bottom and right only replace implicit
    padding, so after cropping (a negative pad, whose backward keeps the layout) nothing changes.
    """
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2:]
    if x.device.type != "cpu" or (h >= kh and w >= kw):
        return nn.functional.conv2d(x, weight, bias, stride, padding, 1, groups)
    y = nn.functional.conv2d(nn.functional.pad(x, (0, max(0, kw - w), 0, max(0, kh - h))),
                             weight, bias, stride, padding, 1, groups)
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    return nn.functional.pad(y, (0, out_w - y.shape[-1], 0, out_h - y.shape[-2]))


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise (grouped) conv that takes the fast CPU path on maps smaller than its kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p, d = self.stride, self.padding, self.dilation
        if isinstance(p, str) or self.padding_mode != "zeros" or d != (1, 1) \
                or s[0] != s[1] or p[0] != p[1]:
            return super().forward(x)
        return depthwise_conv(x, self.weight, self.bias, s[0], p[0], self.groups)


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A depthwise conv with dilation d, run as plain (undilated) convs on the input's d x d sub-grids.

    A kernel dilated by d only combines pixels whose coordinates agree modulo d, so the conv is an
    undilated conv on each interleaved sub-grid, with padding p / d, and at stride d only the first
    sub-grid is needed. Same weights and results (exact up to float summation order); on CPU the
    undilated kernels are 2-6x faster forward + backward (oneDNN's dilated depthwise backward is its
    slowest conv path). The sub-grids are gathered in NHWC order, so a channels_last network keeps
    one layout for activations and gradients.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, s, p = self.dilation, self.stride, self.padding
        if isinstance(p, str) or self.padding_mode != "zeros" or d[0] != d[1] or s[0] != s[1] or p[0] != p[1] \
                or d[0] == 1 or p[0] % d[0]:
            return super().forward(x)
        d, s, q = d[0], s[0], p[0] // d[0]
        if s == d:  # stride d keeps exactly the outputs that read the first sub-grid
            return depthwise_conv(sub_grid(x, d), self.weight, self.bias, 1, q, self.groups)
        b, _, h, w = x.shape
        if s != 1 or x.device.type != "cpu" or h % d or w % d:
            return super().forward(x)  # GPU kernels handle dilation well; no gain to buy with copies
        y = depthwise_conv(_fold_nhwc(x, d), self.weight, self.bias, 1, q, self.groups)
        return _unfold_nhwc(y, b, d).contiguous(memory_format=layout_of(x))


class WholeInputConv2d(nn.Conv2d):
    """A conv whose kernel covers its whole (unpadded) input, e.g. the auxiliary head's 2x2 on a 2x2
    map: computed as the one matrix product it is (4-7x faster than oneDNN's conv on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.kernel_size) or self.groups != 1 or self.padding_mode != "zeros" \
                or isinstance(self.padding, str) or any(self.padding):
            return super().forward(x)
        if not self.weight.is_contiguous() and self.weight.is_contiguous(memory_format=torch.channels_last):
            # Flatten in memory order (h, w, c): a view of both operands, where flatten(1) would copy
            # the weight (1.5 MB in the auxiliary head) forward and its gradient backward.
            weight = self.weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1)
            y = nn.functional.linear(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), weight, self.bias)
        else:
            y = nn.functional.linear(x.flatten(1), self.weight.flatten(1), self.bias)
        return y[:, :, None, None]


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
