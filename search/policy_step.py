"""How the augmentation policy of a stage is applied and learned, one strategy per rule.

The Searcher calls every hook of every step: `augment` on the training batch, `for_validation`
when a bilevel architecture step draws a validation batch, and `update` with the per-sample
training loss; each rule acts in the hooks it needs.
"""
from __future__ import annotations

import torch

from augment.policy import AugmentPolicy


class PolicyStep:
    """A fixed policy (or none): applied to every training batch, never updated."""

    def __init__(self, policy: AugmentPolicy | None = None, optimizer: torch.optim.Optimizer | None = None):
        self.policy, self.optimizer = policy, optimizer

    def start_epoch(self) -> None:
        """Training mode for the policy (it augments only in training mode)."""
        if self.policy is not None:
            self.policy.train()

    def augment(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The augmented training batch and what `update` needs about it."""
        return self.policy(x) if self.policy is not None else (x, {})

    def for_validation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Optimizer | None]:
        """A validation batch for a bilevel architecture step, and the optimizer of policy
        parameters that learn from that step's backward (None: none do)."""
        return x, None

    def update(self, per_sample_loss: torch.Tensor, info: dict) -> None:
        """Learn from the detached per-sample training loss of the batch `augment` returned."""

    def set_lr(self, lr: float) -> None:
        """The policy optimizer's learning rate from now on."""
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict:
        """The policy and its optimizer."""
        return {"policy": self.policy.state_dict() if self.policy is not None else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        if self.policy is not None and state["policy"] is not None:
            self.policy.load_state_dict(state["policy"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])


class ScoreFunctionStep(PolicyStep):
    """The policy learns from the per-sample training loss of the samples it augmented (DHA)."""

    def update(self, per_sample_loss: torch.Tensor, info: dict) -> None:
        """One optimizer step on the policy's surrogate loss."""
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.policy_loss(per_sample_loss.detach(), info).backward()
        self.optimizer.step()


class ThroughImagesStep(PolicyStep):
    """The policy learns through the augmented validation images, in the backward of the bilevel
    architecture step (Faster-AA style); on training batches it only augments."""

    def augment(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Augment without a graph: the gradient comes from the validation pass."""
        with torch.no_grad():
            return self.policy(x)

    def for_validation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        """The augmented validation batch (with its graph) and the policy optimizer."""
        return self.policy(x)[0], self.optimizer
