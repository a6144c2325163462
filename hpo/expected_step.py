"""The look-ahead of the expected step: lr judged without charging a step for its own noise.

The one-step look-ahead differentiates the validation loss after the step just taken,
w' = w - lr u, at dL/dlr = -<grad L_val(w'), u>. Since grad L_val(w') ~ grad L_val(w) - lr H u, its mean
holds lr * E[n^T H n] for the minibatch noise n of u: the step's noise counted as a cost of lr. That
term is what pulls a greedy learned lr down in every run (short-horizon bias, Wu et al. 2018), though
over many steps the noise averages out while the progress adds up. Here the u paired with
grad L_val(w') is another draw of the same step, u~ = momentum * u_old + g_next + wd * w, with g_next
the next batch's gradient (whose noise is independent of n): then the mean is the derivative for the
noise-free step, -<grad L_val(w), E u> + lr E[u]^T H E[u], but for one term: g_next is taken at w',
not w, which adds lr <grad L_val, H E[g]> (the curvature along the step counted twice; a little
caution about lr that, unlike the noise term, does not grow as batches get smaller). Conditional on
the history, u_old and w are fixed, so the noise of step t's own batch is the only noise the one-step
rule charges. It costs no extra pass; the validation gradients of step t wait, as two weight-sized
copies, for step t+1's gradient.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ExpectedStep:
    """The state between a hypergradient's validation pass (step t) and its completion (step t+1).

    Tensors are keyed by the weight's index in `weights`, so a checkpoint can hold them."""

    def __init__(self, weights: Sequence[nn.Parameter]):
        self.weights = list(weights)
        self._index = {id(p): i for i, p in enumerate(self.weights)}
        self.before: dict[int, torch.Tensor] = {}  # momentum * u_old + wd * w of step t, by weight index
        self.factor = 1.0  # the schedule's factor of step t (dL/d learned lr = factor * dL/dlr)
        self.waiting: tuple[dict[int, torch.Tensor], torch.Tensor] | None = None  # (val grads, dL/dwd)

    @torch.no_grad()
    def record(self, live: Sequence[nn.Parameter], optimizer: torch.optim.SGD, wd: float, factor: float) -> None:
        """Before step t's optimizer step: the parts of its update that are not this batch's gradient."""
        momentum = optimizer.param_groups[0]["momentum"]
        self.before, self.factor = {}, factor
        for p in live:
            buffer = optimizer.state.get(p, {}).get("momentum_buffer")
            part = wd * p.detach()
            self.before[self._index[id(p)]] = part if buffer is None or not momentum else part + momentum * buffer

    def indices(self, params: Sequence[nn.Parameter]) -> list[int]:
        """The weights' indices (what a checkpoint can hold in place of the parameters)."""
        return [self._index[id(p)] for p in params]

    def hold(self, indices: Sequence[int], val_grads: Sequence[torch.Tensor], d_wd: torch.Tensor) -> None:
        """Step t's validation gradients of the weights `indices` (after the step) and dL/dwd."""
        self.waiting = (dict(zip(indices, val_grads)), d_wd)

    @torch.no_grad()
    def complete(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """At step t+1, with its (clipped, rank-mean) gradients in `.grad`: (dL/d learned lr, dL/dwd)
        of step t, or None if nothing waits."""
        if self.waiting is None:
            return None
        val_grads, d_wd = self.waiting
        self.waiting = None
        keys = [i for i in val_grads if i in self.before and self.weights[i].grad is not None]
        if not keys:
            return None
        g = torch.cat([val_grads[i].reshape(-1) for i in keys])
        u = torch.cat([(self.before[i] + self.weights[i].grad).reshape(-1) for i in keys])
        return -torch.dot(g, u).double() * self.factor, d_wd

    def state_dict(self) -> dict:
        """What waits between two steps."""
        return {"before": self.before, "factor": self.factor, "waiting": self.waiting}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        self.before, self.factor, self.waiting = state["before"], state["factor"], state["waiting"]
