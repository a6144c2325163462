"""How the augmentation policy of a stage is applied and learned, one strategy per rule.

The Searcher calls every hook of every step: `augment` on the training batch, `watch` around the
training forward, `for_validation` when a bilevel architecture step draws a validation batch, and
`update` with the step's outcome; each rule acts in the hooks it needs.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from augment.estimators import SplitHalfSignal
from augment.policy import AugmentPolicy
from models.amp import widened
from utils.distributed import Distributed


@dataclass
class StepOutcome:
    """What a policy update may learn from: the training batch's detached result and where the
    validation data and the network are."""

    per_sample_loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    val_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    net: nn.Module
    dist: Distributed = Distributed()  # the losses, logits and targets are the gathered global batch's


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

    def watch(self, net: nn.Module):
        """A context around the training forward (a rule may record activations in it)."""
        return contextlib.nullcontext()

    def for_validation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Optimizer | None]:
        """A validation batch for a bilevel architecture step, and the optimizer of policy
        parameters that learn from that step's backward (None: none do)."""
        return x, None

    def update(self, outcome: StepOutcome, info: dict) -> None:
        """Learn from the outcome of training on the batch `augment` returned."""

    def take_val_grads_from(self, weight_update, net: nn.Module) -> None:
        """Use the validation gradients that `weight_update`'s own pass computes, if this rule needs
        any (none here)."""

    def signal(self) -> float | None:
        """How well the per-pair rewards learned from so far repeat (None: not a score-function rule)."""
        return None

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
    """Adversarial (DHA): the policy favours the samples it augmented in proportion to their
    training loss."""

    def __init__(self, policy: AugmentPolicy, optimizer: torch.optim.Optimizer):
        super().__init__(policy, optimizer)
        self.split_half = SplitHalfSignal()

    def reward(self, outcome: StepOutcome) -> torch.Tensor:
        """Per-sample value the policy learns to raise: here the training loss."""
        return outcome.per_sample_loss

    def update(self, outcome: StepOutcome, info: dict) -> None:
        """One optimizer step on the policy's surrogate loss."""
        self.optimizer.zero_grad(set_to_none=True)
        reward = self.reward(outcome).detach()
        self.policy.policy_loss(reward, info).backward()
        self.optimizer.step()
        ops = len(self.policy.ops)
        self.split_half.add(info["pairs"][:, 0] * ops + info["pairs"][:, 1], reward, ops * ops)

    def signal(self) -> float | None:
        """The split-half correlation of the per-pair mean rewards (augment/estimators.py)."""
        return self.split_half.correlation()

    def state_dict(self) -> dict:
        """The policy, its optimizer and the reward statistics."""
        return {**super().state_dict(), "split_half": self.split_half.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        super().load_state_dict(state)
        if "split_half" in state:
            self.split_half.load_state_dict(state["split_half"])


class AffinityStep(ScoreFunctionStep):
    """Affinity (Gontijo-Lopes et al. 2020): the policy favours the pairs whose samples the current
    network still classifies well, i.e. low training loss; the policy's entropy floor keeps the
    diversity that makes an augmentation worth having. Unlike the generalization reward, the
    training loss of a pair repeats from step to step (bench/policy_signal.py), so there is
    something to learn."""

    def reward(self, outcome: StepOutcome) -> torch.Tensor:
        """Per-sample value the policy learns to raise: minus the training loss."""
        return -outcome.per_sample_loss


class GeneralizationStep(ScoreFunctionStep):
    """The policy favours the samples whose gradient step lowers the validation loss most.

    To first order, an SGD step on sample n changes the validation loss by -lr <g_val, g_n>. Both
    gradients are taken at the classifier, where they are closed-form: for features f and logits z,
    dl/dW = (softmax(z) - onehot(y)) f^T. So the reward of sample n is e_n^T G f_n + e_n . g with
    G, g the classifier's weight and bias gradients of the mean validation loss, refreshed from a
    probe forward on a validation batch every `val_every` steps (the classifier moves slowly), or,
    where the hypergradient of lr / wd runs a validation pass anyway, taken from its latest one.
    """

    def __init__(self, policy: AugmentPolicy, optimizer: torch.optim.Optimizer, val_every: int = 4):
        super().__init__(policy, optimizer)
        self.val_every = val_every
        self.calls = 0
        self.val_gradient: tuple[torch.Tensor, torch.Tensor] | None = None
        self._features: torch.Tensor | None = None
        self._owner = 0
        self.shared: Callable[[], list[torch.Tensor] | None] | None = None

    def take_val_grads_from(self, weight_update, net: nn.Module) -> None:
        """Take G, g from the classifier gradients of the hypergradient's validation pass (none: probe)."""
        self.shared = weight_update.share_val_grads(list(net.classifier.parameters()))

    def _record(self, module: nn.Module, inputs: tuple) -> None:
        # The hypergradient's validation pass may run the same classifier in a helper thread.
        if threading.get_ident() == self._owner:
            self._features = inputs[0].detach()

    @contextlib.contextmanager
    def watch(self, net: nn.Module):
        """Record the classifier's input of the forward inside the context."""
        self._owner = threading.get_ident()
        handle = net.classifier.register_forward_pre_hook(self._record)
        try:
            yield
        finally:
            handle.remove()

    @staticmethod
    def _error(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(widened(logits.detach()), dim=1)
        return probabilities - nn.functional.one_hot(targets, logits.shape[1]).to(probabilities.dtype)

    def _refresh(self, outcome: StepOutcome) -> None:
        xv, yv = outcome.val_batch()
        with torch.no_grad(), self.watch(outcome.net):
            error = self._error(outcome.net(xv, probe=True), yv)
        features = widened(self._features)
        self.val_gradient = tuple(outcome.dist.average([error.T @ features / len(yv), error.mean(0)]))

    def reward(self, outcome: StepOutcome) -> torch.Tensor:
        """<validation gradient, sample gradient> at the classifier (larger: the step generalises)."""
        # this step's training forward (every rank's), before the refresh overwrites it
        features = outcome.dist.gather(widened(self._features))
        shared = self.shared() if self.shared is not None else None
        if shared is not None:  # the same rank-mean gradients a probe would give, without a forward
            self.val_gradient = tuple(widened(g) for g in shared)
        elif self.val_gradient is None or self.calls % self.val_every == 0:
            self._refresh(outcome)
        self.calls += 1
        weight, bias = self.val_gradient
        error = self._error(outcome.logits, outcome.targets)
        return ((error @ weight) * features).sum(1) + error @ bias

    def state_dict(self) -> dict:
        """The policy, its optimizer, the step count and the cached validation gradient."""
        return {**super().state_dict(), "calls": self.calls, "val_gradient": self.val_gradient}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        super().load_state_dict(state)
        self.calls, self.val_gradient = state["calls"], state["val_gradient"]


class ThroughImagesStep(PolicyStep):
    """The policy learns through the augmented validation images, in the backward of the bilevel
    architecture step (Faster-AA style); on training batches it only augments."""

    def augment(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Augment without a graph: the gradient comes from the validation pass."""
        with torch.no_grad():
            return self.policy(x)

    def watch(self, net: nn.Module):
        """A context around the training forward (a rule may record activations in it)."""
        return contextlib.nullcontext()

    def for_validation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        """The augmented validation batch (with its graph) and the policy optimizer."""
        return self.policy(x)[0], self.optimizer
