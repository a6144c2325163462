"""The one search loop. Every mode runs through `Searcher.train_step`; it never sees a mode name."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from augment.policy import AugmentPolicy
from hpo.weight_update import WeightUpdate
from search.arch_step import ArchStep
from search.evaluate import evaluate, to_input
from search.guard import NonFiniteGuard
from search.policy_step import PolicyStep, StepOutcome
from utils.distributed import Distributed
from utils.logging import RunLogger
from utils.seeding import derive_seed, rng_state, set_rng_state


@dataclass
class LoopConfig:
    """Plain values the loop needs (built from the config by search/build.py)."""

    stage: str  # tag prefix: search / continue / retrain
    stage_index: int
    epochs: int
    seed: int
    grad_clip: float = 5.0
    aux_weight: float = 0.0
    drop_path_max: float = 0.0  # ramped linearly over the stage's epochs
    max_steps: int | None = None
    log_every: int = 20
    progress: bool = False
    searching: bool = False  # call the supernet's epoch hooks and honour should_stop()
    nan_patience: int = 10  # consecutive skipped (non-finite) steps before the stage stops


class Paused(Exception):
    """The loop stopped at a step boundary because a stop was requested; `mid_epoch`: inside an
    epoch, whose exact position `Searcher.position` then holds (else after an epoch's checkpoint)."""

    def __init__(self, mid_epoch: bool):
        super().__init__("paused mid-epoch" if mid_epoch else "paused after an epoch")
        self.mid_epoch = mid_epoch


class Searcher:
    """Trains `net` for one stage: weights always, architecture through `arch_step`, the
    augmentation policy through `policy_step`, lr / wd through `weight_update`."""

    def __init__(self, net: nn.Module, weight_update: WeightUpdate, arch_step: ArchStep, policy_step: PolicyStep,
                 train_augment: nn.Module, train_loader, val_batches, val_loader, device: torch.device,
                 loop: LoopConfig, logger: RunLogger, eval_transform=None, dist: Distributed = Distributed()):
        self.dist = dist  # this process among a torchrun launch's (world 1: alone)
        self.net, self.weight_update, self.arch_step, self.policy_step = net, weight_update, arch_step, policy_step
        self.train_augment = train_augment
        self.eval_transform = eval_transform  # None, or the reference's Cutout on validation batches
        self.train_loader, self.val_batches, self.val_loader = train_loader, val_batches, val_loader
        self.device, self.loop, self.logger = device, loop, logger
        self.step = 0
        self.guard = NonFiniteGuard(loop.nan_patience)
        self.history: list[dict] = []  # one record per epoch: lr, wd, losses, accuracies
        self.position: dict | None = None  # where a paused epoch stopped (see `_pause`)

    @property
    def policy(self) -> AugmentPolicy | None:
        """The stage's augmentation policy (None: none)."""
        return self.policy_step.policy

    def _val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xv, yv = next(self.val_batches)
        xv = to_input(xv, self.device)
        if self.eval_transform is not None:
            xv = self.eval_transform(xv)
        return xv, yv.to(self.device, non_blocking=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update; returns [classifier loss sum, correct, count] over every rank's share as a device tensor (zeros when
        the step was skipped for a non-finite loss or gradient: the guard's two host syncs).

        With several processes each holds its share of the global batch: the shares are gathered,
        augmented as one batch (every rank draws the same numbers, as one process would) and split
        again; the policy learns from the gathered outcome, and every gradient is averaged over the
        ranks before its step, so every rank holds the same state after every step.

        Order: 1. batch to the device, crop/flip, the augmentation policy, Cutout; 2. the architecture
        step's hook before the weights (bilevel: an update on a validation batch, through which a
        differentiable policy learns too); 3. forward on the training batch, per-sample loss
        (+ auxiliary), the guard; 4. the policy's update from the step's outcome; 5. one backward for
        the weights (and, joint, the architecture); 6. clip, the guard; 7. the architecture step's
        hook after the backward; 8. weight step (and the hypergradient step on lr / wd).
        """
        dist = self.dist
        x, y_all = dist.gather(to_input(x, self.device)), dist.gather(y.to(self.device, non_blocking=True))
        x, info = self.policy_step.augment(self.train_augment.pre(x))
        x, y = dist.shard(self.train_augment.post(x)), dist.shard(y_all)
        self.arch_step.before_weights(self.net, (x, y), self._val_batch, self.weight_update, self.policy_step)
        with self.policy_step.watch(self.net):
            logits, aux = self.net.forward_with_aux(x)
        classifier_loss = nn.functional.cross_entropy(logits, y, reduction="none")
        per_sample = classifier_loss
        if aux is not None and self.loop.aux_weight > 0:
            per_sample = per_sample + self.loop.aux_weight * nn.functional.cross_entropy(aux, y, reduction="none")
        loss = per_sample.mean()
        all_per_sample = dist.gather(per_sample.detach())
        if not self.guard.passed(all_per_sample):  # every rank sees the same values: all skip together
            return torch.zeros(3, device=self.device)
        self.policy_step.update(StepOutcome(all_per_sample, dist.gather(logits.detach()), y_all, self._val_batch,
                                            self.net, dist), info)
        self.weight_update.optimizer.zero_grad(set_to_none=True)
        self.arch_step.zero_grad()
        loss.backward()
        dist.average_grads(self.net.parameters())  # the weights' and, joint, the architecture's
        # A background validation pass of the previous step (at these same weights) ends here,
        # before the architecture and the weights change.
        self.weight_update.finish_pending()
        if self.loop.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.weight_update.weights, self.loop.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in self.weight_update.weights if p.grad is not None])
        if not self.guard.passed(norm):
            return torch.zeros(3, device=self.device)
        self.arch_step.after_backward()
        self.weight_update.step(self.step, self._val_batch)
        with torch.no_grad():
            n = torch.tensor(float(y.numel()), device=self.device)
            # The reported train loss is the classifier's alone, on the same scale as the val loss.
            return dist.sum(torch.stack([classifier_loss.detach().sum(), (logits.argmax(1) == y).sum().float(), n]))

    def start_epoch(self, epoch: int) -> None:
        """Seed, data order, lr / wd, drop path and the supernet's hook for `epoch`."""
        # Everything random in an epoch derives from (seed, stage, epoch): resuming at an epoch
        # boundary needs no saved RNG state and reproduces the run bit for bit on CPU.
        epoch_seed = derive_seed(self.loop.seed, self.loop.stage_index, epoch)
        torch.manual_seed(epoch_seed)
        self.train_loader.set_epoch(epoch)
        if self.val_batches is not None:
            self.val_batches.reset(epoch_seed)
        self.weight_update.start_epoch(epoch)
        self.policy_step.start_epoch()
        self.net.drop_path_prob = self.loop.drop_path_max * epoch / max(1, self.loop.epochs)
        self.net.drop_path_shard = (self.dist.rank, self.dist.world)
        if self.loop.searching:
            self.net.on_epoch_start(epoch)

    def train_epoch(self, epoch: int, should_pause: Callable[[], bool] | None = None) -> dict:
        """One pass over the training loader (from a paused position, if one is held for `epoch`),
        then validation and the supernet's epoch-end hook. `should_pause` is asked after every step;
        True raises Paused with the position saved."""
        self.start_epoch(epoch)
        self.net.train()
        steps = len(self.train_loader)
        if self.loop.max_steps is not None:
            steps = min(steps, self.loop.max_steps)
        if steps == 0:
            raise RuntimeError("the training split yields no full batch: lower dataset.batch_size")
        totals = torch.zeros(3, device=self.device)
        hyper = self.weight_update.hyper
        hyper_trace: list[dict] = []
        started, first = time.time(), 0
        if self.position is not None and self.position["epoch"] == epoch:
            first, totals, hyper_trace, started = self._resume_position(self.position)
        self.position = None
        batches = self.train_loader.iterate(first)
        if self.loop.progress:
            from tqdm import tqdm
            batches = tqdm(batches, total=steps, initial=first, desc=f"{self.loop.stage} {epoch + 1}/{self.loop.epochs}",
                           leave=False, dynamic_ncols=True)
        for i, (x, y) in enumerate(batches, start=first):
            if i >= steps:
                break
            stats = self.train_step(x, y)
            totals += stats
            self.step += 1
            if self.step % self.loop.log_every == 0:
                self.weight_update.finish_pending()  # log the lr / wd this step produced
                loss, correct, n = stats.tolist()  # the only host sync of the step, every log_every steps
                scalars = {f"{self.loop.stage}/train_loss_step": loss / n}
                if hyper is not None:
                    values = self.weight_update.values(epoch)
                    # lr_peak: the learned value itself, before the schedule's fall scales the step
                    hyper_trace.append({"stage": self.loop.stage, "step": self.step, **values,
                                        "lr_peak": hyper.values()["lr"]})
                    scalars.update({f"{self.loop.stage}/hparams_{k}": v for k, v in values.items()})
                self.logger.scalars(scalars, self.step)
            if should_pause is not None and i + 1 < steps and should_pause():
                self._pause(epoch, i + 1, totals, hyper_trace, started)
        if self.loop.progress:
            batches.close()
        self.weight_update.finish_pending()
        return self._end_epoch(epoch, totals, hyper_trace, started)

    def _pause(self, epoch: int, next_batch: int, totals: torch.Tensor, hyper_trace: list, started: float) -> None:
        """Hold the exact position inside `epoch` (data, random streams, running totals) and raise Paused."""
        self.position = {"epoch": epoch, "batch": next_batch, "totals": totals.cpu(), "hyper_trace": hyper_trace,
                         "seconds": time.time() - started, "rng": rng_state(self.device),
                         "val_stream": self.val_batches.state_dict() if self.val_batches is not None else None}
        raise Paused(mid_epoch=True)

    def _resume_position(self, position: dict) -> tuple[int, torch.Tensor, list, float]:
        """Restore what `_pause` held (after `start_epoch`, whose seeding it overrides)."""
        set_rng_state(position["rng"], self.device)
        if self.val_batches is not None:
            self.val_batches.load_state_dict(position["val_stream"])
        return (position["batch"], position["totals"].to(self.device), list(position["hyper_trace"]),
                time.time() - position["seconds"])

    def _end_epoch(self, epoch: int, totals: torch.Tensor, hyper_trace: list, started: float) -> dict:
        """Validation, the supernet's epoch-end hook and the epoch's record."""
        hyper = self.weight_update.hyper
        # Validate the network this epoch trained, before the supernet's hook may switch ops in
        # (an op that was not active has no running statistics worth evaluating with).
        val = evaluate(self.net, self.val_loader, self.device, self.loop.max_steps, self.eval_transform, self.dist)
        arch_info = self.net.on_epoch_end(epoch) if self.loop.searching else {}
        # every rank recovered the architecture (ISTA's LASSO, a genotype) from the same state: checked
        self.dist.check_same([t for t in self.net.state_dict().values() if t.is_floating_point()],
                             "network states after the epoch")
        loss_sum, correct, count = totals.tolist()
        if self.policy is not None:
            arch_info = {**arch_info, "policy_entropy": float(self.policy.entropy()),
                         "policy_ops": self.policy.op_probabilities()}
            signal = self.policy_step.signal()
            if signal is not None:
                arch_info["policy_signal"] = signal
        if hyper is not None:
            arch_info = {**arch_info, "hyper_trace": hyper_trace}
        record = {"stage": self.loop.stage, "epoch": epoch, **self.weight_update.values(epoch),
                  "train_loss": loss_sum / count if count else None, "train_top1": correct / count if count else None,
                  "skipped_steps": self.guard.total,
                  "val_loss": val["loss"], "val_top1": val["top1"], "seconds": time.time() - started, **arch_info}
        self.history.append(record)
        return record

    def run(self, start_epoch: int, on_epoch_end: Callable[["Searcher", int, bool], None],
            should_pause: Callable[[], bool] | None = None) -> dict:
        """Epochs from `start_epoch`; stops early when the supernet says so. Returns the last record.
        `should_pause` (asked after every step and every epoch's `on_epoch_end`) True raises Paused."""
        record: dict = {}
        for epoch in range(start_epoch, self.loop.epochs):
            record = self.train_epoch(epoch, should_pause)
            done = epoch + 1 >= self.loop.epochs or (self.loop.searching and self.net.should_stop())
            record["stopped_early"] = done and epoch + 1 < self.loop.epochs
            on_epoch_end(self, epoch, done)
            if should_pause is not None and should_pause():
                raise Paused(mid_epoch=False)
            if done:
                break
        return record

    def state_dict(self) -> dict:
        """Everything needed to continue this stage exactly (network included)."""
        return {"net": self.net.state_dict(), "weight_update": self.weight_update.state_dict(),
                "arch_step": self.arch_step.state_dict(), "policy_step": self.policy_step.state_dict(),
                "step": self.step, "history": self.history, "guard": self.guard.state_dict(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` gathered."""
        self.net.load_state_dict(state["net"])
        self.weight_update.load_state_dict(state["weight_update"])
        self.arch_step.load_state_dict(state["arch_step"])
        self.policy_step.load_state_dict(state["policy_step"])
        self.step = state["step"]
        self.history = list(state["history"])
        self.guard.load_state_dict(state["guard"])
        self.position = state.get("position")

    def carry_state(self) -> dict:
        """What outlives the stage: the network, the policy and the learned lr / wd (the next stage
        of the same network starts from it; the last stage's is the finished model)."""
        return {"net": self.net.state_dict(), "policy_step": self.policy_step.state_dict(),
                "weight_update": self.weight_update.carry_state()}

    def load_carry_state(self, state: dict) -> None:
        """Inverse of `carry_state`."""
        self.net.load_state_dict(state["net"])
        self.policy_step.load_state_dict(state["policy_step"])
        self.weight_update.load_carry_state(state["weight_update"])
