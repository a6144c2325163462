"""Architecture updates: first-order on validation, DARTS unrolled second order, or joint.

Each step owns its optimizer over `net.arch_parameters()` only. The Searcher calls both hooks of
every step: `before_weights` (bilevel updates, on a validation batch, through `update`) and
`after_backward` (joint updates, from the gradients of the training loss the weights also use);
each rule acts in one of them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from hpo.weight_update import WeightUpdate
from search.policy_step import PolicyStep
from utils.distributed import Distributed

Batch = tuple[torch.Tensor, torch.Tensor]


def make_arch_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with betas (0.5, 0.999), as in DARTS and ISTA-NAS."""
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)


def _params_of(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def _step_with(params: list[torch.Tensor], grads, optimizer: torch.optim.Optimizer) -> None:
    """Install `grads` (None = no gradient) on `params` and take one step of `optimizer`."""
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class ArchStep:
    """No architecture update (discrete networks, frozen supernets). With several processes each
    gradient a rule computes on its share of a batch is averaged over the ranks (`dist`)."""

    def __init__(self, optimizer: torch.optim.Optimizer | None = None, dist: Distributed = Distributed()):
        self.optimizer, self.dist = optimizer, dist

    def before_weights(self, net: nn.Module, train: Batch, val_batch: Callable[[], Batch],
                       weight_update: WeightUpdate, policy_step: PolicyStep) -> None:
        """Hook before the training forward (bilevel rules act here)."""

    def zero_grad(self) -> None:
        """Clear the arch gradients before the training backward."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        """Hook after the training backward (joint rules act here)."""

    def state_dict(self) -> dict:
        """Optimizer state."""
        return {"optimizer": self.optimizer.state_dict()} if self.optimizer else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore optimizer state."""
        if self.optimizer and state:
            self.optimizer.load_state_dict(state["optimizer"])


class JointArchStep(ArchStep):
    """Single-level (DHA): the arch parameters step on the training loss of the same backward."""

    def after_backward(self) -> None:
        """Adam step on the gradients the training backward left on the arch parameters."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class BilevelArchStep(ArchStep):
    """An update on a validation batch before the weight step; a differentiable augmentation policy
    that produced the validation batch (`policy_step.for_validation`) learns from the same backward."""

    def before_weights(self, net: nn.Module, train: Batch, val_batch: Callable[[], Batch],
                       weight_update: WeightUpdate, policy_step: PolicyStep) -> None:
        """Fetch the validation batch and the lr of the coming weight step, then `update`."""
        weight_update.finish_pending()  # the update reads the lr and writes the architecture
        lr = weight_update.lr
        xv, yv = val_batch()
        xv, co_optimizer = policy_step.for_validation(xv)
        self.update(net, train, (xv, yv), lr, weight_update.optimizer, co_optimizer)

    def update(self, net: nn.Module, train: Batch, val: Batch, lr: float, weight_optimizer: torch.optim.Optimizer,
               co_optimizer: torch.optim.Optimizer | None = None) -> None:
        """One architecture step (and one step of `co_optimizer`'s parameters)."""
        raise NotImplementedError


class FirstOrderArchStep(BilevelArchStep):
    """Bilevel, first order: one Adam step on the validation loss at the current weights."""

    def update(self, net: nn.Module, train: Batch, val: Batch, lr: float, weight_optimizer: torch.optim.Optimizer,
               co_optimizer: torch.optim.Optimizer | None = None) -> None:
        """Gradient of the validation loss for the arch (and co-optimised) parameters only."""
        params = [p for p in net.arch_parameters() if p.requires_grad]
        extra = _params_of(co_optimizer)
        loss = nn.functional.cross_entropy(net(val[0]), val[1])
        grads = self.dist.average(torch.autograd.grad(loss, params + extra, allow_unused=True))
        _step_with(params, grads[: len(params)], self.optimizer)
        if co_optimizer is not None:
            _step_with(extra, grads[len(params):], co_optimizer)


class SecondOrderArchStep(BilevelArchStep):
    """DARTS unrolled update, computed with `functional_call` (no model copy).

    w' = w - xi (momentum * buf + dL_train/dw + wd * w); grad_alpha = dL_val(w', a)/da
    - xi * [dL_train(w+, a)/da - dL_train(w-, a)/da] / (2 eps), w+- = w +- eps dL_val(w')/dw',
    eps = 0.01 / ||dL_val(w')/dw'|| (the finite difference divided by 2 eps: the reference code
    got this scaling wrong).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, momentum: float, weight_decay: float,
                 dist: Distributed = Distributed()):
        super().__init__(optimizer, dist)
        self.momentum, self.weight_decay = momentum, weight_decay

    def update(self, net: nn.Module, train: Batch, val: Batch, lr: float, weight_optimizer: torch.optim.Optimizer,
               co_optimizer: torch.optim.Optimizer | None = None) -> None:
        """Set the arch gradients by the unrolled formula and take one optimizer step.

        Co-optimised parameters (a differentiable policy) get the first-order part dL_val(w')/dp.
        """
        # functional_call swaps the parameters in only while its forward runs: a cell recomputed
        # in backward would run on the real ones.
        recompute, net.recompute_cells = getattr(net, "recompute_cells", 0), 0
        try:
            self._update(net, train, val, lr, weight_optimizer, co_optimizer)
        finally:
            net.recompute_cells = recompute

    def _update(self, net: nn.Module, train: Batch, val: Batch, lr: float, weight_optimizer: torch.optim.Optimizer,
                co_optimizer: torch.optim.Optimizer | None) -> None:
        arch = {n: p for n, p in net.named_parameters() if any(p is a for a in net.arch_parameters())}
        weights = {n: p for n, p in net.named_parameters() if n not in arch and p.requires_grad}
        # Extra forwards must not move the BN running statistics of the real network.
        buffers = {n: b.clone() for n, b in net.named_buffers()}

        def loss_at(w: dict, a: dict, batch: Batch) -> torch.Tensor:
            logits = functional_call(net, {**w, **a, **buffers}, (batch[0],))
            return nn.functional.cross_entropy(logits, batch[1])

        w_vals = list(weights.values())
        g_train = self.dist.average(torch.autograd.grad(loss_at(weights, arch, train), w_vals, allow_unused=True))
        g_train = [torch.zeros_like(w) if g is None else g for g, w in zip(g_train, w_vals)]
        unrolled = {}
        for (name, w), g in zip(weights.items(), g_train):
            buf = weight_optimizer.state.get(w, {}).get("momentum_buffer")
            step = g + self.weight_decay * w
            if buf is not None:
                step = step + self.momentum * buf
            unrolled[name] = (w - lr * step).detach().requires_grad_(True)
        a_vals = list(arch.values())
        extra = _params_of(co_optimizer)
        loss_val = loss_at(unrolled, arch, val)
        grads = self.dist.average(torch.autograd.grad(loss_val, a_vals + list(unrolled.values()) + extra,
                                                      allow_unused=True))
        n_a, n_w = len(a_vals), len(unrolled)
        d_arch, d_w = grads[:n_a], grads[n_a:n_a + n_w]
        d_w = [torch.zeros_like(w) if g is None else g for g, w in zip(d_w, unrolled.values())]
        if co_optimizer is not None:
            _step_with(extra, grads[n_a + n_w:], co_optimizer)
        hvp = self.hessian_vector(loss_at, weights, arch, train, d_w, self.dist)
        for a, da, h in zip(a_vals, d_arch, hvp):
            a.grad = (torch.zeros_like(a) if da is None else da) - lr * h
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def hessian_vector(loss_at, weights: dict, arch: dict, batch: Batch, vector,
                       dist: Distributed = Distributed()) -> list[torch.Tensor]:
        """Finite-difference d/da [dL/dw . v] at the current weights."""
        norm = torch.sqrt(sum((v * v).sum() for v in vector))
        eps = 0.01 / (norm + 1e-12)
        plus = {n: (w + eps * v).detach() for (n, w), v in zip(weights.items(), vector)}
        minus = {n: (w - eps * v).detach() for (n, w), v in zip(weights.items(), vector)}
        a_vals = list(arch.values())
        # allow_unused: a network with only reduction cells never uses alpha_normal.
        g_plus = dist.average(torch.autograd.grad(loss_at(plus, arch, batch), a_vals, allow_unused=True))
        g_minus = dist.average(torch.autograd.grad(loss_at(minus, arch, batch), a_vals, allow_unused=True))
        return [torch.zeros_like(a) if gp is None else (gp - gm) / (2 * eps)
                for a, gp, gm in zip(a_vals, g_plus, g_minus)]
