"""The augmentation-policy interface every searched, baseline and replayed policy implements.

A policy is an `nn.Module` applied to a float batch in [0, 1] that is already on the device, inside the
training step, so it always reads the current policy parameters (DHA's data-loader workers saw a
stale copy; reference section 4.3). The training loop only needs this class:

    x_aug, info = policy(x, generator)            # info: what the update rule needs (e.g. sampled pairs)
    if policy.differentiable:                      # gradient reaches the policy through the images
        loss.backward()                            # ... together with the network's backward
    else:                                          # score-function rule on the detached per-sample loss
        policy.policy_loss(per_sample_loss, info).backward()
"""
from __future__ import annotations

import torch
from torch import nn


class AugmentPolicy(nn.Module):
    """Base class: a (possibly learnable) batch augmentation with a uniform interface for the search loop."""

    # True when the policy parameters receive gradients through the augmented images (one backward);
    # False when they are learned by a score-function rule (`policy_loss`) or not learned at all.
    differentiable: bool = False

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """x: [B, C, H, W] in [0, 1] -> (augmented batch, info); eval mode returns (x, {})."""
        raise NotImplementedError

    def policy_parameters(self) -> list[nn.Parameter]:
        """The learnable policy parameters (for the policy optimizer); empty for fixed policies."""
        return [p for p in self.parameters() if p.requires_grad]

    def policy_loss(self, per_sample_loss: torch.Tensor, info: dict) -> torch.Tensor:
        """Surrogate loss whose gradient updates the policy (score-function policies only)."""
        if self.differentiable:
            raise RuntimeError(f"{type(self).__name__} is differentiable: its gradient comes through the "
                               "augmented images, there is no separate policy loss")
        raise RuntimeError(f"{type(self).__name__} has no learnable parameters and no policy loss")

    def set_magnitude(self, magnitude: float) -> None:
        """Change the magnitude setting (search vs after-search); no-op where magnitudes are learned."""

    def entropy(self) -> torch.Tensor:
        """Entropy of the policy's op distribution (0 for policies without one)."""
        return torch.zeros(())

    def op_probabilities(self) -> dict[str, float]:
        """Marginal probability of each op (for TensorBoard scalars); empty when not defined."""
        return {}

    def matrix_image(self) -> torch.Tensor | None:
        """A [1, H, W] image in [0, 1] of the policy's probabilities (for TensorBoard), or None."""
        return None

    def export(self) -> dict:
        """JSON-safe description that `augment.replay.from_export` turns back into a fixed policy."""
        raise NotImplementedError


class IdentityPolicy(AugmentPolicy):
    """No policy ops (the `{"type": "none"}` export): returns the batch unchanged."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Return x unchanged."""
        return x, {}

    def export(self) -> dict:
        """`{"type": "none"}`."""
        return {"type": "none"}
