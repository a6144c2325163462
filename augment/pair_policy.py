"""DHA's augmentation policy: a learned distribution over ordered op pairs, applied on device batches.

Reference sections 4.2-4.3: theta is a K x K float64 matrix initialised to 1/K^2; P = one softmax over
all K^2 entries. Each training step draws a relaxed Gumbel-softmax sampling matrix softmax((log P + G)/T)
(never hard, never backpropagated), every sample draws one ordered pair (a, b) from it, and op a then op b
are applied with levels U(0, M) clipped to [0, 8] (a random sign for signed ops). Unlike DHA, the pairs
are drawn on the device inside the step, so every step uses the current theta.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from augment.apply import apply_per_sample, random_signs
from augment.estimators import score_function_loss
from augment.ops import OPS, dha_level_to_magnitude
from augment.policy import AugmentPolicy

MAX_LEVEL = 8.0  # DHA's _MAX_LEVEL: levels above it are clipped
UPDATE_RULES = ("reference", "reinforce")


def sample_pairs(probabilities: torch.Tensor, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw `batch` ordered pairs from a [K, K] probability matrix -> LongTensor[batch, 2] (first, second)."""
    k = probabilities.shape[1]
    flat = torch.multinomial(probabilities.reshape(-1), batch, replacement=True, generator=generator)
    return torch.stack((flat // k, flat % k), dim=1)


def dha_magnitudes(names: Sequence[str], op_index: torch.Tensor, level: torch.Tensor,
                   sign: torch.Tensor, scale: str = "reference") -> torch.Tensor:
    """DHA levels in [0, 8] -> our normalised magnitude of each entry's op (any shape; loops over ops only)."""
    m = torch.zeros_like(level)
    for i, name in enumerate(names):
        m = torch.where(op_index == i, dha_level_to_magnitude(name, level, sign, scale).to(level.dtype), m)
    return m


def apply_pairs(x: torch.Tensor, pairs: torch.Tensor, names: Sequence[str], magnitude: float,
                generator: torch.Generator | None = None, scale: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """Apply op pairs[:, 0] then pairs[:, 1] with levels U(0, magnitude) clipped to [0, 8] -> (x, levels[B, 2])."""
    b = x.shape[0]
    levels = (torch.rand((b, 2), device=x.device, generator=generator) * magnitude).clamp(0.0, MAX_LEVEL)
    signs = random_signs((b, 2), generator, x.device)
    m = dha_magnitudes(names, pairs, levels, signs, scale).to(x.dtype)  # both slots in one pass over the ops
    for j in range(2):
        x = apply_per_sample(x, pairs[:, j], m[:, j], names)
    return x, levels


def pair_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """-sum P log P over all pairs (ln K^2 for a uniform matrix)."""
    return -(probabilities * probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()).sum()


def pair_marginals(names: Sequence[str], probabilities: torch.Tensor) -> dict[str, float]:
    """Probability that a randomly chosen one of the two slots holds each op (row + column sums, halved)."""
    marginal = 0.5 * (probabilities.sum(dim=1) + probabilities.sum(dim=0))
    return dict(zip(names, marginal.tolist()))


def top_pairs(names: Sequence[str], probabilities: torch.Tensor, top_k: int = 10) -> list[dict]:
    """The `top_k` most likely ordered pairs of a [K, K] probability matrix, for JSON."""
    k = len(names)
    top = torch.topk(probabilities.reshape(-1), min(top_k, k * k))
    return [{"ops": [names[i // k], names[i % k]], "probability": p}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]


def pair_matrix_image(probabilities: torch.Tensor) -> torch.Tensor:
    """P scaled by its maximum, [1, K, K] float32 on the host (rows: first op, columns: second op)."""
    p = probabilities.detach()
    return (p / p.max()).float().unsqueeze(0).cpu()


def pair_export(names: Sequence[str], probabilities: torch.Tensor, magnitude: float, top_k: int = 10,
                level_scale: str = "reference") -> dict:
    """The JSON-safe part shared by the learned and the replayed pair policy."""
    return {"type": "pair", "ops": list(names), "pair_probabilities": probabilities.tolist(),
            "magnitude": float(magnitude), "level_scale": level_scale,
            "top_pairs": top_pairs(names, probabilities, top_k)}


class PairPolicy(AugmentPolicy):
    """DHA's op-pair policy; its update rule raises the probability of pairs with HIGH training loss.

    The policy is adversarial, as in DHA: minimising `policy_loss` moves probability towards the op pairs
    that made the training loss large. Two update rules share that direction:
    * "reference" (DHA): pairs drawn from the relaxed Gumbel matrix softmax((log P + G) / T), surrogate
      mean_n(-l_n * P[a_n, b_n]) with detached per-sample losses l_n; the gradient reaches theta only
      through P (no log-probability, no baseline). With SGD at DHA's d_lr it moves theta by about 5e-6
      per step: the entropy stays at its maximum for whole runs.
    * "reinforce" (ours): pairs drawn from P itself, so the score-function estimator
      mean_n(-A_n * log P[a_n, b_n]) differentiates the distribution it sampled (unbiased); A_n is the
      loss minus the mean of the other samples' losses (a leave-one-out baseline), divided by the
      batch's standard deviation (scale-free); `entropy_weight` * H(P) is subtracted (it holds back the
      drift of pure noise), and a hinge 10 * max(0, H_min - H(P)) with H_min = `min_entropy` * ln K^2
      keeps the distribution from collapsing onto a few pairs: an adversarial objective alone drives
      all the mass onto the most destructive pair (measured on digits: entropy 0.12, train top-1 0.11).
      Meant for Adam (the builder's choice).
    `magnitude` is M of the U(0, M) level draw (DHA: `da.magnitude` while searching, `da.magnitude_tune`
    afterwards through `set_magnitude`); it is a setting, not state, so the builder sets it per stage.
    """

    differentiable = False

    def __init__(self, ops: Sequence[str], temperature: float = 2.0, magnitude: float = 1.0,
                 update_rule: str = "reference", entropy_weight: float = 0.1, min_entropy: float = 0.6,
                 level_scale: str = "reference"):
        super().__init__()
        unknown = [n for n in ops if n not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; known: {sorted(OPS)}")
        for name in ops:  # levels are DHA's, so every op needs DHA's level -> magnitude rule; fail now, not mid-run
            dha_level_to_magnitude(name, torch.zeros(1), torch.ones(1), level_scale)
        self.level_scale = level_scale
        if update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {update_rule!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.ops = tuple(ops)
        self.temperature, self.magnitude = float(temperature), float(magnitude)
        self.update_rule, self.entropy_weight = update_rule, float(entropy_weight)
        self.entropy_floor = float(min_entropy) * math.log(len(ops) ** 2)
        k = len(self.ops)
        # float64 as in DHA: with lr 0.02 and 196 entries the per-step changes are tiny
        self.theta = nn.Parameter(torch.full((k, k), 1.0 / k**2, dtype=torch.float64))

    def probabilities(self) -> torch.Tensor:
        """P = softmax over all K^2 entries of theta, as a [K, K] matrix (differentiable)."""
        return torch.softmax(self.theta.reshape(-1), dim=0).view_as(self.theta)

    def sampling_matrix(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """This step's relaxed Gumbel-softmax sample softmax((log P + G) / T), detached, [K, K]."""
        with torch.no_grad():
            logp = torch.log_softmax(self.theta.reshape(-1), dim=0)
            u = torch.rand(logp.shape, dtype=logp.dtype, device=logp.device, generator=generator)
            gumbel = -torch.log(-torch.log(u.clamp(torch.finfo(u.dtype).tiny, 1.0 - 1e-12)))
            return torch.softmax((logp + gumbel) / self.temperature, dim=0).view_as(self.theta)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Per-sample ordered op pairs from a fresh Gumbel sampling matrix; info = {"pairs", "levels"}."""
        if not self.training:
            return x, {}
        matrix = self.probabilities().detach() if self.update_rule == "reinforce" else self.sampling_matrix(generator)
        pairs = sample_pairs(matrix, x.shape[0], generator)
        x, levels = apply_pairs(x, pairs, self.ops, self.magnitude, generator, self.level_scale)
        return x, {"pairs": pairs, "levels": levels}

    def policy_loss(self, per_sample_loss: torch.Tensor, info: dict) -> torch.Tensor:
        """The update rule's surrogate on detached per-sample losses (see the class docstring)."""
        pairs = info["pairs"].to(self.theta.device)
        loss = per_sample_loss.detach().to(self.theta.device, torch.float64)
        if self.update_rule == "reference":
            p = self.probabilities()[pairs[:, 0], pairs[:, 1]]
            return (-loss * p).mean()
        logp_all = torch.log_softmax(self.theta.reshape(-1), dim=0)
        logp = logp_all.view_as(self.theta)[pairs[:, 0], pairs[:, 1]]
        entropy = -(logp_all.exp() * logp_all).sum()
        floor = torch.clamp(self.entropy_floor - entropy, min=0.0)
        return score_function_loss(logp, loss, normalize=True) - self.entropy_weight * entropy + 10.0 * floor

    def set_magnitude(self, magnitude: float) -> None:
        """Set M of the U(0, M) level draw (clipped to 8 per draw)."""
        self.magnitude = float(magnitude)

    def entropy(self) -> torch.Tensor:
        """-sum P log P (ln K^2 at init: 5.278 for K = 14)."""
        return pair_entropy(self.probabilities().detach())

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability of each op over the two slots of a pair."""
        return pair_marginals(self.ops, self.probabilities().detach())

    def matrix_image(self) -> torch.Tensor:
        """P scaled by its maximum, [1, K, K] float32 (rows: first op, columns: second op)."""
        return pair_matrix_image(self.probabilities())

    def export(self, top_k: int = 10) -> dict:
        """JSON: ops, the pair probabilities P (not the Gumbel matrix), magnitude, temperature, top pairs."""
        d = pair_export(self.ops, self.probabilities().detach().cpu(), self.magnitude, top_k, self.level_scale)
        d.update(temperature=self.temperature, update_rule=self.update_rule, entropy_weight=self.entropy_weight,
                 entropy_floor=self.entropy_floor,
                 entropy=float(self.entropy()), max_entropy=math.log(len(self.ops) ** 2))
        return d
