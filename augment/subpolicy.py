"""Faster-AutoAugment style sub-policies, fully differentiable (the joint DARTS + augmentation paper).

A policy is L sub-policies of K stages. Stage k of sub-policy l holds, for every op O of the table:
op logits z (which op), apply-probability logits (p_O = sigmoid) and magnitudes (mu_O = sigmoid, in
[0, 1]). While training, each sample picks one sub-policy uniformly and every stage outputs the mixture
    X' = sum_O softmax(z / eta)_O * [g_O * O(X; mu_O) + (1 - g_O) * X],
with g_O a relaxed-Bernoulli (Concrete) sample of p_O, so one backward of a loss on the augmented batch
reaches z, p and mu (paper eqs. 1-3, Algorithm 1). Signed ops (geometric and enhance ops) use mu as |m|
with a random sign per sample, as AutoAugment/DHA do, so mu stays in [0, 1] for every op (for the
enhance ops this means the direction, brighter or darker, is random and only the strength is learned).
Ops the op table marks non-differentiable (posterize, solarize) carry their own straight-through
estimator there, so every op passes a gradient to its magnitude.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from augment.apply import random_signs
from augment.ops import FASTER_AA_OPS, OPS
from augment.policy import AugmentPolicy


def _logit(p: float) -> float:
    """Inverse sigmoid of a probability in (0, 1)."""
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


class SubPolicy(AugmentPolicy):
    """L sub-policies x K stages of softmax-mixed, relaxed-Bernoulli-gated ops (Faster-AA); differentiable.

    `temperature` is eta of the op softmax (Faster-AA: 0.05); `gate_temperature` that of the relaxed
    Bernoulli (Faster-AA's default 0.1); `hard_gate` makes the gates 0/1 in the forward pass with the
    relaxed gradient (straight-through). Eval mode is the identity; `augment.replay` samples the exported
    discrete policy for training a final model.
    """

    differentiable = True

    def __init__(self, ops: Sequence[str] = FASTER_AA_OPS, num_subpolicies: int = 10, num_stages: int = 2,
                 temperature: float = 0.05, gate_temperature: float = 0.1, hard_gate: bool = False,
                 init_probability: float = 0.5, init_magnitude: float = 0.5):
        super().__init__()
        unknown = [n for n in ops if n not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; known: {sorted(OPS)}")
        if temperature <= 0 or gate_temperature <= 0:
            raise ValueError("temperature and gate_temperature must be positive")
        if num_subpolicies < 1 or num_stages < 1:
            raise ValueError("num_subpolicies and num_stages must be >= 1")
        self.ops = tuple(ops)
        self.temperature, self.gate_temperature, self.hard_gate = float(temperature), float(gate_temperature), hard_gate
        shape = (num_subpolicies, num_stages, len(self.ops))
        self.op_logits = nn.Parameter(torch.zeros(shape))
        # unconstrained storage squashed by sigmoid: gradients never vanish at a clamp boundary
        self.probability_logits = nn.Parameter(torch.full(shape, _logit(init_probability)))
        self.magnitude_logits = nn.Parameter(torch.full(shape, _logit(init_magnitude)))
        self.register_buffer("signed", torch.tensor([OPS[n].signed for n in self.ops]), persistent=False)

    @property
    def num_subpolicies(self) -> int:
        """L."""
        return self.op_logits.shape[0]

    @property
    def num_stages(self) -> int:
        """K."""
        return self.op_logits.shape[1]

    def op_weights(self) -> torch.Tensor:
        """softmax(z / eta) per (sub-policy, stage): [L, K, n_ops]."""
        return torch.softmax(self.op_logits / self.temperature, dim=-1)

    def apply_probabilities(self) -> torch.Tensor:
        """p_O = sigmoid(probability logits): [L, K, n_ops]."""
        return torch.sigmoid(self.probability_logits)

    def magnitudes(self) -> torch.Tensor:
        """mu_O = sigmoid(magnitude logits) in [0, 1] (|m| for signed ops): [L, K, n_ops]."""
        return torch.sigmoid(self.magnitude_logits)

    def _gates(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Relaxed-Bernoulli samples sigmoid((logit p + logistic noise) / tau), optionally hard-forward."""
        u = torch.rand(logits.shape, device=logits.device, generator=generator).clamp(1e-6, 1.0 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.gate_temperature)
        if not self.hard_gate:
            return soft
        return (soft > 0.5).to(soft.dtype) - soft.detach() + soft

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """One uniformly drawn sub-policy per sample, each stage a differentiable mixture; info = {"subpolicy"}."""
        if not self.training:
            return x, {}
        b, n = x.shape[0], len(self.ops)
        chosen = torch.randint(0, self.num_subpolicies, (b,), device=x.device, generator=generator)
        weights, mags = self.op_weights()[chosen], self.magnitudes()[chosen]  # [B, K, n]
        gates = self._gates(self.probability_logits[chosen], generator)
        signs = torch.where(self.signed, random_signs((b, self.num_stages, n), generator, x.device),
                            torch.ones((), device=x.device))
        m_all = (mags * signs).to(x.dtype)
        for k in range(self.num_stages):
            mixed = x
            for i, name in enumerate(self.ops):
                y = OPS[name].fn(x, m_all[:, k, i])
                # sum_O w [g y + (1 - g) x] = x + sum_O w g (y - x) because the weights sum to 1
                scale = (weights[:, k, i] * gates[:, k, i]).to(x.dtype).view(-1, 1, 1, 1)
                mixed = mixed + scale * (y - x)
            x = mixed
        return x, {"subpolicy": chosen}

    def entropy(self) -> torch.Tensor:
        """Mean over (sub-policy, stage) of the op-selection entropy (ln n_ops when uniform)."""
        w = self.op_weights().detach()
        return -(w * w.clamp_min(1e-12).log()).sum(-1).mean()

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability that a stage picks each op (sub-policies drawn uniformly)."""
        return dict(zip(self.ops, self.op_weights().detach().mean(dim=(0, 1)).tolist()))

    def matrix_image(self) -> torch.Tensor:
        """Op probabilities scaled by their maximum: [1, L * K, n_ops] (row l * K + k)."""
        w = self.op_weights().detach().reshape(-1, len(self.ops))
        return (w / w.max()).float().unsqueeze(0).cpu()

    def export(self, top_k: int = 10) -> dict:
        """JSON: per sub-policy and stage the op probabilities softmax(z / eta), p_O and mu_O; top sub-policies."""
        w, p, mu = (t.detach().cpu() for t in (self.op_weights(), self.apply_probabilities(), self.magnitudes()))
        subpolicies = [[{"op_probabilities": w[l, k].tolist(), "apply_probabilities": p[l, k].tolist(),
                         "magnitudes": mu[l, k].tolist()} for k in range(self.num_stages)]
                       for l in range(self.num_subpolicies)]
        best_p, best_i = w.max(dim=-1)  # [L, K]
        score = best_p.prod(dim=-1)
        order = torch.argsort(score, descending=True)[:top_k].tolist()
        top = [{"subpolicy": l, "ops": [self.ops[i] for i in best_i[l].tolist()], "probability": float(score[l]),
                "apply_probabilities": [float(p[l, k, i]) for k, i in enumerate(best_i[l].tolist())],
                "magnitudes": [float(mu[l, k, i]) for k, i in enumerate(best_i[l].tolist())]} for l in order]
        return {"type": "subpolicy", "ops": list(self.ops), "temperature": self.temperature,
                "signed_magnitudes": "random sign per sample", "subpolicies": subpolicies, "top_subpolicies": top}
