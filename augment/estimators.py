"""The score-function (REINFORCE) estimator every sampled policy learns with.

For samples a_n ~ p_theta with rewards r_n, grad E[r] = E[r grad log p(a)]. The surrogate
-mean_n(A_n log p(a_n)) has that gradient (negated, for minimising) with A_n = r_n - b_n; the
leave-one-out baseline b_n = mean of the other samples' rewards does not depend on a_n, so the
estimate stays unbiased while its variance drops.
"""
from __future__ import annotations

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
