"""The weight update of one step: a fixed schedule (plain SGD) or SGD with learned lr / wd.

Both run `torch.optim.SGD`, so checkpoints and momentum buffers are the same either way; the
hyper-parameter version sets lr and wd from the HyperGradient before each step and then feeds the
hypergradient back (see hpo/hypergrad.py for the formulas).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hpo.hypergrad import HyperGradient, lookahead_hypergradients

Batch = tuple[torch.Tensor, torch.Tensor]


class SgdUpdate:
    """lr / wd come from the epoch schedule (set at the start of each epoch by the Searcher)."""

    hyper = None

    def __init__(self, optimizer: torch.optim.SGD):
        self.optimizer = optimizer

    def step(self, net: nn.Module, weights: list[nn.Parameter], step: int, val_batch: Callable[[], Batch]) -> None:
        """Apply the weight step with the gradients already in `.grad`."""
        self.optimizer.step()


class HyperUpdate(SgdUpdate):
    """SGD whose lr and wd are learned online by one-step look-ahead hypergradients."""

    def __init__(self, optimizer: torch.optim.SGD, hyper: HyperGradient, reference_val_pass: bool = False):
        super().__init__(optimizer)
        self.hyper = hyper
        self.reference_val_pass = reference_val_pass
        self._norms: list[nn.Module] | None = None

    def _set(self, lr: float, wd: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, wd

    def step(self, net: nn.Module, weights: list[nn.Parameter], step: int, val_batch: Callable[[], Batch]) -> None:
        """SGD step at the learned (lr, wd), then a hypergradient step on them every `every` steps."""
        values = self.hyper.values()
        lr, wd = values["lr"], values["wd"]
        self._set(lr, wd)
        live = [p for p in weights if p.grad is not None]
        update_now = self.hyper.wants_update(step)
        if update_now and self.hyper.signal == "train":
            # Baydin et al.: the fresh training gradient at w_t judges the previous update u_{t-1}.
            prev = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in live]
            pairs = [(p, b) for p, b in zip(live, prev) if b is not None]
            if pairs:
                grads = [p.grad for p, _ in pairs]
                bufs = [b for _, b in pairs]
                self.hyper.apply(*lookahead_hypergradients(grads, bufs, [p.detach() for p, _ in pairs], lr))
            self.optimizer.step()
            return
        momentum = self.optimizer.param_groups[0]["momentum"]
        if update_now and momentum == 0:
            plain = [p.grad + wd * p.detach() for p in live]
        self.optimizer.step()
        if not update_now or self.hyper.signal != "val":
            return
        updates = [self.optimizer.state[p]["momentum_buffer"] for p in live] if momentum else plain
        x_val, y_val = val_batch()
        # Validation forward at w' in train mode (batch statistics) but without touching the running
        # statistics and without drop path: the reference let both leak into this pass.
        if self._norms is None:
            self._norms = [] if self.reference_val_pass else [
                m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        drop = getattr(net, "drop_path_prob", 0.0)
        net.drop_path_prob = drop if self.reference_val_pass else 0.0
        for m in self._norms:  # batch statistics, running statistics left alone
            m.track_running_stats = False
        try:
            logits = net(x_val)
        finally:
            net.drop_path_prob = drop
            for m in self._norms:
                m.track_running_stats = True
        loss = nn.functional.cross_entropy(logits, y_val)
        grads = torch.autograd.grad(loss, live, allow_unused=True)
        # Weights the validation loss does not reach (the auxiliary head: 90% of the weights of a
        # small supernet) add nothing to the dot products; skipping them saves three big copies.
        used = [i for i, g in enumerate(grads) if g is not None]
        if not used:
            return
        self.hyper.apply(*lookahead_hypergradients([grads[i] for i in used], [updates[i] for i in used],
                                                   [live[i].detach() for i in used], lr))
