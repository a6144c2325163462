"""The only code that reads config fields: it turns sections of a RunConfig into finished objects."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from augment.fixed import TrainAugment
from datasets import BatchLoader, DataSplits, InfiniteBatches, build_splits
from hpo.schedule import ConstantSchedule, CosineSchedule
from models.darts import DartsSupernet
from models.genotypes import Genotype
from models.ista import IstaSupernet
from models.network import Network, network_params_m
from models.supernet import Supernet
from search.arch_step import (ArchStep, FirstOrderArchStep, JointArchStep, SecondOrderArchStep,
                              make_arch_optimizer)
from search.modes import Mode, StageSpec
from search.searcher import LoopConfig, Searcher
from utils.config import ArchConfig, DatasetConfig, RunConfig, TrainConfig
from utils.errors import UserError
from utils.logging import RunLogger, progress_enabled


@dataclass
class Sections:
    """The config sections one stage reads."""

    dataset: DatasetConfig
    train: TrainConfig
    arch: ArchConfig


def sections_for(cfg: RunConfig, spec: StageSpec) -> Sections:
    """First-stage sections or the tune_* ones."""
    if spec.sections == "tune":
        return Sections(cfg.tune_dataset, cfg.tune, cfg.tune_architecture)
    return Sections(cfg.dataset, cfg.train, cfg.train_architecture)


def stem_for(arch: ArchConfig) -> str:
    """'auto' -> the 224-px stem for large inputs, the CIFAR stem otherwise."""
    if arch.stem != "auto":
        return arch.stem
    return "imagenet" if arch.input_size >= 128 else "cifar"


def build_data(ds: DatasetConfig, arch: ArchConfig, seed: int) -> DataSplits:
    """Train / val / test splits of the configured dataset."""
    return build_splits(ds.name, ds.root, image_size=arch.input_size, val_ratio=ds.val_ratio, seed=seed,
                        download=ds.download, val_in_train=ds.val_in_train, num_classes=ds.num_class,
                        max_train=ds.max_train, max_test=ds.max_test, mean=ds.mean, std=ds.std)


def _network_kwargs(arch: ArchConfig, data: DataSplits) -> dict:
    return dict(init_channels=arch.init_channels, num_classes=data.num_classes, layers=arch.layers,
                stem=stem_for(arch), in_channels=data.channels, mean=list(data.mean), std=list(data.std))


def build_supernet(space: str, arch: ArchConfig, data: DataSplits, size_arch: ArchConfig) -> Supernet:
    """The supernet of `space`; ISTA's size limit is measured on the network `size_arch` describes."""
    kwargs = _network_kwargs(arch, data)
    if space == "darts":
        return DartsSupernet(steps=arch.steps, **kwargs)
    if space in ("ista", "ista_single"):
        size_fn = partial(network_params_m, init_channels=size_arch.init_channels, num_classes=data.num_classes,
                          layers=size_arch.layers, stem=stem_for(size_arch), in_channels=data.channels)
        return IstaSupernet(single_stage=space == "ista_single", steps=arch.steps, proj_dims=arch.proj_dims,
                            sparseness=arch.sparseness, auxiliary=arch.auxiliary and arch.aux_weight > 0,
                            dist_limit=arch.dist_limit, param_limit=arch.param_limit, size_fn=size_fn,
                            lasso_alpha=arch.lasso_alpha, measurement=arch.measurement,
                            reference_selection=arch.reference_selection, lasso_intercept=arch.lasso_intercept,
                            **kwargs)
    raise UserError(f"search space '{space}' is not available yet")


def build_network(genotype: Genotype, arch: ArchConfig, data: DataSplits) -> Network:
    """The discrete network of a genotype, fresh weights."""
    return Network(genotype, auxiliary=arch.auxiliary and arch.aux_weight > 0, **_network_kwargs(arch, data))


def build_train_augment(ds: DatasetConfig, arch: ArchConfig, data: DataSplits) -> TrainAugment:
    """Crop/flip on the device for in-memory data (file loaders crop and flip per image), Cutout always."""
    padding = 0
    if ds.random_crop and data.in_memory:
        padding = ds.crop_padding if ds.crop_padding is not None else arch.input_size // 8
    return TrainAugment(crop_padding=padding, flip=ds.flip and data.in_memory, cutout_size=ds.cutout_size or 0,
                        mean=data.mean)


def build_loaders(data: DataSplits, ds: DatasetConfig, seed: int) -> dict:
    """Training batches, an endless validation stream (bilevel updates) and evaluation loaders."""
    if len(data.train) < ds.batch_size:
        raise UserError(f"the training split has {len(data.train)} images, fewer than one batch "
                        f"(dataset.batch_size={ds.batch_size}); lower the batch size")
    common = dict(seed=seed, workers=ds.workers, pin_memory=ds.pin)
    return {
        "train": BatchLoader(data.train, ds.batch_size, shuffle=True, drop_last=True, **common),
        "val_stream": InfiniteBatches(BatchLoader(data.val, ds.batch_size, shuffle=True, drop_last=False, **common)),
        "val": BatchLoader(data.val, ds.batch_size, shuffle=False, drop_last=False, **common),
        "test": BatchLoader(data.test, ds.batch_size, shuffle=False, drop_last=False, **common),
    }


def build_arch_step(spec: StageSpec, net: torch.nn.Module, arch: ArchConfig, train: TrainConfig) -> ArchStep:
    """The architecture update rule of a stage."""
    if spec.arch_update == "none" or not net.arch_parameters():
        return ArchStep()
    opt = make_arch_optimizer([p for p in net.arch_parameters()], arch.alpha_lr, arch.alpha_weight_decay)
    if spec.arch_update == "joint":
        return JointArchStep(opt)
    if spec.arch_update == "val" or (spec.arch_update == "bilevel" and arch.order == 1):
        return FirstOrderArchStep(opt)
    return SecondOrderArchStep(opt, momentum=train.w_momentum, weight_decay=train.w_weight_decay)


def build_schedule(spec: StageSpec, train: TrainConfig, epochs: int):
    """Single-stage ISTA searches at a constant lr (as DHA); everything else anneals by cosine."""
    if spec.kind == "search" and spec.space == "ista_single":
        return ConstantSchedule(train.w_lr, train.w_weight_decay)
    return CosineSchedule(train.w_lr, train.w_lr_min, epochs, train.w_weight_decay)


def stage_epochs(spec: StageSpec, train: TrainConfig) -> int:
    """Search epochs, continued-training epochs (retrain_epochs) or retrain epochs (tune.epochs)."""
    return train.retrain_epochs if spec.kind == "continue" else train.epochs


def build_searcher(cfg: RunConfig, spec: StageSpec, stage_index: int, net: torch.nn.Module, data: DataSplits,
                   loaders: dict, device: torch.device, logger: RunLogger) -> Searcher:
    """Everything one stage's loop needs, from the stage's config sections."""
    sec = sections_for(cfg, spec)
    epochs = stage_epochs(spec, sec.train)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=sec.train.w_lr, momentum=sec.train.w_momentum,
                                weight_decay=sec.train.w_weight_decay)
    loop = LoopConfig(stage=spec.kind, stage_index=stage_index, epochs=epochs, seed=cfg.seed,
                      grad_clip=sec.train.w_grad_clip, aux_weight=sec.arch.aux_weight,
                      drop_path_max=0.0 if spec.kind == "search" else sec.arch.drop_path_prob,
                      max_steps=sec.train.max_steps_per_epoch, log_every=cfg.log_every,
                      progress=progress_enabled(cfg.progress), searching=spec.kind == "search")
    train_augment = build_train_augment(sec.dataset, sec.arch, data).to(device)
    return Searcher(net, optimizer, build_schedule(spec, sec.train, epochs), build_arch_step(spec, net, sec.arch, sec.train),
                    train_augment, loaders["train"], loaders["val_stream"], loaders["val"], device, loop, logger)


def describe_mode(mode: Mode, cfg: RunConfig) -> list[str]:
    """Human-readable stage list for --dry_run."""
    lines = []
    for i, spec in enumerate(mode.stages):
        sec = sections_for(cfg, spec)
        what = {"search": f"search a {spec.space} supernet (arch update: {spec.arch_update})",
                "continue": "continue training the same network with the architecture frozen",
                "retrain": "train the found genotype from scratch"}[spec.kind]
        lines.append(f"stage {i + 1}: {what}; {stage_epochs(spec, sec.train)} epochs"
                     + (f" at most" if spec.kind == "search" and spec.space == "ista_single" else ""))
    return lines
