"""BatchNorm2d with a faster CPU training path for channels_last inputs whose channel count is not a
multiple of 16.

PyTorch's CPU channels_last batch-norm kernels collect statistics with a per-channel Welford pass
that is 3-10x slower than a plain reduction when C is small or not a multiple of 16 (measured on
AVX2, 2 threads: C=8 at 32x32, batch 32: 2.4 ms forward + backward, against 0.7 ms for C=16 at the
same size). The supernets here run C=8 and C=24 at full resolution, so the training path below
computes the same batch norm from contiguous [N*H*W, C] row views with two-pass statistics (sum,
then the centred sum of squares), which are fast vectorised reductions. Everything else (CUDA,
NCHW, evaluation, C a multiple of 16) is the stock module; the parameters and buffers are the
stock ones, so checkpoints and `isinstance(m, nn.BatchNorm2d)` are unaffected.
"""
from __future__ import annotations

import torch
from torch import nn



class _RowBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a channels_last x through its [N*H*W, C] row view."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        n, c, h, w = x.shape
        m = n * h * w
        rows = x.permute(0, 2, 3, 1).reshape(m, c)  # a view of the NHWC memory
        mean = rows.sum(0) / m
        centred = rows - mean
        var = torch.linalg.vecdot(centred, centred, dim=0) / m  # biased, as batch norm normalises
        invstd = torch.rsqrt(var + eps)
        y = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        torch.addcmul(bias, centred, invstd * weight, out=y.permute(0, 2, 3, 1).view(m, c))
        ctx.save_for_backward(centred, weight, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_mean, _grad_var):
        centred, weight, invstd = ctx.saved_tensors
        m, c = centred.shape
        rows = grad.permute(0, 2, 3, 1).reshape(m, c)
        sum_g = rows.sum(0)
        sum_gc = torch.linalg.vecdot(rows, centred, dim=0)
        a = weight * invstd
        # dx = a * (g - mean(g) - xhat * mean(g * xhat)), xhat = centred * invstd
        dx = torch.empty_like(grad, memory_format=torch.channels_last)
        dx_rows = dx.permute(0, 2, 3, 1).view(m, c)
        torch.addcmul(-a * sum_g / m, centred, -a * invstd * invstd * sum_gc / m, out=dx_rows)
        dx_rows.addcmul_(rows, a)
        return dx, invstd * sum_gc, sum_g, None


def _synced_batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                       world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Training-mode batch norm over the batches of all `world` ranks together (two-pass statistics,
    each an all-reduce that autograd differentiates), so N processes normalise as one process with
    their batches concatenated. Returns (y, mean, biased var, global count)."""
    from utils.distributed import summed
    c = x.shape[1]
    count = x.numel() // c * world  # every rank holds an equal share
    mean = summed(x.sum((0, 2, 3))) / count
    centred = x - mean.view(1, c, 1, 1)
    var = summed((centred * centred).sum((0, 2, 3))) / count
    y = centred * torch.rsqrt(var + eps).view(1, c, 1, 1)
    if weight is not None:
        y = y * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)
    return y, mean.detach(), var.detach(), count


def set_sync_batchnorm(model: nn.Module, world: int) -> nn.Module:
    """Normalise every training batch over the batches of all `world` ranks (1: per process)."""
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.world = world
    return model


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d; on CPU in training mode with a channels_last input and C % 16 != 0 it takes
    the faster row-view path (same results up to float rounding). `probe=True` (training mode):
    batch statistics, running statistics left alone. With `world` > 1 (`set_sync_batchnorm`) training
    batches are normalised over all ranks' batches (torch's SyncBatchNorm runs on GPUs only)."""

    world = 1

    def _row_path(self, x: torch.Tensor) -> bool:
        return (self.training and x.device.type == "cpu" and x.dim() == 4 and x.shape[1] % 16 != 0
                and x.dtype in (torch.float32, torch.float64) and x.numel() > 0
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """Batch norm of x; `probe` leaves the running statistics untouched."""
        frozen = self.training and probe
        if self.training and self.world > 1:
            y, mean, var, m = _synced_batch_norm(x, self.weight, self.bias, self.eps, self.world)
            if not frozen:
                self._track(mean, var, m)
            return y
        if not self._row_path(x):
            if frozen:  # batch statistics; copies of the running statistics take the update
                # The same op as a training forward, so it saves the same tensors: a recomputed
                # forward (models/activations.py, call_cell) must match the one it replays.
                copies = [None if b is None else b.clone() for b in (self.running_mean, self.running_var)]
                return nn.functional.batch_norm(x, *copies, self.weight, self.bias, True, self.momentum or 0.0,
                                                self.eps)
            return super().forward(x)
        c = x.shape[1]
        weight = self.weight if self.weight is not None else torch.ones(c, dtype=x.dtype, device=x.device)
        bias = self.bias if self.bias is not None else torch.zeros(c, dtype=x.dtype, device=x.device)
        y, mean, var = _RowBatchNorm.apply(x, weight, bias, self.eps)
        if not frozen:
            self._track(mean, var, x.numel() // c)
        return y

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Running statistics from a batch's mean and biased variance over `m` values per channel."""
        if not self.track_running_stats or self.running_mean is None:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_((var * (m / max(m - 1, 1))).to(self.running_var.dtype), factor)
