"""Learning rate and weight decay learned by one-step look-ahead hypergradients (DHA, section 5).

The weights take a plain SGD-with-momentum step, the same as `torch.optim.SGD`:

    u = momentum * buf + g + wd * w        (g: the clipped training gradient, buf: the old buffer)
    w' = w - lr * u

Treating the old buffer as a constant (one step of look-ahead, as DHA), the validation loss after the
step has the exact derivatives

    dL_val(w')/dlr = -<grad L_val(w'), u>        dL_val(w')/dwd = -lr <grad L_val(w'), w>

so one extra forward/backward on a validation batch gives both; nothing is unrolled. With
`signal="train"` the next training gradient plays the role of grad L_val (hypergradient descent,
Baydin et al. 2018): no extra pass at all.

lr and wd are float64: at DHA's h_lr of 1e-8 a float32 0.0255 cannot move (its spacing is ~2e-9,
the updates ~1e-10).
"""
from __future__ import annotations

from typing import Sequence

import torch


def lookahead_hypergradients(val_grads: Sequence[torch.Tensor], updates: Sequence[torch.Tensor],
                             new_weights: Sequence[torch.Tensor], lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dlr, dL/dwd) from the validation gradient at w', the update u and the weights w' after the step.

    The weights before the step are w = w' + lr u, so <g, w> = <g, w'> + lr <g, u>: no copy of w is
    kept. Two flat dot products (float32 terms, float64 total) instead of one small op per tensor.
    """
    g = torch.cat([t.reshape(-1) for t in val_grads])
    g_u = torch.dot(g, torch.cat([t.reshape(-1) for t in updates])).double()
    g_w = torch.dot(g, torch.cat([t.reshape(-1) for t in new_weights])).double()
    return -g_u, -lr * (g_w + lr * g_u)


class HyperGradient:
    """Owns the weight lr and wd: float64 scalars, clamped to bounds, initialised at the midpoints,
    moved by their own SGD (the hyper-optimizer, part of `state_dict`)."""

    def __init__(self, *, lr_bounds: tuple[float, float], wd_bounds: tuple[float, float], h_lr: float,
                 h_momentum: float = 0.9, h_nesterov: bool = True, h_weight_decay: float = 5e-4,
                 every: int = 1, signal: str = "val"):
        if signal not in ("val", "train"):
            raise ValueError(f"signal must be 'val' or 'train', got {signal!r}")
        self.lr_bounds, self.wd_bounds = lr_bounds, wd_bounds
        self.every, self.signal = every, signal
        self.lr = torch.tensor(sum(lr_bounds) / 2, dtype=torch.float64, requires_grad=True)
        self.wd = torch.tensor(sum(wd_bounds) / 2, dtype=torch.float64, requires_grad=True)
        self.optimizer = torch.optim.SGD([self.lr, self.wd], lr=h_lr, momentum=h_momentum,
                                         nesterov=h_nesterov and h_momentum > 0, weight_decay=h_weight_decay)
        self.last = {"d_lr": 0.0, "d_wd": 0.0}

    def values(self, epoch: int | None = None) -> dict[str, float]:
        """The current lr and wd as floats (the epoch is ignored: they change every step)."""
        return {"lr": float(self.lr.detach()), "wd": float(self.wd.detach())}

    def set_h_lr(self, h_lr: float) -> None:
        """Switch the hyper-learning rate (DHA's h_lr_tune after the search)."""
        for group in self.optimizer.param_groups:
            group["lr"] = h_lr

    @torch.no_grad()
    def restart(self) -> None:
        """Back to the midpoints of the bounds, with a fresh momentum."""
        self.lr.fill_(sum(self.lr_bounds) / 2)
        self.wd.fill_(sum(self.wd_bounds) / 2)
        self.optimizer.state.clear()

    def wants_update(self, step: int) -> bool:
        """Whether step `step` (0-based) computes a hypergradient."""
        return step % self.every == 0

    def apply(self, d_lr: torch.Tensor, d_wd: torch.Tensor) -> None:
        """One SGD step on (lr, wd) with the given hypergradients, then clamp to the bounds."""
        self.lr.grad = d_lr.detach().to(self.lr.device).reshape(())
        self.wd.grad = d_wd.detach().to(self.wd.device).reshape(())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.lr.clamp_(*self.lr_bounds)
            self.wd.clamp_(*self.wd_bounds)
        self.last = {"d_lr": d_lr, "d_wd": d_wd}

    def state_dict(self) -> dict:
        """lr, wd and the hyper-optimizer's state."""
        return {"lr": self.lr.detach().clone(), "wd": self.wd.detach().clone(), "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        self.lr.copy_(state["lr"])
        self.wd.copy_(state["wd"])
        self.optimizer.load_state_dict(state["optimizer"])
