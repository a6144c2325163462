"""The value rules of the run configuration: each failure is one line naming the key and the rule.

Every number is already finite and every integer within 32 bits (utils/config.py checks types);
the rules here are the ranges, the choices and the agreements between keys. Sizes have upper
bounds so that a typo fails here instead of in the allocator.
"""
from __future__ import annotations

from utils.config_sections import ArchConfig, DaConfig, DatasetConfig, HpoConfig, RunConfig, TrainConfig
from utils.errors import ConfigError

MAX_INPUT_SIZE = 1024  # pixels per side
MAX_CHANNELS = 1024  # init_channels
MAX_BATCH = 65536


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"config key '{key}' must be {' or '.join(choices)}, got '{value}'")


def _at_least(value, key: str, low) -> None:
    _check(value is None or value >= low, f"config key '{key}' must be >= {low}, got {value}")


def _momentum(value: float, key: str) -> None:
    _check(0 <= value < 1, f"config key '{key}' must be in [0, 1), got {value}")


def validate(cfg: RunConfig) -> None:
    """Every rule of every section; the first failure is raised as a one-line ConfigError."""
    _check(0 <= cfg.seed < 2**32, f"config key 'seed' must be in [0, 2**32), got {cfg.seed}")
    _choice(cfg.amp, "amp", ("off", "bf16"))
    _check(cfg.recompute_cells >= -1, f"config key 'recompute_cells' must be >= -1 (-1: every cell), got {cfg.recompute_cells}")
    _check(cfg.log_every >= 1, f"config key 'log_every' must be >= 1, got {cfg.log_every}")
    name = cfg.save_name
    _check(name not in (".", "..") and not any(c in name for c in "/\\") and name.isprintable(),
           f"config key 'save_name' must be one folder-name component (no '/', '\\', '..' or control "
           f"characters), got {name!r}")
    try:
        (cfg.save_root + name).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("config keys 'save_root' and 'save_name' must be valid Unicode text") from None
    for sec in ("dataset", "tune_dataset"):
        _dataset(getattr(cfg, sec), sec)
    for ds_sec, da_sec in (("dataset", "da"), ("tune_dataset", "da_tune")):
        policy, choice = getattr(cfg, da_sec).policy, getattr(cfg, ds_sec).aug_choice
        _check(policy == choice, f"config key '{da_sec}.policy' ({policy}) must equal '{ds_sec}.aug_choice' ({choice})")
    for sec in ("train", "tune"):
        _train(getattr(cfg, sec), sec)
    for sec, ds_sec in (("train_architecture", "dataset"), ("tune_architecture", "tune_dataset")):
        _arch(getattr(cfg, sec), sec)
        padding = getattr(cfg, ds_sec).crop_padding
        size = getattr(cfg, sec).input_size
        _check(padding is None or padding <= size,
               f"config key '{ds_sec}.crop_padding' must be at most '{sec}.input_size' ({size}), got {padding}")
    for sec in ("hpo", "hpo_tune"):
        _hpo(getattr(cfg, sec), sec)
    for sec in ("da", "da_tune"):
        _da(getattr(cfg, sec), sec)


def _dataset(d: DatasetConfig, sec: str) -> None:
    _check(0.0 < d.val_ratio < 1.0, f"config key '{sec}.val_ratio' must be in (0, 1), got {d.val_ratio}")
    _check(0 < d.batch_size <= MAX_BATCH, f"config key '{sec}.batch_size' must be in [1, {MAX_BATCH}], got {d.batch_size}")
    _at_least(d.workers, f"{sec}.workers", 0)
    _at_least(d.cutout_size, f"{sec}.cutout_size", 0)
    _at_least(d.crop_padding, f"{sec}.crop_padding", 0)
    for k in ("max_train", "max_test"):
        _at_least(getattr(d, k), f"{sec}.{k}", 1)
    _at_least(d.num_class, f"{sec}.num_class", 2)
    for k in ("mean", "std"):
        v = getattr(d, k)
        _check(v is None or len(v) in (1, 3), f"config key '{sec}.{k}' needs 1 or 3 values, got {v}")
    _check(d.mean is None or all(0 <= m <= 1 for m in d.mean),
           f"config key '{sec}.mean' must lie in [0, 1] (the pixel scale), got {d.mean}")
    _check(d.std is None or all(s > 0 for s in d.std), f"config key '{sec}.std' must be positive, got {d.std}")
    _check(d.aug_choice in (4, 11, 14, 15), f"config key '{sec}.aug_choice' must be 4, 11, 14 or 15, got {d.aug_choice}")
    _at_least(d.img_min_size, f"{sec}.img_min_size", 1)


def _train(t: TrainConfig, sec: str) -> None:
    _check(t.w_lr > 0, f"config key '{sec}.w_lr' must be positive, got {t.w_lr}")
    for k in ("w_lr_min", "w_weight_decay", "w_grad_clip", "epochs", "retrain_epochs"):
        _at_least(getattr(t, k), f"{sec}.{k}", 0)
    _momentum(t.w_momentum, f"{sec}.w_momentum")
    _at_least(t.max_steps_per_epoch, f"{sec}.max_steps_per_epoch", 1)
    _at_least(t.nan_patience, f"{sec}.nan_patience", 1)


def _arch(a: ArchConfig, sec: str) -> None:
    _check(0 < a.init_channels <= MAX_CHANNELS and a.init_channels % 2 == 0,
           f"config key '{sec}.init_channels' must be an even number in [2, {MAX_CHANNELS}], got {a.init_channels}")
    _check(1 <= a.layers <= 100, f"config key '{sec}.layers' must be in [1, 100], got {a.layers}")
    _check(1 <= a.steps <= 8, f"config key '{sec}.steps' must be in [1, 8], got {a.steps}")
    _check(8 <= a.input_size <= MAX_INPUT_SIZE,
           f"config key '{sec}.input_size' must be in [8, {MAX_INPUT_SIZE}], got {a.input_size}")
    _choice(a.stem, f"{sec}.stem", ("auto", "cifar", "imagenet"))
    _check(a.order in (1, 2), f"config key '{sec}.order' must be 1 or 2, got {a.order}")
    _check(a.alpha_lr > 0, f"config key '{sec}.alpha_lr' must be positive, got {a.alpha_lr}")
    for k in ("alpha_weight_decay", "aux_weight", "dist_limit"):
        _at_least(getattr(a, k), f"{sec}.{k}", 0)
    _check(0 <= a.drop_path_prob < 1, f"config key '{sec}.drop_path_prob' must be in [0, 1), got {a.drop_path_prob}")
    _check(1 <= a.proj_dims <= 64, f"config key '{sec}.proj_dims' must be in [1, 64], got {a.proj_dims}")
    _choice(a.mixing, f"{sec}.mixing", ("normalized", "reference"))
    _check(a.sparseness == 2, f"config key '{sec}.sparseness' must be 2 (the cell has two inputs per node), got {a.sparseness}")
    _choice(a.measurement, f"{sec}.measurement", ("gaussian", "uniform"))
    _check(a.lasso_alpha > 0, f"config key '{sec}.lasso_alpha' must be positive, got {a.lasso_alpha}")
    _check(a.relative_limit is None or 0 < a.relative_limit <= 1,
           f"config key '{sec}.relative_limit' must be in (0, 1], got {a.relative_limit}")
    _check(a.param_limit is None or a.param_limit > 0, f"config key '{sec}.param_limit' must be positive, got {a.param_limit}")
    _choice(a.space, f"{sec}.space", ("darts", "mobilenet"))
    _check(0.05 <= a.width <= 4, f"config key '{sec}.width' must be in [0.05, 4], got {a.width}")
    _check(0 < a.tau_min <= a.tau_max, f"config keys '{sec}.tau_min' and '{sec}.tau_max' need 0 < tau_min <= tau_max, "
           f"got {a.tau_min} and {a.tau_max}")


def _hpo(h: HpoConfig, sec: str) -> None:
    _check(0 <= h.learning_low < h.learning_up,
           f"config keys '{sec}.learning_low' < '{sec}.learning_up' required, got {h.learning_low} and {h.learning_up}")
    _check(0 <= h.weight_decay_low <= h.weight_decay_up,
           f"config keys '{sec}.weight_decay_low' <= '{sec}.weight_decay_up' required, got {h.weight_decay_low} "
           f"and {h.weight_decay_up}")
    for k in ("h_lr", "h_lr_tune", "h_weight_decay"):
        _at_least(getattr(h, k), f"{sec}.{k}", 0)
    _momentum(h.h_momentum, f"{sec}.h_momentum")
    _at_least(h.every, f"{sec}.every", 1)
    _choice(h.update_rule, f"{sec}.update_rule", ("log", "reference"))
    _check(h.log_step > 0, f"config key '{sec}.log_step' must be positive, got {h.log_step}")
    _choice(h.signal, f"{sec}.signal", ("val", "train"))
    _choice(h.lookahead, f"{sec}.lookahead", ("step", "expected"))


def _da(g: DaConfig, sec: str) -> None:
    _check(g.temperature > 0, f"config key '{sec}.temperature' must be positive, got {g.temperature}")
    for k in ("magnitude", "magnitude_tune", "d_lr", "d_lr_tune", "d_weight_decay", "entropy_weight", "log_images_every"):
        _at_least(getattr(g, k), f"{sec}.{k}", 0)
    _momentum(g.d_momentum, f"{sec}.d_momentum")
    _choice(g.update_rule, f"{sec}.update_rule", ("reference", "reinforce"))
    _choice(g.objective, f"{sec}.objective", ("adversarial", "affinity", "generalization"))
    _at_least(g.val_every, f"{sec}.val_every", 1)
    _check(0 <= g.min_entropy <= 1, f"config key '{sec}.min_entropy' must be in [0, 1], got {g.min_entropy}")
    _choice(g.level_scale, f"{sec}.level_scale", ("strength", "reference"))
    _at_least(g.magnitude_bins, f"{sec}.magnitude_bins", 2)
    _at_least(g.subpolicies, f"{sec}.subpolicies", 1)
    _at_least(g.subpolicy_stages, f"{sec}.subpolicy_stages", 1)
    _check(g.subpolicy_temperature > 0, f"config key '{sec}.subpolicy_temperature' must be positive")
