"""`build_stage`: the one way a stage is assembled, for the run, the dry run and the benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datasets import DataSplits
from models.amp import set_amp
from models.batchnorm import set_sync_batchnorm
from models.network import set_channels_last
from search.build import (MOBILENET_SEARCHES, StageSections, build_arch_step, build_stage_net, build_weight_update,
                          configured_genotype, sections_for, stage_epochs)
from search.build_policy import build_fixed_policy, build_policy_step
from search.data import RunData, build_eval_transform, build_train_augment
from search.modes import MODES, Augment, Kind, Mode, Space, StageSpec
from search.policy_step import PolicyStep
from search.searcher import LoopConfig, Searcher
from search.state import RunState
from utils.config_sections import RunConfig
from utils.distributed import Distributed
from utils.errors import UserError
from utils.logging import RunLogger, progress_enabled
from utils.seeding import derive_seed


@dataclass
class Stage:
    """Everything one stage trains with; `searcher.run` trains it."""

    index: int
    spec: StageSpec
    sections: StageSections
    data: DataSplits
    loaders: dict
    net: nn.Module
    searcher: Searcher


def check_inputs(cfg: RunConfig, mode: Mode, dist: Distributed = Distributed()) -> RunData:
    """Every input a run of `mode` reads, checked (a UserError otherwise): each stage's data and
    loaders (built once, for the run to reuse; this process's shares) and, without a search, the
    configured genotype."""
    run_data = RunData(cfg.seed, dist)
    for spec in mode.stages:
        sec = sections_for(cfg, spec)
        if spec.space is not None and sec.arch.space == "mobilenet" and spec.space not in MOBILENET_SEARCHES:
            raise UserError(f"mode {mode.name} searches the {spec.space.value} supernet, which has no mobilenet space "
                            f"yet; with train_architecture.space mobilenet use "
                            f"{', '.join(m for m, md in MODES.items() if _searches(md, MOBILENET_SEARCHES))} or train")
        run_data.get(sec.dataset, sec.arch)
        if spec.augment is Augment.NONE:
            build_fixed_policy(sec.da.fixed_policy, sec.dataset, torch.device("cpu"))
    if all(spec.kind is not Kind.SEARCH for spec in mode.stages):
        configured_genotype(sections_for(cfg, mode.stages[0]).arch)
    return run_data


def _searches(mode: Mode, spaces) -> bool:
    return any(spec.space is not None for spec in mode.stages) and \
        all(spec.space in spaces for spec in mode.stages if spec.space is not None)


def build_stage(cfg: RunConfig, mode: Mode, index: int, previous: RunState, device: torch.device,
                logger: RunLogger, run_data: RunData) -> Stage:
    """Stage `index` of `mode`, fresh, then handed what the finished stages left (`previous`):
    a retrain stage the genotype and any searched policy to replay, a continue stage the network,
    policy and learned lr / wd of the stage before it."""
    spec = mode.stages[index]
    sec = sections_for(cfg, spec)
    data, loaders = run_data.get(sec.dataset, sec.arch)
    # Building consumes the RNG: seed it per stage so a resumed run builds the same objects.
    torch.manual_seed(derive_seed(cfg.seed, index, 10**6))
    net = build_stage_net(cfg, mode, index, data, previous.genotype()).to(device)
    net = set_sync_batchnorm(set_amp(set_channels_last(net, cfg.channels_last), cfg.amp), run_data.dist.world)
    _set_recompute(net, cfg.recompute_cells, logger)
    policy_step = build_policy_step(spec, sec, device, previous.policy_export)
    epochs = stage_epochs(spec, sec.train)
    loop = LoopConfig(stage=spec.kind.value, stage_index=index, epochs=epochs, seed=cfg.seed,
                      grad_clip=sec.train.w_grad_clip, aux_weight=sec.arch.aux_weight,
                      drop_path_max=0.0 if spec.kind is Kind.SEARCH else sec.arch.drop_path_prob,
                      max_steps=sec.train.max_steps_per_epoch, log_every=cfg.log_every,
                      progress=progress_enabled(cfg.progress), searching=spec.kind is Kind.SEARCH,
                      nan_patience=sec.train.nan_patience)
    dist = run_data.dist
    weight_update = build_weight_update(spec, sec, net, epochs, data.channels, dist)
    policy_step.take_val_grads_from(weight_update, net)
    if weight_update.note:
        logger.info(weight_update.note)
    searcher = Searcher(net, weight_update, build_arch_step(spec, net, sec, dist), policy_step,
                        build_train_augment(sec.dataset, sec.arch, data).to(device), loaders["train"],
                        loaders["val_stream"], loaders["val"], device, loop, logger,
                        eval_transform=build_eval_transform(sec.dataset, sec.arch, data, device), dist=dist)
    if spec.kind is Kind.CONTINUE:
        if hand_over(searcher, previous.carry, sec):
            logger.info("continued training augments as `train` does (da.continue_with_policy false); "
                        "policy.json keeps the searched policy")
    return Stage(index, spec, sec, data, loaders, net, searcher)


def _set_recompute(net: nn.Module, recompute_cells: int, logger: RunLogger) -> None:
    if hasattr(net, "recompute_cells"):
        net.recompute_cells = recompute_cells
    elif recompute_cells:
        logger.info(f"recompute_cells {recompute_cells} ignored: {type(net).__name__} has no cells")


def hand_over(searcher: Searcher, carry: dict | None, sec: StageSections) -> bool:
    """DHA's switch after a single-stage search: the same network, policy and learned lr / wd
    (`carry`; None when resuming inside the stage, whose own state follows) go on with the
    architecture fixed, stronger magnitudes, the *_tune learning rates and (`hpo.restart`) lr / wd
    back at the middle of their bounds. With `da.continue_with_policy` false the policy stops here:
    the continued training augments as `train` does (the run keeps the searched policy's export).
    Returns whether it stopped the policy."""
    if carry is not None:
        searcher.load_carry_state(carry)
    searcher.net.freeze_arch()
    stopped = searcher.policy is not None and not sec.da.continue_with_policy
    if stopped:
        searcher.policy_step = PolicyStep()
    if searcher.policy is not None:
        searcher.policy.set_magnitude(sec.da.magnitude_tune)
    searcher.policy_step.set_lr(sec.da.d_lr_tune)
    hyper = searcher.weight_update.hyper
    if hyper is not None:
        if sec.hpo.update_rule == "reference":  # the log rule's step is scale-free: it stays
            hyper.set_h_lr(sec.hpo.h_lr_tune)
        if sec.hpo.restart:
            hyper.restart()
    return stopped


def resume_stage(stage: Stage, state: RunState) -> int:
    """Load the state saved inside this stage, if any; returns the epoch to start from."""
    if state.searcher is None:
        return 0
    stage.searcher.load_state_dict(state.searcher)
    return state.epoch


def describe_mode(mode: Mode, cfg: RunConfig) -> list[str]:
    """Human-readable stage list for --dry_run."""
    lines = []
    for i, spec in enumerate(mode.stages):
        sec = sections_for(cfg, spec)
        what = {Kind.SEARCH: f"search a {spec.space.value if spec.space else ''} supernet "
                             f"(arch update: {spec.arch_update.value})",
                Kind.CONTINUE: "continue training the same network with the architecture frozen",
                Kind.RETRAIN: "train the genotype from scratch"}[spec.kind]
        lines.append(f"stage {i + 1}: {what}; {stage_epochs(spec, sec.train)} epochs"
                     + (" at most" if spec.space is Space.ISTA_SINGLE and spec.kind is Kind.SEARCH else "")
                     + (f"; augmentation: {spec.augment.value}" if spec.augment is not Augment.NONE else "")
                     + ("; learned lr / weight decay" if spec.hpo else ""))
    return lines
