"""The batched engine the policies use: each sample gets its own op and magnitude, with no loop over samples."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from augment import functional as AF
from augment.ops import OPS, OpSpec


def random_signs(shape: int | Sequence[int], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform random +-1 of the given shape (directions for signed ops)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (bits * 2 - 1).to(dtype)


def _specs(names: Sequence[str]) -> list[OpSpec]:
    """OpSpecs for names, with an error naming the unknown op."""
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise KeyError(f"unknown augmentation op(s) {unknown}; known: {sorted(OPS)}")
    return [OPS[n] for n in names]


def apply_per_sample(x: Tensor, op_index: Tensor, m: Tensor, names: Sequence[str], fill: Tensor | float = 0.0,
                     grouped: bool | None = None) -> Tensor:
    """Apply op names[op_index[i]] with magnitude m[i] to sample i of x [B, C, H, W]; differentiable in m and x.

    Geometric ops of all samples go through ONE grid_sample with per-sample matrices (`fill` pads them);
    the other ops run once each. `grouped` (default: True on CPU) computes each op only on the samples
    that chose it, which needs the group sizes on the host; False computes every op on the whole batch
    with m = 0 elsewhere and selects with torch.where, which never syncs with an accelerator.
    """
    specs = _specs(names)
    if grouped is None:
        grouped = x.device.type == "cpu"
    b, _, h, w = x.shape
    if b == 0:
        return x
    m = m.to(x.dtype)

    # One matrix per sample: identity unless it chose a geometric op (building all is [B, 2, 3], cheap).
    theta = AF.identity_matrix(b, x.dtype, x.device)
    is_geo = torch.zeros(b, dtype=torch.bool, device=x.device)
    for k, spec in enumerate(specs):
        if spec.affine is not None:
            chose = op_index == k
            theta = torch.where(chose.view(-1, 1, 1), spec.affine(m, h, w), theta)
            is_geo = is_geo | chose
    any_geo = any(spec.affine is not None for spec in specs)

    if not grouped:
        out = torch.where(is_geo.view(-1, 1, 1, 1), AF.affine(x, theta, fill), x) if any_geo else x
        for k, spec in enumerate(specs):
            if spec.affine is None:
                chose = op_index == k
                out = torch.where(chose.view(-1, 1, 1, 1), spec.fn(x, torch.where(chose, m, 0.0)), out)
        return out

    # Each group is computed on its own rows and written back into one output (a single pass over x).
    out = torch.empty_like(x)
    covered = 0
    if any_geo:
        idx = is_geo.nonzero().squeeze(1)
        if idx.numel():
            out.index_copy_(0, idx, AF.affine(x.index_select(0, idx), theta.index_select(0, idx), fill))
            covered += idx.numel()
    for k, spec in enumerate(specs):
        if spec.affine is not None:
            continue
        chose = op_index == k
        idx = chose.nonzero().squeeze(1)
        if not idx.numel():
            continue
        if spec.mixes_batch:
            # The partner image comes from the whole batch, not from the samples that chose the op.
            y = spec.fn(x, torch.where(chose, m, 0.0)).index_select(0, idx)
        else:
            y = spec.fn(x.index_select(0, idx), m.index_select(0, idx))
        out.index_copy_(0, idx, y)
        covered += idx.numel()
    if covered != b:
        raise ValueError(f"op_index must be in [0, {len(names)}) for each of the {b} samples")
    return out
