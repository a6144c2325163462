"""The weight update of one step: SGD at a scheduled lr / wd, or at a learned one.

Both run `torch.optim.SGD`, so checkpoints and momentum buffers are the same either way; the learned
version sets lr and wd from the HyperGradient before each step and then feeds the hypergradient back
(see hpo/hypergrad.py for the formulas).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch
from torch import nn

from hpo.expected_step import ExpectedStep
from hpo.hypergrad import HyperGradient, lookahead_hypergradients
from hpo.schedule import CosineSchedule
from utils.distributed import Distributed

Batch = tuple[torch.Tensor, torch.Tensor]


class WeightUpdate:
    """SGD whose lr / wd follow a schedule (hpo.schedule, or the learned HyperGradient: both give
    `values(epoch)` and a state), set at the start of each epoch."""

    hyper: HyperGradient | None = None  # what learns lr / wd (None: the schedule sets them)
    note: str = ""  # a line for the run's log about how the update runs (empty: nothing to say)

    def __init__(self, optimizer: torch.optim.SGD, schedule=None):
        self.optimizer, self.schedule = optimizer, schedule
        self.weights = [p for group in optimizer.param_groups for p in group["params"]]

    @property
    def lr(self) -> float:
        """The learning rate the next weight step uses."""
        return self.optimizer.param_groups[0]["lr"]

    def values(self, epoch: int) -> dict[str, float]:
        """lr and wd of `epoch` (for the epoch record and hparams.json)."""
        return self.schedule.values(epoch)

    def start_epoch(self, epoch: int) -> None:
        """Set the optimizer's lr / wd for `epoch`."""
        self._set(**self.values(epoch))

    def _set(self, lr: float, wd: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, wd

    def step(self, step: int, val_batch: Callable[[], Batch]) -> None:
        """Apply the weight step with the gradients already in `.grad`."""
        self.optimizer.step()

    def finish_pending(self) -> None:
        """Complete work the last `step` left running in the background (nothing here)."""

    def share_val_grads(self, params: list[nn.Parameter]) -> Callable[[], list[torch.Tensor] | None] | None:
        """A source of the validation loss's gradients of `params` (means over the ranks) from this
        update's own validation pass, the latest one applied (None: this update has no such pass)."""
        return None

    def state_dict(self) -> dict:
        """The weight optimizer and the schedule."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def carry_state(self) -> dict:
        """What outlives the stage when the same network trains on: the momentum buffers (and, when
        learned, lr / wd); a schedule starts afresh."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_carry_state(self, state: dict) -> None:
        """Inverse of `carry_state`; lr / wd come from this stage's schedule, not the saved groups."""
        groups = [{k: g[k] for k in ("lr", "weight_decay")} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, kept in zip(self.optimizer.param_groups, groups):
            group.update(kept)


class HyperUpdate(WeightUpdate):
    """SGD whose lr and wd are learned online by one-step look-ahead hypergradients.

    `val_forward(x)` gives the validation logits at the weights after the step: a probe forward
    (batch statistics, running statistics and drop path untouched; see models' `probe`), or, as the
    reference, a plain training forward. With `background=True` (CPU, at least 2 intra-op threads;
    only for a probe forward, which writes nothing) the validation pass of step t runs on a helper
    thread while the main thread computes the training forward / backward of step t+1: both only read
    the weights w_{t+1}, and the hypergradient is applied (`finish_pending`) before anything writes
    them, so the lr / wd sequence is the one of the sequential order. Each side gets half of the
    intra-op threads: at this network size a second thread speeds one op up far less than it speeds
    up a second, independent op stream. The pass must draw no random numbers: draws from two threads
    would interleave by timing.
    `lookahead="expected"` (validation signal only) judges lr by the expected step instead of the
    step taken (hpo/expected_step.py): the validation gradients of step t then wait for step t+1's
    gradient, and lr moves one step later.
    """

    def __init__(self, optimizer: torch.optim.SGD, hyper: HyperGradient,
                 val_forward: Callable[[torch.Tensor], torch.Tensor], background: bool = False,
                 shape: CosineSchedule | None = None, dist: Distributed = Distributed(), lookahead: str = "step"):
        super().__init__(optimizer, schedule=hyper)  # its values() are the learned lr / wd
        if lookahead not in ("step", "expected"):
            raise ValueError(f"lookahead must be 'step' or 'expected', got {lookahead!r}")
        self.expected = ExpectedStep(self.weights) if lookahead == "expected" and hyper.signal == "val" else None
        self.dist = dist  # the hypergradients are averaged over the ranks' validation shares
        self.hyper, self.val_forward, self.background = hyper, val_forward, background
        # With a shape the learned lr is the stage's peak: the step runs at it times the schedule's
        # fall (1 at the first epoch, w_lr_min / w_lr at the end), as a cosine run would.
        self.shape, self.factor = shape, 1.0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Future, int] | None = None  # (the helper's job, the full thread count)
        self._shared: list[nn.Parameter] = []  # weights whose validation gradients are kept for others
        self.shared_grads: list[torch.Tensor] | None = None  # ... from the latest applied pass

    def _factor(self, epoch: int) -> float:
        return 1.0 if self.shape is None else self.shape.lr(epoch) / self.shape.lr_max

    def values(self, epoch: int) -> dict[str, float]:
        """The lr / wd the weight steps of `epoch` run at (the learned lr times the schedule's fall)."""
        learned = self.hyper.values()
        return {"lr": learned["lr"] * self._factor(epoch), "wd": learned["wd"]}

    def start_epoch(self, epoch: int) -> None:
        """Take the schedule's factor for `epoch` (lr / wd are set before each step)."""
        self.factor = self._factor(epoch)
        super().start_epoch(epoch)

    def state_dict(self) -> dict:
        """As the base class, plus a background pass still pending (paused mid-epoch): its result,
        not yet applied, and the thread split it runs under, so a resume continues in the same order."""
        state = {**super().state_dict(), "shared_grads": self.shared_grads}
        if self._pending is not None:
            future, threads = self._pending
            state["pending"] = {"hypergradients": future.result(), "threads": threads}
        if self.expected is not None:
            state["expected"] = self.expected.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`: a pending result is applied where the uninterrupted run applied it."""
        super().load_state_dict(state)
        self.shared_grads = state.get("shared_grads")
        if self.expected is not None:
            self.expected.load_state_dict(state["expected"])
        pending = state.get("pending")
        if pending is not None:
            future: Future = Future()
            future.set_result(pending["hypergradients"])
            torch.set_num_threads(pending["threads"] - pending["threads"] // 2)
            self._pending = (future, pending["threads"])

    def carry_state(self) -> dict:
        """The momentum buffers and the learned lr / wd go on into the next stage."""
        return {**super().carry_state(), "hyper": self.hyper.state_dict()}

    def load_carry_state(self, state: dict) -> None:
        """Inverse of `carry_state`."""
        super().load_carry_state(state)
        self.hyper.load_state_dict(state["hyper"])

    def step(self, step: int, val_batch: Callable[[], Batch]) -> None:
        """SGD step at the learned (lr, wd), then a hypergradient step on them every `every` steps."""
        self.finish_pending()
        self._complete_expected()
        values = self.hyper.values()
        lr, wd = values["lr"] * self.factor, values["wd"]
        self._set(lr, wd)
        live = [p for p in self.weights if p.grad is not None]
        update_now = self.hyper.wants_update(step)
        if update_now and self.hyper.signal == "train":
            self._train_signal_step(live, lr)
            return
        if update_now and self.expected is not None:
            self.expected.record(live, self.optimizer, wd, self.factor)
        momentum = self.optimizer.param_groups[0]["momentum"]
        if update_now and momentum == 0:
            plain = [p.grad + wd * p.detach() for p in live]
        self.optimizer.step()
        if not update_now:
            return
        # The momentum buffers and weights are updated in place only by the next optimizer step,
        # which waits for `finish_pending`, so they need no copy.
        updates = [self.optimizer.state[p]["momentum_buffer"] for p in live] if momentum else plain
        x_val, y_val = val_batch()
        threads = torch.get_num_threads()
        if self.background and threads >= 2 and x_val.device.type == "cpu":
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypergradient")
            future = self._executor.submit(self._background_hypergradients, threads // 2, x_val, y_val,
                                           live, updates, lr, self.factor)
            # The split is fixed for the whole overlap: results depend on the thread count an op
            # runs with, so handing threads back when the helper happens to finish early would make
            # runs irreproducible.
            torch.set_num_threads(threads - threads // 2)
            self._pending = (future, threads)
            return
        self._apply(self._hypergradients(x_val, y_val, live, updates, lr, self.factor))

    def _complete_expected(self) -> None:
        """The expected-step hypergradient of the last validation pass, now that this step's gradient
        is in `.grad` (nothing without `lookahead="expected"` or a pass waiting)."""
        done = self.expected.complete() if self.expected is not None else None
        if done is not None:
            d_lr, d_wd = done
            self.hyper.apply(d_lr, d_wd)  # from rank means: the same on every rank

    def _train_signal_step(self, live: list[nn.Parameter], lr: float) -> None:
        """Baydin et al.: the fresh training gradient at w_t judges the previous update u_{t-1}."""
        prev = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in live]
        pairs = [(p, b) for p, b in zip(live, prev) if b is not None]
        if pairs:
            grads = [p.grad for p, _ in pairs]
            bufs = [b for _, b in pairs]
            d_lr, d_wd = lookahead_hypergradients(grads, bufs, [p.detach() for p, _ in pairs], lr)
            self.hyper.apply(d_lr * self.factor, d_wd)
        self.optimizer.step()

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

    def share_val_grads(self, params: list[nn.Parameter]) -> Callable[[], list[torch.Tensor] | None] | None:
        """Keep the validation gradients of `params` from each pass (they come with its backward)."""
        if self.hyper.signal != "val":
            return None
        self._shared = list(params)
        return lambda: self.shared_grads

    def _background_hypergradients(self, threads: int, *args) -> tuple:
        torch.set_num_threads(threads)  # this thread's share (OpenMP thread counts are per thread)
        return self._hypergradients(*args)

    def _hypergradients(self, x_val: torch.Tensor, y_val: torch.Tensor, live: list[nn.Parameter],
                        updates: list[torch.Tensor], lr: float, factor: float) -> tuple:
        """((dL_val/d(learned lr), dL_val/dwd) at the weights after the step (the step ran at lr = learned
        lr * factor), or None if no weight reaches L_val; the shared weights' validation gradients or None).

        In the background this runs on the helper, dot products included (they read the weights
        and momentum buffers, which only the next weight step, after `finish_pending`, changes).
        """
        loss = nn.functional.cross_entropy(self.val_forward(x_val), y_val)
        grads = torch.autograd.grad(loss, live, allow_unused=True)
        # Weights the validation loss does not reach (the auxiliary head: 90% of the weights of a
        # small supernet) add nothing to the dot products; skipping them saves three big copies.
        used = [i for i, g in enumerate(grads) if g is not None]
        position = {id(p): i for i, p in enumerate(live)}
        shared = [grads[position[id(p)]] if id(p) in position else None for p in self._shared]
        shared = shared if shared and all(g is not None for g in shared) else []
        hyper = []
        if used:
            d_lr, d_wd = lookahead_hypergradients([grads[i] for i in used], [updates[i] for i in used],
                                                  [live[i].detach() for i in used], lr)
            hyper = [d_lr * factor, d_wd]
        waiting = [grads[i] for i in used] if hyper and self.expected is not None else []
        # rank means in one all-reduce: every rank then holds (and a checkpoint saves) the same values
        averaged = self.dist.average(hyper + waiting + shared)
        result = tuple(averaged[:2]) if hyper else None
        if waiting:  # the validation gradients wait for the next step's gradient
            result = (*result, self.expected.indices([live[i] for i in used]), averaged[2:2 + len(waiting)])
        return result, (averaged[len(hyper) + len(waiting):] or None)

    def _apply(self, result: tuple) -> None:
        hypergradients, shared = result
        if hypergradients is not None:
            d_lr, d_wd, *waiting = hypergradients  # waiting: (weight indices, validation gradients)
            if waiting:
                self.expected.hold(*waiting, d_wd)
            else:
                self.hyper.apply(d_lr, d_wd)
        self.shared_grads = shared
