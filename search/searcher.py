"""The one search loop. Every mode runs through `Searcher.train_step`; it never sees a mode name."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from augment.policy import AugmentPolicy
from search.arch_step import ArchStep
from search.evaluate import evaluate, to_input
from search.weight_step import SgdUpdate
from utils.logging import RunLogger
from utils.seeding import derive_seed


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


class Searcher:
    """Trains `net` for one stage: weights always, architecture through `arch_step`."""

    def __init__(self, net: nn.Module, weight_update: SgdUpdate, schedule, arch_step: ArchStep,
                 train_augment: nn.Module, train_loader, val_batches, val_loader, device: torch.device,
                 loop: LoopConfig, logger: RunLogger, policy: AugmentPolicy | None = None,
                 policy_optimizer: torch.optim.Optimizer | None = None, eval_transform=None):
        self.net, self.weight_update, self.schedule = net, weight_update, schedule
        self.weight_optimizer = weight_update.optimizer
        self.arch_step, self.train_augment = arch_step, train_augment
        self.policy, self.policy_optimizer = policy, policy_optimizer
        self.eval_transform = eval_transform  # None, or the reference's Cutout on validation batches
        self.train_loader, self.val_batches, self.val_loader = train_loader, val_batches, val_loader
        self.device, self.loop, self.logger = device, loop, logger
        self.weights = [p for p in net.weight_parameters()]
        self.step = 0
        self.history: list[dict] = []  # one record per epoch: lr, wd, losses, accuracies

    def _val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xv, yv = next(self.val_batches)
        xv = to_input(xv, self.device)
        if self.eval_transform is not None:
            xv = self.eval_transform(xv)
        return xv, yv.to(self.device, non_blocking=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update; returns [classifier loss sum, correct, count] as a device tensor (no host sync).

        Order: 1. batch to the device, crop/flip, the augmentation policy, Cutout; 2. bilevel
        architecture update on a validation batch (a differentiable policy learns from the same
        backward); 3. forward on the training batch, per-sample loss (+ auxiliary); 4. score-function
        policy update from the detached per-sample loss; 5. one backward for the weights (and, joint,
        the architecture); 6. clip, weight step (and the hypergradient step on lr / wd).
        """
        x, y = self.train_augment.pre(to_input(x, self.device)), y.to(self.device, non_blocking=True)
        policy, info = self.policy, {}
        if policy is not None:
            if policy.differentiable:
                with torch.no_grad():  # its gradient comes from the validation pass
                    x, info = policy(x)
            else:
                x, info = policy(x)
        x = self.train_augment.post(x)
        if self.arch_step.bilevel:
            self.weight_update.finish_pending()  # the bilevel step reads the lr and writes alphas
        lr = self.weight_optimizer.param_groups[0]["lr"]
        if self.arch_step.bilevel:
            xv, yv = self._val_batch()  # bilevel updates see validation images as the reference did
            co_optimizer = None
            if policy is not None and policy.differentiable and self.policy_optimizer is not None:
                xv, _ = policy(xv)
                co_optimizer = self.policy_optimizer
            self.arch_step.before_weights(self.net, (x, y), (xv, yv), lr, self.weight_optimizer, co_optimizer)
        logits, aux = self.net.forward_with_aux(x)
        classifier_loss = nn.functional.cross_entropy(logits, y, reduction="none")
        per_sample = classifier_loss
        if aux is not None and self.loop.aux_weight > 0:
            per_sample = per_sample + self.loop.aux_weight * nn.functional.cross_entropy(aux, y, reduction="none")
        loss = per_sample.mean()
        if policy is not None and not policy.differentiable and self.policy_optimizer is not None:
            self.policy_optimizer.zero_grad(set_to_none=True)
            policy.policy_loss(per_sample.detach(), info).backward()
            self.policy_optimizer.step()
        self.weight_optimizer.zero_grad(set_to_none=True)
        if self.arch_step.optimizer is not None:
            self.arch_step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A background validation pass of the previous step (at these same weights) ends here,
        # before the architecture and the weights change.
        self.weight_update.finish_pending()
        if self.arch_step.joint:
            self.arch_step.after_backward()
        if self.loop.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.loop.grad_clip)
        self.weight_update.step(self.net, self.weights, self.step, self._val_batch)
        with torch.no_grad():
            n = torch.tensor(float(y.numel()), device=self.device)
            # The reported train loss is the classifier's alone, on the same scale as the val loss.
            return torch.stack([classifier_loss.detach().sum(), (logits.argmax(1) == y).sum().float(), n])

    def _start_epoch(self, epoch: int) -> None:
        # Everything random in an epoch derives from (seed, stage, epoch): resuming at an epoch
        # boundary needs no saved RNG state and reproduces the run bit for bit on CPU.
        epoch_seed = derive_seed(self.loop.seed, self.loop.stage_index, epoch)
        torch.manual_seed(epoch_seed)
        self.train_loader.set_epoch(epoch)
        if self.val_batches is not None:
            self.val_batches.reset(epoch_seed)
        values = self.schedule.values(epoch)
        for group in self.weight_optimizer.param_groups:
            group["lr"], group["weight_decay"] = values["lr"], values["wd"]
        if self.policy is not None:
            self.policy.train()
        self.net.drop_path_prob = self.loop.drop_path_max * epoch / max(1, self.loop.epochs)
        if self.loop.searching:
            self.net.on_epoch_start(epoch)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training loader, then the supernet's epoch-end hook and validation."""
        self._start_epoch(epoch)
        self.net.train()
        steps = len(self.train_loader)
        if self.loop.max_steps is not None:
            steps = min(steps, self.loop.max_steps)
        if steps == 0:
            raise RuntimeError("the training split yields no full batch: lower dataset.batch_size")
        batches = iter(self.train_loader)
        if self.loop.progress:
            from tqdm import tqdm
            batches = tqdm(batches, total=steps, desc=f"{self.loop.stage} {epoch + 1}/{self.loop.epochs}",
                           leave=False, dynamic_ncols=True)
        totals = torch.zeros(3, device=self.device)
        hyper = self.weight_update.hyper
        hyper_trace = []
        started = time.time()
        for i, (x, y) in enumerate(batches):
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
                    values = hyper.values()
                    hyper_trace.append({"stage": self.loop.stage, "step": self.step, **values})
                    scalars.update({f"{self.loop.stage}/hparams_{k}": v for k, v in values.items()})
                self.logger.scalars(scalars, self.step)
        self.weight_update.finish_pending()
        if self.loop.progress:
            batches.close()
        arch_info = self.net.on_epoch_end(epoch) if self.loop.searching else {}
        val = evaluate(self.net, self.val_loader, self.device, self.loop.max_steps, self.eval_transform)
        loss_sum, correct, count = totals.tolist()
        if self.policy is not None:
            arch_info = {**arch_info, "policy_entropy": float(self.policy.entropy())}
        if hyper is not None:
            arch_info = {**arch_info, "hyper_trace": hyper_trace}
        record = {"stage": self.loop.stage, "epoch": epoch, **self.schedule.values(epoch),
                  "train_loss": loss_sum / count, "train_top1": correct / count,
                  "val_loss": val["loss"], "val_top1": val["top1"], "seconds": time.time() - started, **arch_info}
        self.history.append(record)
        return record

    def run(self, start_epoch: int, on_epoch_end: Callable[["Searcher", int, bool], None]) -> dict:
        """Epochs from `start_epoch`; stops early when the supernet says so. Returns the last record."""
        record: dict = {}
        for epoch in range(start_epoch, self.loop.epochs):
            record = self.train_epoch(epoch)
            done = epoch + 1 >= self.loop.epochs or (self.loop.searching and self.net.should_stop())
            record["stopped_early"] = done and epoch + 1 < self.loop.epochs
            on_epoch_end(self, epoch, done)
            if done:
                break
        return record

    def state_dict(self) -> dict:
        """Everything needed to continue this stage exactly (network included)."""
        return {"net": self.net.state_dict(), "weight_optimizer": self.weight_optimizer.state_dict(),
                "arch_step": self.arch_step.state_dict(), "schedule": schedule_state(self.schedule),
                "step": self.step, "history": self.history, **self.carry_state()}

    def carry_state(self) -> dict:
        """What outlives a stage when the same network continues: the policy and the learned lr / wd."""
        learned = getattr(self.schedule, "learned", False)
        return {"net": self.net.state_dict(),
                "policy": self.policy.state_dict() if self.policy is not None else None,
                "policy_optimizer": self.policy_optimizer.state_dict() if self.policy_optimizer else None,
                "hyper": schedule_state(self.schedule) if learned else None}

    def load_carry_state(self, state: dict) -> None:
        """Inverse of `carry_state`."""
        self.net.load_state_dict(state["net"])
        if self.policy is not None and state.get("policy") is not None:
            self.policy.load_state_dict(state["policy"])
        if self.policy_optimizer is not None and state.get("policy_optimizer") is not None:
            self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        if getattr(self.schedule, "learned", False) and state.get("hyper") is not None:
            load_schedule_state(self.schedule, state["hyper"])

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` gathered."""
        self.load_carry_state(state)
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_step.load_state_dict(state["arch_step"])
        load_schedule_state(self.schedule, state["schedule"])
        self.step = state["step"]
        self.history = list(state["history"])


def schedule_state(schedule) -> dict:
    """State of a fixed schedule or of a HyperGradient (which also has an optimizer)."""
    return schedule.state_dict_full() if hasattr(schedule, "state_dict_full") else schedule.state_dict()


def load_schedule_state(schedule, state: dict) -> None:
    """Inverse of `schedule_state`."""
    if hasattr(schedule, "load_state_dict_full"):
        schedule.load_state_dict_full(state)
    else:
        schedule.load_state_dict(state)
