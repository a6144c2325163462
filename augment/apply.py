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
    if grouped:
        return _grouped(x, op_index, m, specs, fill)

    # Masked path: every sample through one grid_sample (identity matrix unless it chose a geometric
    # op, which `affine` returns exactly) and through every other op with m = 0, then select.
    theta = AF.identity_matrix(b, x.dtype, x.device)
    is_geo = torch.zeros(b, dtype=torch.bool, device=x.device)
    for k, spec in enumerate(specs):
        if spec.affine is not None:
            chose = op_index == k
            theta = torch.where(chose.view(-1, 1, 1), spec.affine(m, h, w), theta)
            is_geo = is_geo | chose
    out = x
    if any(spec.affine is not None for spec in specs):
        out = torch.where(is_geo.view(-1, 1, 1, 1), AF.affine(x, theta, fill), x)
    for k, spec in enumerate(specs):
        if spec.affine is None:
            chose = op_index == k
            out = torch.where(chose.view(-1, 1, 1, 1), spec.fn(x, torch.where(chose, m, 0.0)), out)
    return out


def _grouped(x: Tensor, op_index: Tensor, m: Tensor, specs: list[OpSpec], fill: Tensor | float) -> Tensor:
    """apply_per_sample computing each op only on the rows that chose it (one host sync for the group sizes)."""
    b, _, h, w = x.shape
    counts = torch.bincount(op_index, minlength=len(specs))
    if counts.numel() != len(specs) or int(counts.sum()) != b:
        raise ValueError(f"op_index must be in [0, {len(specs)}) for each of the {b} samples")
    groups = torch.argsort(op_index, stable=True).split(counts.tolist())
    out = torch.empty_like(x)
    geo_rows, geo_theta = [], []
    for k, (spec, rows) in enumerate(zip(specs, groups)):
        if not rows.numel():
            continue
        if spec.affine is not None:
            # Gather every geometric sample first: they share one grid_sample below.
            geo_rows.append(rows)
            geo_theta.append(spec.affine(m.index_select(0, rows), h, w))
        elif spec.mixes_batch:
            # The partner image comes from the whole batch, not from the samples that chose the op.
            out.index_copy_(0, rows, spec.fn(x, torch.where(op_index == k, m, 0.0)).index_select(0, rows))
        else:
            out.index_copy_(0, rows, spec.fn(x.index_select(0, rows), m.index_select(0, rows)))
    if geo_rows:
        rows = torch.cat(geo_rows)
        out.index_copy_(0, rows, AF.affine(x.index_select(0, rows), torch.cat(geo_theta), fill))
    return out
