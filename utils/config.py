"""The run configuration: dataclasses with DHA's JSON key names, strict loading, `--set` overrides.

Defaults live on the fields below, each with a comment. A JSON file only needs the keys that differ.
Unknown keys are errors (with the closest valid key suggested); keys the original DHA configs carry
but nothing reads are accepted and reported once (`LEGACY_KEYS`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from utils.errors import ConfigError


@dataclass
class DatasetConfig:
    """`dataset` / `tune_dataset`: which data, how it is split and batched."""

    name: str = "cifar10"  # cifar10 cifar100 svhn flowers102 imagenet sport8 mit67 imagefolder digits fake
    root: str = "data"  # folder holding the dataset (torchvision layout or ImageFolder train/ + val|test/)
    download: bool = False  # let torchvision fetch cifar10/cifar100/svhn/flowers102 into root
    num_class: Optional[int] = None  # classes; checked against the data (sets the count for `fake`)
    aug_choice: int = 14  # size of DHA's augmentation op list (4, 11, 14 or 15); must equal da.policy
    mean: Optional[list[float]] = None  # per-channel mean on the [0,1] scale; None = dataset default
    std: Optional[list[float]] = None  # per-channel std on the [0,1] scale; None = dataset default
    img_min_size: int = 32  # DHA: image side used by absolute-translate augmentation ops
    val_ratio: float = 0.5  # fraction of the training images held out as the validation split
    val_in_train: bool = False  # reference quirk (DHA real_val=false): validation images also train
    cutout_size: Optional[int] = 0  # side of the Cutout square on training batches; 0/null = off
    batch_size: int = 64  # training batch; validation batches have the same size
    workers: int = 2  # loader processes for file-based datasets (in-memory ones need none)
    pin: bool = False  # pin host memory for faster copies to the GPU
    max_train: Optional[int] = None  # cap on the training pool (a seeded subset), for quick runs
    max_test: Optional[int] = None  # cap on the test set, for quick runs
    random_crop: bool = True  # random crop with padding on training batches (small-image datasets)
    crop_padding: Optional[int] = None  # padding of that crop; None = input_size // 8 (4 for 32 px)
    flip: bool = True  # random horizontal flip on training batches (off for digits)
    cutout_eval: bool = False  # reference quirk: Cutout also on validation and test batches (DHA's DA path)


@dataclass
class TrainConfig:
    """`train` / `tune`: weight training of the supernet or of the discrete network."""

    epochs: int = 50  # search epochs (single-stage: an upper bound) or, in `tune`, retrain epochs
    retrain_epochs: int = 0  # single-stage: epochs the same network keeps training after the search
    w_lr: float = 0.025  # SGD learning rate of the weights (cosine-annealed)
    w_lr_min: float = 0.001  # end of the cosine schedule
    w_momentum: float = 0.9  # SGD momentum
    w_weight_decay: float = 3e-4  # SGD weight decay
    w_grad_clip: float = 5.0  # global gradient-norm clip of the weights; 0 = off
    max_steps_per_epoch: Optional[int] = None  # cap on steps per epoch, for smoke tests and quick looks


@dataclass
class ArchConfig:
    """`train_architecture` / `tune_architecture`: the network and the architecture search."""

    input_size: int = 32  # images are resized to input_size x input_size
    init_channels: int = 16  # C, channels of the first cells (must be even)
    layers: int = 8  # number of cells; reductions at 1/3 and 2/3 depth
    steps: int = 4  # intermediate nodes per cell
    stem: str = "auto"  # cifar (3x3 conv) | imagenet (stride-8 stem) | auto: imagenet when input_size >= 128
    alpha_lr: float = 3e-4  # Adam learning rate of the architecture parameters
    alpha_weight_decay: float = 1e-3  # Adam weight decay of the architecture parameters
    order: int = 2  # DARTS bilevel update: 1 = first order, 2 = unrolled second order
    proj_dims: int = 7  # ISTA: length of the compressed vector z per node
    sparseness: int = 2  # ISTA: (edge, op) pairs kept per node
    drop_path_prob: float = 0.2  # largest drop-path probability (ramped up over the training epochs)
    auxiliary: bool = True  # build the auxiliary head (single-stage supernet, discrete networks)
    aux_weight: float = 0.4  # weight of the auxiliary loss; 0 = no auxiliary head
    param_limit: Optional[float] = None  # ISTA: reject architectures with >= this many M parameters
    dist_limit: float = 1e-3  # single-stage ISTA: freeze a node once its code moves less than this
    lasso_alpha: float = 1e-5  # ISTA: L1 weight of the sparse recovery
    measurement: str = "gaussian"  # ISTA measurement matrices: gaussian | uniform (the reference's)
    mixing: str = "normalized"  # ISTA: per node, weights scaled to sum |w| = sparseness (ours) | reference (DHA's raw weights)
    genotype: Optional[str] = None  # `train` mode: DARTS_V2, PC_DARTS, ... , a genotype JSON string or a genotype.json path
    reference_selection: bool = False  # ISTA: rank signed codes and never pick dil_conv_5x5 (DHA quirk)
    lasso_intercept: bool = False  # ISTA: fit an intercept in the recovery, as scikit-learn did for DHA


@dataclass
class HpoConfig:
    """`hpo` / `hpo_tune`: learned learning rate and weight decay (the `_hpo` and `_doal` modes)."""

    update_rule: str = "log"  # log: Adam on log lr / log wd (scale-free) | reference: DHA's SGD on lr / wd
    log_step: float = 0.01  # update_rule log: Adam step size in log space (about the largest relative change per step)
    h_lr: float = 1e-8  # update_rule reference: learning rate of the hyper-parameter SGD
    h_lr_tune: float = 2e-7  # ... replaces h_lr after a single-stage search
    h_momentum: float = 0.9
    h_nesterov: bool = True
    h_weight_decay: float = 5e-4  # decay applied to the hyper-parameters themselves
    learning_low: float = 1e-3  # bounds of the learned weight learning rate (init = midpoint)
    learning_up: float = 0.05
    weight_decay_low: float = 1e-4  # bounds of the learned weight decay (init = midpoint)
    weight_decay_up: float = 5e-4
    restart: bool = False  # reset lr and wd to the midpoints when the search ends
    every: int = 1  # update the hyper-parameters every N steps
    signal: str = "val"  # val (DHA) | train (hypergradient descent of Baydin et al.)
    reference_val_pass: bool = False  # true: the val pass updates BN running stats and keeps drop path (DHA)
    overlap: bool = True  # CPU: step t's val pass runs on a helper thread beside step t+1's training pass


@dataclass
class DaConfig:
    """`da` / `da_tune`: the augmentation policy (searched in the `_da`, `_doal` and `darts_da` modes)."""

    policy: int = 14  # side of DHA's op-pair policy matrix (must equal dataset.aug_choice)
    d_lr: float = 0.02  # SGD learning rate of the policy logits
    d_lr_tune: float = 0.05  # replaces d_lr after a single-stage search
    d_momentum: float = 0.9
    d_nesterov: bool = True
    d_weight_decay: float = 5e-4
    temperature: float = 2.0  # Gumbel-softmax temperature of the per-step sampling matrix
    magnitude: float = 1.0  # magnitudes are drawn from U(0, magnitude) during the search
    magnitude_tune: float = 10.0  # ... and from U(0, magnitude_tune) afterwards
    level_scale: str = "strength"  # level 0 = identity for every op (ours) | reference: DHA's, where level 0 is the strongest posterize / solarize / enhance
    update_rule: str = "reinforce"  # pair policy: reinforce (ours: unbiased, normalised, Adam) | reference (DHA's -loss * P, SGD)
    entropy_weight: float = 0.1  # reinforce: weight of the entropy bonus (holds back the drift of noise)
    min_entropy: float = 0.6  # reinforce: entropy floor as a fraction of its maximum ln(K^2); below it a hinge pushes back
    subpolicies: int = 10  # darts_da (Faster-AA style): number of sub-policies L
    subpolicy_stages: int = 2  # ... operations per sub-policy K
    subpolicy_temperature: float = 0.05  # ... softmax temperature of the op choice
    fixed_policy: str = "none"  # modes without policy search: none | randaugment | trivialaugment | path/to/policy.json
    log_images_every: int = 5  # epochs between grids of augmented samples in TensorBoard; 0 = never


@dataclass
class RunConfig:
    """The whole run."""

    seed: int = 2  # seeds every random number generator
    save_root: str = "train_model"  # runs go to save_root/<dataset>_<mode>_<save_name>/
    save_name: str = ""  # suffix of the run folder name
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels (CUDA only)
    deterministic: bool = False  # deterministic kernels (slower on CUDA; CPU runs are deterministic)
    channels_last: bool = True  # NHWC layout: 2-7x faster depthwise/1x1 convs on CPU, tensor cores on CUDA
    progress: bool = True  # tqdm progress bar per epoch (also off when stderr is not a terminal)
    log_every: int = 20  # steps between TensorBoard scalar points
    report: bool = True  # figures at the end of a run (run_dir/figures and TensorBoard; search/report.py)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_architecture: ArchConfig = field(default_factory=ArchConfig)
    tune_dataset: DatasetConfig = field(default_factory=DatasetConfig)  # inherits `dataset`
    tune: TrainConfig = field(default_factory=TrainConfig)  # inherits `train`
    tune_architecture: ArchConfig = field(default_factory=ArchConfig)  # inherits `train_architecture`
    hpo: HpoConfig = field(default_factory=HpoConfig)
    hpo_tune: HpoConfig = field(default_factory=HpoConfig)  # inherits `hpo`
    da: DaConfig = field(default_factory=DaConfig)
    da_tune: DaConfig = field(default_factory=DaConfig)  # inherits `da`


# Keys of the original DHA configs that nothing reads (or that this tool replaces); accepted with a notice.
LEGACY_KEYS: dict[type, set[str]] = {
    RunConfig: {"gpu", "cudnn_enabled", "load_name", "model_path", "save_freq", "all_freeze", "best_acc"},
    DatasetConfig: {"root_cloud", "prefetch", "limited", "real_val", "random_sample"},
    TrainConfig: {"start_epoch", "w_nesterov", "print_freq", "label_smooth", "gamma", "decay_period", "batch_size"},
    ArchConfig: {"input_channels", "n_classes"},
    HpoConfig: set(),
    DaConfig: {"rho"},
}
LEGACY_HINTS = {
    "real_val": "validation images are held out; dataset.val_in_train=true reproduces real_val=false",
    "gpu": "use --device",
    "model_path": "use --resume RUN_DIR",
    "input_channels": "the channel count comes from the data",
    "n_classes": "the class count comes from the data",
}
# Second-stage sections start as a copy of their first-stage section.
INHERITS = {"tune_dataset": "dataset", "tune": "train", "tune_architecture": "train_architecture",
            "hpo_tune": "hpo", "da_tune": "da"}


def _is_comment(key: str) -> bool:
    return key.startswith("-") or key in ("help", "-help-")


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, notices: list[str]) -> Any:
    """Check `value` against the annotation `tp`; returns the converted value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], path, notices)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}' must be a section (a JSON object), got {json.dumps(value)}")
        return _build(tp, value, path + ".", notices)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}' must be a list, got {json.dumps(value)}")
        return [_convert(v, item, f"{path}[{i}]", notices) for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        # `--set save_name=2024` parses as a number; text fields take it as text.
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }[tp]
    if not ok:
        raise ConfigError(f"config key '{path}' must be {_type_name(tp)}, got {json.dumps(value)}")
    if tp is str:
        return str(value)
    return float(value) if tp is float else value


def _build(cls: type, data: dict, prefix: str, notices: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key in hints:
            kwargs[key] = _convert(value, hints[key], prefix + key, notices)
        elif key in LEGACY_KEYS.get(cls, set()) or _is_comment(key):
            hint = LEGACY_HINTS.get(key)
            notices.append(prefix + key + (f" ({hint})" if hint else ""))
        else:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            suggestion = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggestion}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], value); the value is JSON, else a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Write `--set` values into the raw config dict (creating missing sections and keys)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
        node[path[-1]] = value
    return raw


def config_from_dict(raw: dict, overrides: list[str] = ()) -> tuple[RunConfig, list[str]]:
    """Build and validate a RunConfig from a raw dict; returns it and the ignored legacy keys."""
    raw = apply_overrides(json.loads(json.dumps(raw)), list(overrides))  # on a deep copy
    for name in [f.name for f in dataclasses.fields(RunConfig)]:
        if name in raw and dataclasses.is_dataclass(typing.get_type_hints(RunConfig)[name]) \
                and not isinstance(raw[name], dict):
            raise ConfigError(f"config key '{name}' must be a section (a JSON object), got {json.dumps(raw[name])}")
    inherited: set[str] = set()
    for child, parent in INHERITS.items():
        inherited |= {f"{child}.{k}" for k in raw.get(parent, {}) if k not in raw.get(child, {})}
        raw[child] = {**raw.get(parent, {}), **raw.get(child, {})}
    notices: list[str] = []
    cfg = _build(RunConfig, raw, "", notices)
    validate(cfg)
    # A legacy key copied into a tune_* section is reported once, under its own section.
    return cfg, sorted({n for n in notices if n.split(" ")[0] not in inherited})


def load_config(path: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, list[str]]:
    """Read a JSON config file and apply `--set` overrides; errors are ConfigError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold one JSON object")
    return config_from_dict(raw, overrides)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: RunConfig) -> None:
    """Rules across fields; each failure names the key."""
    for sec in ("dataset", "tune_dataset"):
        d: DatasetConfig = getattr(cfg, sec)
        _check(0.0 < d.val_ratio < 1.0, f"config key '{sec}.val_ratio' must be in (0, 1), got {d.val_ratio}")
        _check(d.batch_size > 0, f"config key '{sec}.batch_size' must be positive, got {d.batch_size}")
        _check(d.workers >= 0, f"config key '{sec}.workers' must be >= 0, got {d.workers}")
        _check((d.cutout_size or 0) >= 0, f"config key '{sec}.cutout_size' must be >= 0, got {d.cutout_size}")
        for k in ("max_train", "max_test", "num_class"):
            v = getattr(d, k)
            _check(v is None or v > 0, f"config key '{sec}.{k}' must be positive, got {v}")
        for k in ("mean", "std"):
            v = getattr(d, k)
            _check(v is None or len(v) in (1, 3), f"config key '{sec}.{k}' needs 1 or 3 values, got {v}")
        _check(d.std is None or all(s > 0 for s in d.std), f"config key '{sec}.std' must be positive")
        _check(d.crop_padding is None or d.crop_padding >= 0, f"config key '{sec}.crop_padding' must be >= 0")
        _check(d.aug_choice in (4, 11, 14, 15), f"config key '{sec}.aug_choice' must be 4, 11, 14 or 15, got {d.aug_choice}")
    _check(cfg.log_every >= 1, f"config key 'log_every' must be >= 1, got {cfg.log_every}")
    for ds_sec, da_sec in (("dataset", "da"), ("tune_dataset", "da_tune")):
        policy, choice = getattr(cfg, da_sec).policy, getattr(cfg, ds_sec).aug_choice
        _check(policy == choice, f"config key '{da_sec}.policy' ({policy}) must equal '{ds_sec}.aug_choice' ({choice})")
    for sec in ("train", "tune"):
        t: TrainConfig = getattr(cfg, sec)
        _check(t.w_lr > 0, f"config key '{sec}.w_lr' must be positive, got {t.w_lr}")
        _check(t.w_lr_min >= 0, f"config key '{sec}.w_lr_min' must be >= 0, got {t.w_lr_min}")
        _check(t.w_weight_decay >= 0, f"config key '{sec}.w_weight_decay' must be >= 0, got {t.w_weight_decay}")
        _check(0 <= t.w_momentum < 1, f"config key '{sec}.w_momentum' must be in [0, 1), got {t.w_momentum}")
        _check(t.w_grad_clip >= 0, f"config key '{sec}.w_grad_clip' must be >= 0, got {t.w_grad_clip}")
        _check(t.epochs >= 0, f"config key '{sec}.epochs' must be >= 0, got {t.epochs}")
        _check(t.retrain_epochs >= 0, f"config key '{sec}.retrain_epochs' must be >= 0, got {t.retrain_epochs}")
        _check(t.max_steps_per_epoch is None or t.max_steps_per_epoch > 0,
               f"config key '{sec}.max_steps_per_epoch' must be positive, got {t.max_steps_per_epoch}")
    for sec in ("train_architecture", "tune_architecture"):
        a: ArchConfig = getattr(cfg, sec)
        _check(a.init_channels > 0 and a.init_channels % 2 == 0,
               f"config key '{sec}.init_channels' must be a positive even number, got {a.init_channels}")
        _check(a.layers >= 1, f"config key '{sec}.layers' must be >= 1, got {a.layers}")
        _check(a.steps >= 1, f"config key '{sec}.steps' must be >= 1, got {a.steps}")
        _check(a.input_size >= 8, f"config key '{sec}.input_size' must be >= 8, got {a.input_size}")
        _check(a.stem in ("auto", "cifar", "imagenet"), f"config key '{sec}.stem' must be auto, cifar or imagenet, got '{a.stem}'")
        _check(a.order in (1, 2), f"config key '{sec}.order' must be 1 or 2, got {a.order}")
        _check(a.alpha_lr > 0, f"config key '{sec}.alpha_lr' must be positive, got {a.alpha_lr}")
        _check(0 <= a.drop_path_prob < 1, f"config key '{sec}.drop_path_prob' must be in [0, 1), got {a.drop_path_prob}")
        _check(a.aux_weight >= 0, f"config key '{sec}.aux_weight' must be >= 0, got {a.aux_weight}")
        _check(a.proj_dims >= 1, f"config key '{sec}.proj_dims' must be >= 1, got {a.proj_dims}")
        _check(a.mixing in ("normalized", "reference"),
               f"config key '{sec}.mixing' must be normalized or reference, got '{a.mixing}'")
        _check(a.sparseness == 2, f"config key '{sec}.sparseness' must be 2 (the cell has two inputs per node), got {a.sparseness}")
        _check(a.measurement in ("gaussian", "uniform"), f"config key '{sec}.measurement' must be gaussian or uniform, got '{a.measurement}'")
        _check(a.dist_limit >= 0, f"config key '{sec}.dist_limit' must be >= 0, got {a.dist_limit}")
        _check(a.param_limit is None or a.param_limit > 0, f"config key '{sec}.param_limit' must be positive, got {a.param_limit}")
    for sec in ("hpo", "hpo_tune"):
        h: HpoConfig = getattr(cfg, sec)
        _check(0 <= h.learning_low < h.learning_up, f"config keys '{sec}.learning_low' < '{sec}.learning_up' required, got {h.learning_low} and {h.learning_up}")
        _check(0 <= h.weight_decay_low <= h.weight_decay_up, f"config keys '{sec}.weight_decay_low' <= '{sec}.weight_decay_up' required")
        _check(h.h_lr >= 0 and h.h_lr_tune >= 0, f"config key '{sec}.h_lr' must be >= 0")
        _check(h.every >= 1, f"config key '{sec}.every' must be >= 1, got {h.every}")
        _check(h.update_rule in ("log", "reference"),
               f"config key '{sec}.update_rule' must be log or reference, got '{h.update_rule}'")
        _check(0 < h.log_step < float("inf"), f"config key '{sec}.log_step' must be positive and finite")
        _check(h.signal in ("val", "train"), f"config key '{sec}.signal' must be val or train, got '{h.signal}'")
    for sec in ("da", "da_tune"):
        g: DaConfig = getattr(cfg, sec)
        _check(g.temperature > 0, f"config key '{sec}.temperature' must be positive, got {g.temperature}")
        _check(g.magnitude >= 0 and g.magnitude_tune >= 0, f"config key '{sec}.magnitude' must be >= 0")
        _check(g.d_lr >= 0, f"config key '{sec}.d_lr' must be >= 0, got {g.d_lr}")
        _check(g.update_rule in ("reference", "reinforce"),
               f"config key '{sec}.update_rule' must be reference or reinforce, got '{g.update_rule}'")
        _check(0 <= g.entropy_weight < float("inf"), f"config key '{sec}.entropy_weight' must be >= 0 and finite")
        _check(0 <= g.min_entropy <= 1, f"config key '{sec}.min_entropy' must be in [0, 1], got {g.min_entropy}")
        _check(g.level_scale in ("strength", "reference"),
               f"config key '{sec}.level_scale' must be strength or reference, got '{g.level_scale}'")
        _check(g.subpolicies >= 1 and g.subpolicy_stages >= 1, f"config keys '{sec}.subpolicies' and 'subpolicy_stages' must be >= 1")
        _check(g.subpolicy_temperature > 0, f"config key '{sec}.subpolicy_temperature' must be positive")
        _check(g.log_images_every >= 0, f"config key '{sec}.log_images_every' must be >= 0")


def config_to_dict(cfg: RunConfig) -> dict:
    """The resolved config as a JSON-safe dict (written to the run folder)."""
    return dataclasses.asdict(cfg)
