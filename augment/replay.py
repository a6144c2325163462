"""Replay any exported policy (`policy.json`) as a fixed, non-learnable batch transform.

Usable in any training code, with the same forward signature as the searched policies:

    import json
    from augment.replay import from_export
    policy = from_export(json.load(open("policy.json"))).to(device)
    for x, y in loader:                                   # x: float [B, C, H, W] in [0, 1]
        x_aug, _ = policy(x.to(device))

Pair exports sample ordered pairs from the exported pair probabilities P (the softmax, not a Gumbel
sampling matrix) with levels U(0, magnitude) clipped to [0, 8]; sub-policy exports draw a sub-policy
uniformly per sample and, per stage, an op from its op probabilities, applied with its apply probability
at its magnitude (random sign for signed ops); pair_bins exports (DAAS) draw a pair and a magnitude
bin per op from their exported probabilities; baselines rebuild themselves; `{"type": "none"}` and the
pipeline's `{"type": "fixed", ...}` (crop/flip/Cutout only, done by `augment.fixed`) are the identity.
Keys a type does not need are ignored, so a policy.json may carry extra fields.
"""
from __future__ import annotations

from typing import Sequence

import torch

from augment.apply import apply_per_sample, random_signs
from augment.baselines import RandAugmentPolicy, TrivialAugmentPolicy
from augment.daas_policy import SubPolicyDistribution
from augment.ops import OPS
from augment.pair_policy import apply_pairs, pair_entropy, pair_export, pair_marginals, sample_pairs
from augment.policy import AugmentPolicy, IdentityPolicy
from utils.errors import UserError


class FixedPairPolicy(AugmentPolicy):
    """Ordered op pairs drawn from fixed pair probabilities; info = {"pairs": LongTensor[B, 2], "levels"}."""

    def __init__(self, ops: Sequence[str], pair_probabilities: torch.Tensor, magnitude: float,
                 level_scale: str = "reference"):
        super().__init__()
        self.ops, self.magnitude, self.level_scale = tuple(ops), float(magnitude), level_scale
        p = torch.as_tensor(pair_probabilities, dtype=torch.float64)
        self.register_buffer("probabilities", p / p.sum())

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Apply one sampled pair per sample."""
        if not self.training:
            return x, {}
        pairs = sample_pairs(self.probabilities.to(x.device), x.shape[0], generator)
        x, levels = apply_pairs(x, pairs, self.ops, self.magnitude, generator, self.level_scale)
        return x, {"pairs": pairs, "levels": levels}

    def set_magnitude(self, magnitude: float) -> None:
        """Set M of the U(0, M) level draw (DHA retrains with `magnitude_tune`)."""
        self.magnitude = float(magnitude)

    def entropy(self) -> torch.Tensor:
        """-sum P log P."""
        return pair_entropy(self.probabilities)

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability of each op over the two slots."""
        return pair_marginals(self.ops, self.probabilities)

    def export(self) -> dict:
        """The same format as `PairPolicy.export` (without the learning settings)."""
        return pair_export(self.ops, self.probabilities.cpu(), self.magnitude, level_scale=self.level_scale)


class FixedSubPolicy(AugmentPolicy):
    """Discrete Faster-AA replay; info = {"subpolicy": [B], "ops": [B, K], "applied": BoolTensor[B, K]}."""

    def __init__(self, ops: Sequence[str], op_probabilities: torch.Tensor, apply_probabilities: torch.Tensor,
                 magnitudes: torch.Tensor):
        super().__init__()
        self.ops = tuple(ops)
        w = torch.as_tensor(op_probabilities, dtype=torch.float32)
        self.register_buffer("op_weights", w / w.sum(-1, keepdim=True))  # [L, K, n]
        self.register_buffer("apply_probs", torch.as_tensor(apply_probabilities, dtype=torch.float32).clamp(0, 1))
        self.register_buffer("mags", torch.as_tensor(magnitudes, dtype=torch.float32).clamp(0, 1))
        self.register_buffer("signed", torch.tensor([OPS[n].signed for n in self.ops]), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Per sample: a uniform sub-policy, then per stage one sampled op applied with its probability."""
        if not self.training:
            return x, {}
        b, (num_sub, num_stages, n) = x.shape[0], self.op_weights.shape
        chosen = torch.randint(0, num_sub, (b,), device=x.device, generator=generator)
        weights = self.op_weights.to(x.device)[chosen]  # [B, K, n]
        ops = torch.multinomial(weights.reshape(-1, n), 1, generator=generator).view(b, num_stages)
        applied = torch.rand((b, num_stages), device=x.device, generator=generator) \
            < self.apply_probs.to(x.device)[chosen].gather(2, ops.unsqueeze(2)).squeeze(2)
        signs = random_signs((b, num_stages), generator, x.device)
        for k in range(num_stages):
            m = self.mags.to(x.device)[chosen, k, ops[:, k]]
            m = torch.where(self.signed.to(x.device)[ops[:, k]], m * signs[:, k], m)
            y = apply_per_sample(x, ops[:, k], m.to(x.dtype), self.ops)
            x = torch.where(applied[:, k].view(-1, 1, 1, 1), y, x)
        return x, {"subpolicy": chosen, "ops": ops, "applied": applied}

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability that a stage picks each op."""
        return dict(zip(self.ops, self.op_weights.mean(dim=(0, 1)).tolist()))

    def export(self) -> dict:
        """The `subpolicies` part of the `SubPolicy.export` format."""
        return {"type": "subpolicy", "ops": list(self.ops),
                "subpolicies": [[{"op_probabilities": self.op_weights[l, k].tolist(),
                                  "apply_probabilities": self.apply_probs[l, k].tolist(),
                                  "magnitudes": self.mags[l, k].tolist()}
                                 for k in range(self.op_weights.shape[1])] for l in range(self.op_weights.shape[0])]}


def _require(d: dict, *keys: str) -> None:
    """A one-line error naming the missing keys of an export."""
    missing = [k for k in keys if k not in d]
    if missing:
        raise UserError(f"policy export of type {d.get('type')!r} lacks key(s) {missing}")


def _check_ops(names: Sequence[str]) -> None:
    """A one-line error for op names the op table does not know."""
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise UserError(f"policy export names unknown augmentation ops {unknown}; known: {sorted(OPS)}")


def from_export(d: dict, magnitude: float | None = None) -> AugmentPolicy:
    """Rebuild a fixed policy from an `export()` dict; `magnitude` overrides a pair export's level bound."""
    kind = d.get("type")
    if kind in ("none", "fixed"):
        return IdentityPolicy()
    if kind == "pair":
        _require(d, "ops", "pair_probabilities", "magnitude")
        _check_ops(d["ops"])
        p = torch.tensor(d["pair_probabilities"], dtype=torch.float64)
        if p.shape != (len(d["ops"]), len(d["ops"])) or (p < 0).any() or p.sum() <= 0:
            raise UserError(f"pair_probabilities must be a non-negative {len(d['ops'])}x{len(d['ops'])} matrix")
        # exports written before level scales existed used DHA's mapping
        return FixedPairPolicy(d["ops"], p, d["magnitude"] if magnitude is None else magnitude,
                               d.get("level_scale", "reference"))
    if kind == "subpolicy":
        _require(d, "ops", "subpolicies")
        _check_ops(d["ops"])
        try:
            tables = [torch.tensor([[stage[key] for stage in sub] for sub in d["subpolicies"]], dtype=torch.float32)
                      for key in ("op_probabilities", "apply_probabilities", "magnitudes")]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"malformed subpolicies in policy export: {e}") from None
        if tables[0].dim() != 3 or tables[0].shape[-1] != len(d["ops"]) or any(t.shape != tables[0].shape
                                                                               for t in tables):
            raise UserError("subpolicies must be [L][K] stages with one value per op in each list")
        return FixedSubPolicy(d["ops"], *tables)
    if kind == "pair_bins":
        _require(d, "ops", "pair_probabilities", "bin_probabilities")
        _check_ops(d["ops"])
        k = len(d["ops"])
        try:
            p = torch.tensor(d["pair_probabilities"], dtype=torch.float64)
            q = torch.tensor(d["bin_probabilities"], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise UserError(f"malformed pair_bins policy export: {e}") from None
        if p.shape != (k, k) or q.dim() != 2 or q.shape[0] != k or q.shape[1] < 2 or (p < 0).any() or (q < 0).any() \
                or p.sum() <= 0 or (q.sum(1) <= 0).any():
            raise UserError(f"pair_bins export needs a non-negative {k}x{k} pair_probabilities and a {k}xM "
                            "bin_probabilities (M >= 2)")
        return SubPolicyDistribution.from_probabilities(d["ops"], p / p.sum(), q / q.sum(1, keepdim=True))
    if kind == "randaugment":
        _check_ops(d.get("ops", []))
        return RandAugmentPolicy(d.get("ops"), d.get("num_ops", 2), d.get("magnitude", 9.0))
    if kind == "trivialaugment":
        _check_ops(d.get("ops", []))
        return TrivialAugmentPolicy(d.get("ops"))
    raise UserError(f"unknown policy export type {kind!r}; expected none, fixed, pair, pair_bins, subpolicy, randaugment "
                    "or trivialaugment")
