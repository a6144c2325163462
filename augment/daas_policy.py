"""DAAS's augmentation policy: a categorical distribution over sub-policies, learned by policy gradient.

A sub-policy is an ordered op pair (a, b) with a magnitude bin for each: p(a, b, i, j) =
P[a, b] Q[a, i] Q[b, j], P = softmax over the K x K pair logits, Q[k] = softmax over op k's M bin
logits. Bin i is magnitude i / (M - 1) of the op's full range (bin 0: the identity; a random sign for
signed ops). Every image draws its own sub-policy from p itself, so the score-function estimator
(augment/estimators.py) differentiates the distribution it sampled: the policy parameters get
gradient only from that term, never through the images. A policy loaded from an export (replay) is
the same module with its logits frozen.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from augment.apply import apply_per_sample, random_signs
from augment.estimators import score_function_loss
from augment.ops import OPS
from augment.pair_policy import pair_entropy, pair_marginals, pair_matrix_image, sample_pairs, top_pairs
from augment.policy import AugmentPolicy


class SubPolicyDistribution(AugmentPolicy):
    """p(a, b, i, j) = P[a, b] Q[a, i] Q[b, j]; info = {"pairs": [B, 2], "bins": [B, 2]}."""

    differentiable = False

    def __init__(self, ops: Sequence[str], bins: int = 10):
        super().__init__()
        unknown = [n for n in ops if n not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; known: {sorted(OPS)}")
        if bins < 2:
            raise ValueError(f"need at least 2 magnitude bins, got {bins}")
        self.ops, self.bins = tuple(ops), bins
        k = len(self.ops)
        self.pair_logits = nn.Parameter(torch.zeros(k, k, dtype=torch.float64))
        self.bin_logits = nn.Parameter(torch.zeros(k, bins, dtype=torch.float64))
        self.register_buffer("signed", torch.tensor([OPS[n].signed for n in self.ops]), persistent=False)

    def pair_probabilities(self) -> torch.Tensor:
        """P, [K, K] (differentiable)."""
        return torch.softmax(self.pair_logits.reshape(-1), dim=0).view_as(self.pair_logits)

    def bin_probabilities(self) -> torch.Tensor:
        """Q, [K, M]: per op, the probability of each magnitude bin (differentiable)."""
        return torch.softmax(self.bin_logits, dim=1)

    def log_prob(self, info: dict) -> torch.Tensor:
        """log p of each image's sub-policy, [B]."""
        pairs, bins = info["pairs"].to(self.pair_logits.device), info["bins"].to(self.pair_logits.device)
        log_pair = torch.log_softmax(self.pair_logits.reshape(-1), dim=0).view_as(self.pair_logits)
        log_bin = torch.log_softmax(self.bin_logits, dim=1)
        return log_pair[pairs[:, 0], pairs[:, 1]] + log_bin[pairs, bins].sum(dim=1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """One sub-policy per image, drawn from p; op a then op b at their bins' magnitudes."""
        if not self.training:
            return x, {}
        b = x.shape[0]
        with torch.no_grad():
            pairs = sample_pairs(self.pair_probabilities().to(x.device), b, generator)
            q = self.bin_probabilities().to(x.device)[pairs.reshape(-1)]  # [2B, M]
            bins = torch.multinomial(q, 1, generator=generator).view(b, 2)
        m = bins.to(x.dtype) / (self.bins - 1)
        signs = random_signs((b, 2), generator, x.device).to(x.dtype)
        m = torch.where(self.signed.to(x.device)[pairs], m * signs, m)
        for j in range(2):
            x = apply_per_sample(x, pairs[:, j], m[:, j], self.ops)
        return x, {"pairs": pairs, "bins": bins}

    def policy_loss(self, reward: torch.Tensor, info: dict) -> torch.Tensor:
        """REINFORCE with a leave-one-out baseline on the per-image rewards (higher: better)."""
        return score_function_loss(self.log_prob(info), reward.to(self.pair_logits.device))

    def entropy(self) -> torch.Tensor:
        """Entropy of the pair distribution (ln K^2 at init; the bins add their own, not counted here)."""
        return pair_entropy(self.pair_probabilities().detach())

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability of each op over the two slots of a pair."""
        return pair_marginals(self.ops, self.pair_probabilities().detach())

    def matrix_image(self) -> torch.Tensor:
        """P scaled by its maximum, [1, K, K]."""
        return pair_matrix_image(self.pair_probabilities())

    def mean_magnitudes(self) -> dict[str, float]:
        """Per op, the expected magnitude (fraction of its full range) under Q."""
        levels = torch.arange(self.bins, dtype=torch.float64, device=self.bin_logits.device) / (self.bins - 1)
        return dict(zip(self.ops, (self.bin_probabilities().detach() @ levels).tolist()))

    def export(self, top_k: int = 10) -> dict:
        """JSON: ops, P, Q, the expected magnitude per op and the most likely pairs."""
        p = self.pair_probabilities().detach().cpu()
        return {"type": "pair_bins", "ops": list(self.ops), "bins": self.bins, "pair_probabilities": p.tolist(),
                "bin_probabilities": self.bin_probabilities().detach().cpu().tolist(),
                "mean_magnitudes": self.mean_magnitudes(), "entropy": float(self.entropy()),
                "max_entropy": math.log(len(self.ops) ** 2), "top_pairs": top_pairs(self.ops, p, top_k)}

    @classmethod
    def from_probabilities(cls, ops: Sequence[str], pair_probabilities: torch.Tensor,
                           bin_probabilities: torch.Tensor) -> "SubPolicyDistribution":
        """A frozen policy (replay) with the given P and Q."""
        policy = cls(ops, bins=bin_probabilities.shape[1])
        with torch.no_grad():
            tiny = torch.finfo(torch.float64).tiny
            policy.pair_logits.copy_(pair_probabilities.double().clamp_min(tiny).log())
            policy.bin_logits.copy_(bin_probabilities.double().clamp_min(tiny).log())
        policy.requires_grad_(False)
        return policy
