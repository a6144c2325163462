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
from search.weight_step import HyperUpdate, SgdUpdate
from utils.config import ArchConfig, DaConfig, DatasetConfig, HpoConfig, RunConfig, TrainConfig
from utils.errors import UserError
from utils.logging import RunLogger, progress_enabled


@dataclass
class Sections:
    """The config sections one stage reads."""

    dataset: DatasetConfig
    train: TrainConfig
    arch: ArchConfig
    hpo: HpoConfig
    da: DaConfig


def sections_for(cfg: RunConfig, spec: StageSpec) -> Sections:
    """First-stage sections or the tune_* ones."""
    if spec.sections == "tune":
        return Sections(cfg.tune_dataset, cfg.tune, cfg.tune_architecture, cfg.hpo_tune, cfg.da_tune)
    return Sections(cfg.dataset, cfg.train, cfg.train_architecture, cfg.hpo, cfg.da)


@dataclass
class Components:
    """What a stage trains besides the network; single-stage modes carry them into stage 2."""

    policy: object | None = None  # AugmentPolicy
    policy_optimizer: torch.optim.Optimizer | None = None
    hyper: object | None = None  # HyperGradient


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
        # Full batches only, as DHA's FitSampler: a pass's leftover few images would otherwise make
        # one hypergradient / architecture step in every pass a noisy small-batch one.
        "val_stream": InfiniteBatches(BatchLoader(data.val, ds.batch_size, shuffle=True,
                                                  drop_last=len(data.val) >= ds.batch_size, **common)),
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


def build_policy(spec: StageSpec, sec: Sections, data: DataSplits, device: torch.device):
    """The stage's augmentation policy and its optimizer (None, None when there is none)."""
    from augment.ops import DHA_OPS, FASTER_AA_OPS
    da = sec.da
    if spec.augment == "pair":
        from augment.pair_policy import PairPolicy
        policy = PairPolicy(DHA_OPS[sec.dataset.aug_choice], temperature=da.temperature, magnitude=da.magnitude,
                            update_rule=da.update_rule, baseline_momentum=da.baseline_momentum).to(device)
        opt = torch.optim.SGD(policy.policy_parameters(), lr=da.d_lr, momentum=da.d_momentum,
                              nesterov=da.d_nesterov and da.d_momentum > 0, weight_decay=da.d_weight_decay)
        return policy, opt
    if spec.augment == "subpolicy":
        from augment.subpolicy import SubPolicy
        policy = SubPolicy(FASTER_AA_OPS, num_subpolicies=da.subpolicies, num_stages=da.subpolicy_stages,
                           temperature=da.subpolicy_temperature).to(device)
        # Faster-AA learns its policy with Adam; d_lr is its learning rate.
        return policy, torch.optim.Adam(policy.policy_parameters(), lr=da.d_lr, betas=(0.5, 0.999))
    return build_fixed_policy(da.fixed_policy, sec.dataset, device), None


def build_fixed_policy(name: str, ds: DatasetConfig, device: torch.device):
    """A non-searched policy: none, a RandAugment / TrivialAugment baseline, or a replayed policy.json."""
    if name == "none":
        return None
    from augment.ops import DHA_OPS
    if name == "randaugment":
        from augment.baselines import RandAugmentPolicy
        return RandAugmentPolicy(DHA_OPS[ds.aug_choice]).to(device)
    if name == "trivialaugment":
        from augment.baselines import TrivialAugmentPolicy
        return TrivialAugmentPolicy(DHA_OPS[ds.aug_choice]).to(device)
    import json
    from pathlib import Path

    from augment.replay import from_export
    path = Path(name)
    if not path.is_file():
        raise UserError(f"da.fixed_policy: '{name}' is neither none, randaugment, trivialaugment nor a policy.json file")
    try:
        return from_export(json.loads(path.read_text())).to(device)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"da.fixed_policy: '{name}' is not a policy this tool exported ({exc})") from None


def build_hyper(sec: Sections):
    """Learned lr / wd for a stage with HPO."""
    from hpo.hypergrad import HyperGradient
    h = sec.hpo
    return HyperGradient(lr_bounds=(h.learning_low, h.learning_up), wd_bounds=(h.weight_decay_low, h.weight_decay_up),
                         h_lr=h.h_lr, h_momentum=h.h_momentum, h_nesterov=h.h_nesterov,
                         h_weight_decay=h.h_weight_decay, every=h.every, signal=h.signal)


def build_components(spec: StageSpec, sec: Sections, data: DataSplits, device: torch.device,
                     replay: dict | None = None) -> Components:
    """Fresh policy and hyper-parameters for a stage ("replay": an exported policy, fixed)."""
    if spec.augment == "replay":
        from augment.replay import from_export
        policy, opt = from_export(replay or {"type": "none"}).to(device), None
    else:
        policy, opt = build_policy(spec, sec, data, device)
    return Components(policy, opt, build_hyper(sec) if spec.hpo else None)


def enter_continue_stage(components: Components, sec: Sections) -> None:
    """DHA's switch after a single-stage search: stronger magnitudes, the *_tune learning rates, restart."""
    if components.policy is not None:
        components.policy.set_magnitude(sec.da.magnitude_tune)
    if components.policy_optimizer is not None:
        for group in components.policy_optimizer.param_groups:
            group["lr"] = sec.da.d_lr_tune
    if components.hyper is not None:
        components.hyper.set_h_lr(sec.hpo.h_lr_tune)
        if sec.hpo.restart:
            components.hyper.restart()


def build_searcher(cfg: RunConfig, spec: StageSpec, stage_index: int, net: torch.nn.Module, data: DataSplits,
                   loaders: dict, device: torch.device, logger: RunLogger, components: Components) -> Searcher:
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
    if components.hyper is not None:
        update = HyperUpdate(optimizer, components.hyper, sec.hpo.reference_val_pass, background=sec.hpo.overlap)
        schedule = components.hyper
    else:
        update, schedule = SgdUpdate(optimizer), build_schedule(spec, sec.train, epochs)
    return Searcher(net, update, schedule, build_arch_step(spec, net, sec.arch, sec.train),
                    train_augment, loaders["train"], loaders["val_stream"], loaders["val"], device, loop, logger,
                    policy=components.policy, policy_optimizer=components.policy_optimizer,
                    eval_transform=build_eval_transform(sec.dataset, sec.arch, data, device))


def build_eval_transform(ds: DatasetConfig, arch: ArchConfig, data: DataSplits, device: torch.device):
    """None, or (reference quirk `cutout_eval`) the Cutout the original also applied to val / test."""
    if not ds.cutout_eval or not ds.cutout_size:
        return None
    return TrainAugment(cutout_size=ds.cutout_size, flip=False, mean=data.mean).to(device).post


def describe_mode(mode: Mode, cfg: RunConfig) -> list[str]:
    """Human-readable stage list for --dry_run."""
    lines = []
    for i, spec in enumerate(mode.stages):
        sec = sections_for(cfg, spec)
        what = {"search": f"search a {spec.space} supernet (arch update: {spec.arch_update})",
                "continue": "continue training the same network with the architecture frozen",
                "retrain": "train the found genotype from scratch"}[spec.kind]
        lines.append(f"stage {i + 1}: {what}; {stage_epochs(spec, sec.train)} epochs"
                     + (" at most" if spec.kind == "search" and spec.space == "ista_single" else "")
                     + (f"; augmentation: {spec.augment}" if spec.augment != "none" else "")
                     + ("; learned lr / weight decay" if spec.hpo else ""))
    return lines
