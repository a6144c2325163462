"""The score-function (REINFORCE) estimator every sampled policy learns with.

For samples a_n ~ p_theta with rewards r_n, grad E[r] = E[r grad log p(a)]. The surrogate
-mean_n(A_n log p(a_n)) has that gradient (negated, for minimising) with A_n = r_n - b_n; the
leave-one-out baseline b_n = mean of the other samples' rewards does not depend on a_n, so the
estimate stays unbiased while its variance drops.
"""
from __future__ import annotations

import math

import torch


def leave_one_out_advantage(reward: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """r_n minus the mean of the other rewards (zeros for a single sample); `normalize` divides by
    the batch's standard deviation (scale-free, no longer exactly unbiased)."""
    n = reward.numel()
    if n < 2:
        return torch.zeros_like(reward)
    advantage = reward - (reward.sum() - reward) / (n - 1)
    return advantage / (reward.std() + 1e-12) if normalize else advantage


def score_function_loss(log_prob: torch.Tensor, reward: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """-mean_n(A_n log p(a_n)): minimising it raises the probability of high-reward samples."""
    advantage = leave_one_out_advantage(reward.detach().to(log_prob.dtype), normalize)
    return -(advantage * log_prob).mean()


class SplitHalfSignal:
    """Whether the rewards a policy learns from repeat per choice: the correlation, over the choices
    seen in both halves, of the mean per-step-standardised reward on even and on odd steps. Near 0,
    the per-choice differences the policy follows are noise (bench/policy_signal.py). The sums stay
    on the rewards' device, so adding costs no host sync; only `correlation` reads them."""

    def __init__(self):
        self.sums: torch.Tensor | None = None  # [2, choices]: even steps, odd steps
        self.counts: torch.Tensor | None = None
        self.steps = 0

    def add(self, choice: torch.Tensor, reward: torch.Tensor, choices: int) -> None:
        """One step's samples: the index of each one's choice (< `choices`) and its reward."""
        if reward.numel() < 2:
            return
        z = reward.detach().double()
        z = (z - z.mean()) / (z.std() + 1e-12)
        if self.sums is None:
            self.sums = torch.zeros(2, choices, dtype=torch.float64, device=z.device)
            self.counts = torch.zeros_like(self.sums)
        half = self.steps % 2
        self.sums[half].index_add_(0, choice.reshape(-1).to(z.device), z)
        self.counts[half].index_add_(0, choice.reshape(-1).to(z.device), torch.ones_like(z))
        self.steps += 1

    def correlation(self) -> float | None:
        """The split-half correlation (None: fewer than 3 choices seen in both halves yet)."""
        if self.sums is None:
            return None
        seen = (self.counts > 0).all(0)
        if int(seen.sum()) < 3:
            return None
        r = float(torch.corrcoef(self.sums[:, seen] / self.counts[:, seen])[0, 1])
        return r if math.isfinite(r) else None

    def state_dict(self) -> dict:
        """The sums, counts and step count."""
        return {"sums": self.sums, "counts": self.counts, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        self.sums, self.counts, self.steps = state["sums"], state["counts"], state["steps"]
