"""The one search loop. Every mode runs through `Searcher.train_step`; it never sees a mode name."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from search.arch_step import ArchStep
from search.evaluate import evaluate, to_input
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

    def __init__(self, net: nn.Module, weight_optimizer: torch.optim.Optimizer, schedule, arch_step: ArchStep,
                 train_augment: nn.Module, train_loader, val_batches, val_loader, device: torch.device,
                 loop: LoopConfig, logger: RunLogger):
        self.net, self.weight_optimizer, self.schedule = net, weight_optimizer, schedule
        self.arch_step, self.train_augment = arch_step, train_augment
        self.train_loader, self.val_batches, self.val_loader = train_loader, val_batches, val_loader
        self.device, self.loop, self.logger = device, loop, logger
        self.weights = [p for p in net.weight_parameters()]
        self.step = 0
        self.history: list[dict] = []  # one record per epoch: lr, wd, losses, accuracies

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update; returns [loss_sum, correct, count] as a device tensor (no host sync).

        Order: 1. batch to the device and augment there; 2. bilevel arch update on a validation
        batch; 3. forward on the training batch (+ auxiliary loss); 4. one backward; 5. joint arch
        update from that backward; 6. clip and step the weights.
        """
        x, y = self.train_augment(to_input(x, self.device)), y.to(self.device, non_blocking=True)
        lr = self.weight_optimizer.param_groups[0]["lr"]
        if self.arch_step.bilevel:
            xv, yv = next(self.val_batches)
            val = (to_input(xv, self.device), yv.to(self.device, non_blocking=True))
            self.arch_step.before_weights(self.net, (x, y), val, lr, self.weight_optimizer)
        logits, aux = self.net.forward_with_aux(x)
        loss = nn.functional.cross_entropy(logits, y)
        if aux is not None and self.loop.aux_weight > 0:
            loss = loss + self.loop.aux_weight * nn.functional.cross_entropy(aux, y)
        self.weight_optimizer.zero_grad(set_to_none=True)
        if self.arch_step.optimizer is not None:
            self.arch_step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.arch_step.joint:
            self.arch_step.after_backward()
        if self.loop.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.loop.grad_clip)
        self.weight_optimizer.step()
        with torch.no_grad():
            n = torch.tensor(float(y.numel()), device=self.device)
            return torch.stack([loss.detach() * n, (logits.argmax(1) == y).sum().float(), n])

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
        started = time.time()
        for i, (x, y) in enumerate(batches):
            if i >= steps:
                break
            stats = self.train_step(x, y)
            totals += stats
            self.step += 1
            if self.step % self.loop.log_every == 0:
                loss, correct, n = stats.tolist()  # the only host sync of the step, every log_every steps
                self.logger.scalars({f"{self.loop.stage}/train_loss_step": loss / n}, self.step)
        if self.loop.progress:
            batches.close()
        arch_info = self.net.on_epoch_end(epoch) if self.loop.searching else {}
        val = evaluate(self.net, self.val_loader, self.device, self.loop.max_steps)
        loss_sum, correct, count = totals.tolist()
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
                "arch_step": self.arch_step.state_dict(), "schedule": self.schedule.state_dict(),
                "step": self.step, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` gathered."""
        self.net.load_state_dict(state["net"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_step.load_state_dict(state["arch_step"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = state["step"]
        self.history = list(state["history"])
