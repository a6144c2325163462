"""Config sections -> finished objects: networks, architecture update rules, lr / wd (the policies:
search/build_policy.py). Each enum member of search/modes.py maps to its builder through a table
(checked at import); search/stage.py puts one stage together from these."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from datasets import DataSplits
from hpo.hypergrad import HyperGradient, LogHyperGradient
from hpo.schedule import ConstantSchedule, CosineSchedule
from hpo.weight_update import HyperUpdate, WeightUpdate
from models.darts import DartsSupernet
from models.gdas import GdasSupernet
from models.genotypes import Genotype, load_genotype
from models.ista import IstaSupernet
from models.mobile_ista import IstaMobileSupernet
from models.mobile_supernet import MobileSupernet
from models.mobilenet import MobileGenotype, MobileNetwork
from models.network import Network, network_params_m
from models.summary import count_madds_m
from search.arch_step import (ArchStep, FirstOrderArchStep, JointArchStep, SecondOrderArchStep,
                              make_arch_optimizer)
from search.modes import ArchUpdate, Kind, Mode, Sections, Space, StageSpec
from utils.config_sections import ArchConfig, DaConfig, DatasetConfig, HpoConfig, RunConfig, TrainConfig
from utils.distributed import Distributed
from utils.errors import UserError


@dataclass
class StageSections:
    """The config sections one stage reads."""

    dataset: DatasetConfig
    train: TrainConfig
    arch: ArchConfig
    hpo: HpoConfig
    da: DaConfig


def sections_for(cfg: RunConfig, spec: StageSpec) -> StageSections:
    """First-stage sections or the tune_* ones."""
    if spec.sections is Sections.TUNE:
        return StageSections(cfg.tune_dataset, cfg.tune, cfg.tune_architecture, cfg.hpo_tune, cfg.da_tune)
    return StageSections(cfg.dataset, cfg.train, cfg.train_architecture, cfg.hpo, cfg.da)


def stem_for(arch: ArchConfig) -> str:
    """'auto' -> the 224-px stem for large inputs, the CIFAR stem otherwise."""
    if arch.stem != "auto":
        return arch.stem
    return "imagenet" if arch.input_size >= 128 else "cifar"




def _network_kwargs(arch: ArchConfig, data: DataSplits) -> dict:
    return dict(init_channels=arch.init_channels, num_classes=data.num_classes, layers=arch.layers,
                stem=stem_for(arch), in_channels=data.channels, mean=list(data.mean), std=list(data.std))


def _mobile_supernet(sec: StageSections, data: DataSplits, mixing: str) -> nn.Module:
    arch = sec.arch
    return MobileSupernet(data.num_classes, mixing=mixing, width=arch.width, stem=stem_for(arch),
                          in_channels=data.channels, mean=list(data.mean), std=list(data.std),
                          epochs=sec.train.epochs, tau_max=arch.tau_max, tau_min=arch.tau_min)


def _darts_supernet(sec: StageSections, data: DataSplits, size_arch: ArchConfig) -> nn.Module:
    if sec.arch.space == "mobilenet":
        return _mobile_supernet(sec, data, "softmax")
    return DartsSupernet(steps=sec.arch.steps, **_network_kwargs(sec.arch, data))


def _ista_supernet(sec: StageSections, data: DataSplits, size_arch: ArchConfig, single_stage: bool) -> nn.Module:
    arch = sec.arch
    if arch.space == "mobilenet":  # single stage only (check_inputs refuses the two-stage modes)
        return IstaMobileSupernet(data.num_classes, width=arch.width, stem=stem_for(arch), in_channels=data.channels,
                                  mean=list(data.mean), std=list(data.std), proj_dims=arch.proj_dims,
                                  dist_limit=arch.dist_limit, relative_limit=arch.relative_limit,
                                  lasso_alpha=arch.lasso_alpha, mixing=arch.mixing,
                                  param_limit=arch.param_limit)
    size_fn = partial(network_params_m, init_channels=size_arch.init_channels, num_classes=data.num_classes,
                      layers=size_arch.layers, stem=stem_for(size_arch), in_channels=data.channels)
    return IstaSupernet(single_stage=single_stage, steps=arch.steps, proj_dims=arch.proj_dims,
                        sparseness=arch.sparseness, auxiliary=arch.auxiliary and arch.aux_weight > 0,
                        dist_limit=arch.dist_limit, relative_limit=arch.relative_limit,
                        param_limit=arch.param_limit, size_fn=size_fn,
                        lasso_alpha=arch.lasso_alpha, measurement=arch.measurement,
                        reference_selection=arch.reference_selection, lasso_intercept=arch.lasso_intercept,
                        mixing=arch.mixing, **_network_kwargs(arch, data))


def _gdas_supernet(sec: StageSections, data: DataSplits, size_arch: ArchConfig) -> nn.Module:
    if sec.arch.space == "mobilenet":
        return _mobile_supernet(sec, data, "gumbel")
    arch = sec.arch  # tau anneals over the search epochs
    return GdasSupernet(steps=arch.steps, epochs=sec.train.epochs, tau_max=arch.tau_max, tau_min=arch.tau_min,
                        **_network_kwargs(arch, data))


# One builder per member of each enum of search/modes.py (checked below, at import).
SUPERNETS = {
    Space.DARTS: _darts_supernet,
    Space.ISTA: partial(_ista_supernet, single_stage=False),
    Space.ISTA_SINGLE: partial(_ista_supernet, single_stage=True),
    Space.GDAS: _gdas_supernet,
}


# The searches that run on the MobileNet-like space (train_architecture.space: mobilenet).
MOBILENET_SEARCHES = (Space.DARTS, Space.GDAS, Space.ISTA_SINGLE)


def build_supernet(space: Space, sec: StageSections, data: DataSplits, size_arch: ArchConfig) -> nn.Module:
    """The supernet of `space` from a stage's sections; ISTA's size limit is measured on the network
    `size_arch` describes."""
    return SUPERNETS[space](sec, data, size_arch)


def build_network(genotype: Genotype | MobileGenotype, arch: ArchConfig, data: DataSplits) -> nn.Module:
    """The discrete network of a genotype (either space), fresh weights."""
    if isinstance(genotype, MobileGenotype):
        return MobileNetwork(genotype, data.num_classes, width=arch.width, stem=stem_for(arch),
                             in_channels=data.channels, mean=list(data.mean), std=list(data.std))
    return Network(genotype, auxiliary=arch.auxiliary and arch.aux_weight > 0, **_network_kwargs(arch, data))


def configured_genotype(arch: ArchConfig) -> Genotype:
    """The genotype a mode without a search (`train`, `train_doal`, ...) trains (`genotype` of its architecture section)."""
    if arch.genotype is None:
        raise UserError("a mode without a search needs tune_architecture.genotype: DARTS_V2, PC_DARTS, MOBILENET_V2, a "
                        "genotype JSON string or a run's genotype.json")
    try:
        return load_genotype(arch.genotype)
    except ValueError as exc:
        raise UserError(f"tune_architecture.genotype: {exc}") from None


def build_stage_net(cfg: RunConfig, mode: Mode, index: int, data: DataSplits, genotype: Genotype | None) -> nn.Module:
    """The network stage `index` trains, with fresh weights (a checkpoint or the previous stage fills them):
    a retrain stage trains the searched genotype, or without a search the configured one."""
    spec = mode.stages[index]
    sec = sections_for(cfg, spec)
    if spec.kind is Kind.RETRAIN:
        return build_network(genotype if genotype is not None else configured_genotype(sec.arch), sec.arch, data)
    last = mode.stages[-1]  # ISTA's size limit applies to the network the mode ends with
    return build_supernet(spec.space, sec, data, sections_for(cfg, last).arch if last.kind is Kind.RETRAIN else sec.arch)


def _bilevel_arch_step(opt: torch.optim.Optimizer, sec: StageSections) -> ArchStep:
    if sec.arch.order == 1:
        return FirstOrderArchStep(opt)
    return SecondOrderArchStep(opt, momentum=sec.train.w_momentum, weight_decay=sec.train.w_weight_decay)


ARCH_STEPS = {
    ArchUpdate.NONE: lambda opt, sec: ArchStep(),
    ArchUpdate.JOINT: lambda opt, sec: JointArchStep(opt),
    ArchUpdate.VAL: lambda opt, sec: FirstOrderArchStep(opt),
    ArchUpdate.BILEVEL: _bilevel_arch_step,
}


def build_arch_step(spec: StageSpec, net: nn.Module, sec: StageSections,
                    dist: Distributed = Distributed()) -> ArchStep:
    """The architecture update rule of a stage, with its Adam over the architecture parameters."""
    opt = None
    if spec.arch_update is not ArchUpdate.NONE:
        opt = make_arch_optimizer(list(net.arch_parameters()), sec.arch.alpha_lr, sec.arch.alpha_weight_decay)
    step = ARCH_STEPS[spec.arch_update](opt, sec)
    step.dist = dist
    return step


def build_schedule(spec: StageSpec, train: TrainConfig, epochs: int):
    """A constant lr where the mode says so (DHA's single-stage search); a cosine otherwise."""
    if spec.constant_lr:
        return ConstantSchedule(train.w_lr, train.w_weight_decay)
    return CosineSchedule(train.w_lr, train.w_lr_min, epochs, train.w_weight_decay)


def stage_epochs(spec: StageSpec, train: TrainConfig) -> int:
    """Search epochs, continued-training epochs (retrain_epochs) or retrain epochs (tune.epochs)."""
    return {Kind.SEARCH: train.epochs, Kind.CONTINUE: train.retrain_epochs, Kind.RETRAIN: train.epochs}[spec.kind]


for _enum, _table in ((Space, SUPERNETS), (ArchUpdate, ARCH_STEPS)):
    if set(_table) != set(_enum):
        raise ImportError(f"search/build.py: no builder for {sorted(m.value for m in set(_enum) - set(_table))}")


def build_hyper(sec: StageSections) -> HyperGradient:
    """Learned lr / wd for a stage with HPO: the scale-free log rule, or DHA's SGD on the values."""
    h = sec.hpo
    if h.update_rule == "log":
        return LogHyperGradient(lr_bounds=(h.learning_low, h.learning_up),
                                wd_bounds=(h.weight_decay_low, h.weight_decay_up), step=h.log_step,
                                every=h.every, signal=h.signal)
    return HyperGradient(lr_bounds=(h.learning_low, h.learning_up), wd_bounds=(h.weight_decay_low, h.weight_decay_up),
                         h_lr=h.h_lr, h_momentum=h.h_momentum, h_nesterov=h.h_nesterov,
                         h_weight_decay=h.h_weight_decay, every=h.every, signal=h.signal)


# The hypergradient's validation pass overlaps the next training step (CPU) only while a step is
# small. Measured on 2 cores: at C=8, 5 cells, batch 32 (0.22 G multiply-adds per training forward)
# ista_single_doal runs at 1.53-1.74x ista_single_nor with the overlap, 1.89x without; at DHA's size
# (C=36, 20 cells, batch 96: 42.8 G) the overlap is 22% slower and takes 67% more memory
# (bench/memory.py: 13.1 s / 15,827 MiB against 10.7 s / 9,467 MiB). The limit lies between the two.
OVERLAP_MAX_GMADDS = 3.0


def overlap_choice(net: nn.Module, sec: StageSections, channels: int, world: int = 1) -> tuple[bool, str]:
    """Whether the validation pass runs beside the next step, and why (for the log)."""
    if not sec.hpo.overlap or sec.hpo.reference_val_pass:
        return False, "not overlapped (hpo.overlap is false or hpo.reference_val_pass is true)"
    if world > 1:  # its all-reduce would run on a helper thread, beside the training step's own
        return False, "not overlapped (several processes: each pass's collectives must keep one order)"
    if next(net.parameters()).device.type != "cpu":
        return False, "not overlapped (the overlap is for CPUs, whose small ops leave threads idle)"
    gmadds = count_madds_m(net, sec.arch.input_size, channels) * sec.dataset.batch_size / 1e3
    if gmadds > OVERLAP_MAX_GMADDS:
        return False, (f"not overlapped: a training forward is {gmadds:.1f} G multiply-adds, above "
                       f"{OVERLAP_MAX_GMADDS} G, where its ops already use every thread and the overlap "
                       f"measured slower and much larger (a second graph)")
    return True, (f"overlapped with the next step: a training forward is {gmadds:.2f} G multiply-adds, at most "
                  f"{OVERLAP_MAX_GMADDS} G, where ops leave threads idle")


def build_weight_update(spec: StageSpec, sec: StageSections, net: nn.Module, epochs: int,
                        channels: int = 3, dist: Distributed = Distributed()) -> WeightUpdate:
    """SGD over the weights at a scheduled lr / wd, or at learned ones (`note` says whether and why
    the hypergradient's validation pass overlaps the next step)."""
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=sec.train.w_lr, momentum=sec.train.w_momentum,
                                weight_decay=sec.train.w_weight_decay)
    if not spec.hpo:
        return WeightUpdate(optimizer, build_schedule(spec, sec.train, epochs))
    h = sec.hpo
    # The reference's validation pass is a plain training forward (it moves the BN statistics), so
    # it cannot overlap the next training pass; ours is a probe that writes nothing.
    val_forward = net if h.reference_val_pass else partial(net, probe=True)
    background, note = overlap_choice(net, sec, channels, dist.world)
    shape = build_schedule(spec, sec.train, epochs) if h.anneal else None
    update = HyperUpdate(optimizer, build_hyper(sec), val_forward, background=background, shape=shape, dist=dist,
                         lookahead=h.lookahead)
    update.note = f"hypergradient validation pass {note}"
    return update
