"""Exact stand-ins for standard ops that are slow on CPU in a channels_last network: the same
results (up to float summation order), gradients kept in the input's layout, and the oneDNN paths
that are many times slower (dilated depthwise backward, kernels larger than the map) avoided.
"""
from __future__ import annotations

import torch
from torch import nn


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
