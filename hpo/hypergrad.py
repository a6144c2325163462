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

import math
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


def start_value(bounds: tuple[float, float]) -> float:
    """Where a learned lr or wd starts (and restarts): the midpoint of its bounds, as DHA."""
    return (bounds[0] + bounds[1]) / 2


class HyperGradient:
    """Owns the weight lr and wd, float64, clamped to bounds, initialised at the midpoints.

    DHA's rule (this class): SGD with `h_lr` on (lr, wd) themselves. Its step is the hypergradient
    times h_lr, so the right h_lr depends on the loss scale and the network (DHA's 1e-8 leaves lr at
    its start value for whole runs). `LogHyperGradient` is the scale-free alternative.
    """

    def __init__(self, *, lr_bounds: tuple[float, float], wd_bounds: tuple[float, float], h_lr: float = 0.0,
                 h_momentum: float = 0.9, h_nesterov: bool = True, h_weight_decay: float = 5e-4,
                 every: int = 1, signal: str = "val"):
        if signal not in ("val", "train"):
            raise ValueError(f"signal must be 'val' or 'train', got {signal!r}")
        self.lr_bounds, self.wd_bounds = lr_bounds, wd_bounds
        self.every, self.signal = every, signal
        # The optimised coordinates: (lr, wd) here, (log lr, log wd) in LogHyperGradient.
        self.coords = [torch.tensor(self._to_coord(start_value(b)), dtype=torch.float64, requires_grad=True)
                       for b in (lr_bounds, wd_bounds)]
        self._low = [self._to_coord(b[0]) for b in (lr_bounds, wd_bounds)]
        self._high = [self._to_coord(b[1]) for b in (lr_bounds, wd_bounds)]
        self.optimizer = self._make_optimizer(h_lr, h_momentum, h_nesterov, h_weight_decay)
        self.last = {"d_lr": 0.0, "d_wd": 0.0}

    def _to_coord(self, value: float) -> float:
        return value

    def _to_value(self, coord: torch.Tensor) -> torch.Tensor:
        return coord

    def _coord_gradient(self, d_value: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        return d_value

    def _make_optimizer(self, h_lr, h_momentum, h_nesterov, h_weight_decay) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.coords, lr=h_lr, momentum=h_momentum, nesterov=h_nesterov and h_momentum > 0,
                               weight_decay=h_weight_decay)

    def values(self, epoch: int | None = None) -> dict[str, float]:
        """The current lr and wd as floats (the epoch is ignored: they change every step)."""
        # exp(log v) may round a bound a hair outside itself: clamp the values too
        lr, wd = (min(max(float(self._to_value(c.detach())), b[0]), b[1])
                  for c, b in zip(self.coords, (self.lr_bounds, self.wd_bounds)))
        return {"lr": lr, "wd": wd}

    def set_h_lr(self, h_lr: float) -> None:
        """Switch the hyper-optimizer's step size (DHA's h_lr_tune after the search)."""
        for group in self.optimizer.param_groups:
            group["lr"] = h_lr

    @torch.no_grad()
    def restart(self) -> None:
        """Back to the midpoints of the bounds, with a fresh optimizer state."""
        for c, b in zip(self.coords, (self.lr_bounds, self.wd_bounds)):
            c.fill_(self._to_coord(start_value(b)))
        self.optimizer.state.clear()

    def wants_update(self, step: int) -> bool:
        """Whether step `step` (0-based) computes a hypergradient."""
        return step % self.every == 0

    def apply(self, d_lr: torch.Tensor, d_wd: torch.Tensor) -> None:
        """One optimizer step with the hypergradients dL/dlr, dL/dwd, then clamp to the bounds."""
        for c, d in zip(self.coords, (d_lr, d_wd)):
            d = d.detach().to(c.device, torch.float64).reshape(())
            c.grad = self._coord_gradient(d, c.detach())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for c, low, high in zip(self.coords, self._low, self._high):
                c.clamp_(low, high)
        self.last = {"d_lr": d_lr, "d_wd": d_wd}

    def state_dict(self) -> dict:
        """The coordinates and the hyper-optimizer's state."""
        return {"coords": [c.detach().clone() for c in self.coords], "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        for c, saved in zip(self.coords, state["coords"]):
            c.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])


class LogHyperGradient(HyperGradient):
    """The scale-free rule: Adam on (log lr, log wd), dL/dlog lr = lr dL/dlr. Adam divides each
    coordinate's step by the running RMS of its gradient, so multiplying the loss (or the
    hypergradient) by any factor leaves the trajectory unchanged, and `step` is about the largest
    relative change of lr or wd per update, whatever the network, data or loss scale."""

    def __init__(self, *, lr_bounds: tuple[float, float], wd_bounds: tuple[float, float], step: float = 0.01,
                 every: int = 1, signal: str = "val"):
        super().__init__(lr_bounds=lr_bounds, wd_bounds=wd_bounds, h_lr=step, every=every, signal=signal)

    def _to_coord(self, value: float) -> float:
        return math.log(value)

    def _to_value(self, coord: torch.Tensor) -> torch.Tensor:
        return coord.exp()

    def _coord_gradient(self, d_value: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        return d_value * coord.exp()  # dL/dlog v = v dL/dv

    def _make_optimizer(self, h_lr, h_momentum, h_nesterov, h_weight_decay) -> torch.optim.Optimizer:
        # eps far below any hypergradient's scale, so that it cannot set one
        return torch.optim.Adam(self.coords, lr=h_lr, betas=(0.9, 0.999), eps=1e-300)
