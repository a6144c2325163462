"""RandAugment and TrivialAugment on device batches: per-sample random ops, nothing learned.

Both draw an independent op (and sign) for every sample and apply it through `apply_per_sample`, so a
batch costs one pass per op of the table, not one per image.
"""
from __future__ import annotations

from typing import Sequence

import torch

from augment.apply import apply_per_sample, random_signs
from augment.ops import DHA_OPS, OPS
from augment.policy import AugmentPolicy

RANDAUGMENT_LEVELS = 30.0  # torchvision: magnitude bins 0..30


def _check_ops(ops: Sequence[str] | None) -> tuple[str, ...]:
    """Default to DHA's 14-op table; reject unknown names."""
    ops = tuple(ops) if ops is not None else tuple(DHA_OPS[14])
    unknown = [n for n in ops if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation ops {unknown}; known: {sorted(OPS)}")
    if not ops:
        raise ValueError("a baseline policy needs at least one op")
    return ops


def _signed_magnitudes(names: Sequence[str], op_index: torch.Tensor, m: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
    """|m| with a random sign for samples whose op is signed."""
    signed = torch.tensor([OPS[n].signed for n in names], device=op_index.device)[op_index]
    signs = random_signs(tuple(op_index.shape), generator, op_index.device, m.dtype)
    return torch.where(signed, m * signs, m)


class RandAugmentPolicy(AugmentPolicy):
    """RandAugment: `num_ops` uniformly drawn ops per sample, all at magnitude `magnitude` / 30 (torchvision scale)."""

    def __init__(self, ops: Sequence[str] | None = None, num_ops: int = 2, magnitude: float = 9.0):
        super().__init__()
        self.ops, self.num_ops, self.magnitude = _check_ops(ops), int(num_ops), float(magnitude)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Apply num_ops random ops per sample; info = {"ops": LongTensor[B, num_ops]}."""
        if not self.training:
            return x, {}
        b = x.shape[0]
        chosen = torch.randint(0, len(self.ops), (b, self.num_ops), device=x.device, generator=generator)
        level = min(max(self.magnitude / RANDAUGMENT_LEVELS, 0.0), 1.0)
        for j in range(self.num_ops):
            m = _signed_magnitudes(self.ops, chosen[:, j], torch.full((b,), level, device=x.device), generator)
            x = apply_per_sample(x, chosen[:, j], m.to(x.dtype), self.ops)
        return x, {"ops": chosen}

    def set_magnitude(self, magnitude: float) -> None:
        """Set the RandAugment magnitude (0..30)."""
        self.magnitude = float(magnitude)

    def op_probabilities(self) -> dict[str, float]:
        """Uniform."""
        return {n: 1.0 / len(self.ops) for n in self.ops}

    def export(self) -> dict:
        """`{"type": "randaugment", "ops", "num_ops", "magnitude"}`."""
        return {"type": "randaugment", "ops": list(self.ops), "num_ops": self.num_ops, "magnitude": self.magnitude}


class TrivialAugmentPolicy(AugmentPolicy):
    """TrivialAugment: one uniformly drawn op per sample at a uniform magnitude in [0, 1], random sign."""

    def __init__(self, ops: Sequence[str] | None = None):
        super().__init__()
        self.ops = _check_ops(ops)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Apply one random op per sample; info = {"ops": LongTensor[B, 1]}."""
        if not self.training:
            return x, {}
        b = x.shape[0]
        chosen = torch.randint(0, len(self.ops), (b,), device=x.device, generator=generator)
        m = _signed_magnitudes(self.ops, chosen, torch.rand((b,), device=x.device, generator=generator), generator)
        return apply_per_sample(x, chosen, m.to(x.dtype), self.ops), {"ops": chosen.unsqueeze(1)}

    def op_probabilities(self) -> dict[str, float]:
        """Uniform."""
        return {n: 1.0 / len(self.ops) for n in self.ops}

    def export(self) -> dict:
        """`{"type": "trivialaugment", "ops"}`."""
        return {"type": "trivialaugment", "ops": list(self.ops)}
