"""The weight update of one step: a fixed schedule (plain SGD) or SGD with learned lr / wd.

Both run `torch.optim.SGD`, so checkpoints and momentum buffers are the same either way; the
hyper-parameter version sets lr and wd from the HyperGradient before each step and then feeds the
hypergradient back (see hpo/hypergrad.py for the formulas).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from hpo.hypergrad import HyperGradient, lookahead_hypergradients
from models.batchnorm import BatchNorm2d
from models.frozen_state import frozen_state

Batch = tuple[torch.Tensor, torch.Tensor]


class SgdUpdate:
    """lr / wd come from the epoch schedule (set at the start of each epoch by the Searcher)."""

    hyper = None

    def __init__(self, optimizer: torch.optim.SGD):
        self.optimizer = optimizer

    def step(self, net: nn.Module, weights: list[nn.Parameter], step: int, val_batch: Callable[[], Batch]) -> None:
        """Apply the weight step with the gradients already in `.grad`."""
        self.optimizer.step()

    def finish_pending(self) -> None:
        """Complete work the last `step` left running in the background (nothing here)."""


class HyperUpdate(SgdUpdate):
    """SGD whose lr and wd are learned online by one-step look-ahead hypergradients.

    With `background=True` (CPU, at least 2 intra-op threads) the validation pass of step t runs on
    a helper thread while the main thread computes the training forward / backward of step t+1:
    both only read the weights w_{t+1}, and the hypergradient is applied (`finish_pending`) before
    anything writes them, so the lr / wd sequence is the one of the sequential order. Each side
    gets half of the intra-op threads: at this network size a second thread speeds one op up far
    less than it speeds up a second, independent op stream. The pass must draw no random numbers
    (drop path is off inside `frozen_state`): draws from two threads would interleave by timing.
    """

    def __init__(self, optimizer: torch.optim.SGD, hyper: HyperGradient, reference_val_pass: bool = False,
                 background: bool = False):
        super().__init__(optimizer)
        self.hyper = hyper
        self.reference_val_pass = reference_val_pass
        # The reference's val pass moves BN running stats, which the training pass writes too.
        self.background = background and not reference_val_pass
        self._executor: ThreadPoolExecutor | None = None
        self._stock_norms: dict[int, list[nn.Module]] = {}
        self._pending: tuple[Future, int] | None = None  # (the helper's job, the full thread count)

    def _set(self, lr: float, wd: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, wd

    def step(self, net: nn.Module, weights: list[nn.Parameter], step: int, val_batch: Callable[[], Batch]) -> None:
        """SGD step at the learned (lr, wd), then a hypergradient step on them every `every` steps."""
        self.finish_pending()
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
        # The momentum buffers and weights are updated in place only by the next optimizer step,
        # which waits for `finish_pending`, so they need no copy.
        updates = [self.optimizer.state[p]["momentum_buffer"] for p in live] if momentum else plain
        x_val, y_val = val_batch()
        threads = torch.get_num_threads()
        if self.background and threads >= 2 and x_val.device.type == "cpu" and not self._norms_to_switch(net):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypergradient")
            future = self._executor.submit(self._background_hypergradients, threads // 2, net, x_val, y_val,
                                           live, updates, lr)
            # The split is fixed for the whole overlap: results depend on the thread count an op
            # runs with, so handing threads back when the helper happens to finish early would make
            # runs irreproducible.
            torch.set_num_threads(threads - threads // 2)
            self._pending = (future, threads)
            return
        self._apply(self._hypergradients(net, x_val, y_val, live, updates, lr))

    def finish_pending(self) -> None:
        """Wait for the background validation pass (if any) and take its hypergradient step."""
        if self._pending is None:
            return
        future, threads = self._pending
        self._pending = None
        try:
            hypergradients = future.result()
        finally:
            torch.set_num_threads(threads)
        self._apply(hypergradients)

    def _background_hypergradients(self, threads: int, *args) -> tuple[torch.Tensor, torch.Tensor] | None:
        torch.set_num_threads(threads)  # this thread's share (OpenMP thread counts are per thread)
        return self._hypergradients(*args)

    def _norms_to_switch(self, net: nn.Module) -> list[nn.Module]:
        """Batch norms `frozen_state` does not reach (not models.batchnorm.BatchNorm2d, e.g. in a
        user's model): their running statistics are switched off by flag, on the main thread only."""
        if self.reference_val_pass:
            return []
        if id(net) not in self._stock_norms:
            self._stock_norms[id(net)] = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                                          and not isinstance(m, BatchNorm2d)]
        return [m for m in self._stock_norms[id(net)] if m.track_running_stats]

    def _val_gradients(self, net: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor,
                       live: list[nn.Parameter]) -> tuple[torch.Tensor | None, ...]:
        """grad L_val(w') for `live`: a training-mode forward (batch statistics) that, unlike the
        reference's, neither moves the running statistics nor drops paths."""
        switched = self._norms_to_switch(net)
        for m in switched:
            m.track_running_stats = False
        try:
            with nullcontext() if self.reference_val_pass else frozen_state():
                logits = net(x_val)
        finally:
            for m in switched:
                m.track_running_stats = True
        loss = nn.functional.cross_entropy(logits, y_val)
        return torch.autograd.grad(loss, live, allow_unused=True)

    def _hypergradients(self, net: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, live: list[nn.Parameter],
                        updates: list[torch.Tensor], lr: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(dL_val/dlr, dL_val/dwd) at the weights after the step, or None if no weight reaches L_val.

        In the background this runs on the helper, dot products included (they read the weights
        and momentum buffers, which only the next weight step, after `finish_pending`, changes).
        """
        grads = self._val_gradients(net, x_val, y_val, live)
        # Weights the validation loss does not reach (the auxiliary head: 90% of the weights of a
        # small supernet) add nothing to the dot products; skipping them saves three big copies.
        used = [i for i, g in enumerate(grads) if g is not None]
        if not used:
            return None
        return lookahead_hypergradients([grads[i] for i in used], [updates[i] for i in used],
                                        [live[i].detach() for i in used], lr)

    def _apply(self, hypergradients: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if hypergradients is not None:
            self.hyper.apply(*hypergradients)
