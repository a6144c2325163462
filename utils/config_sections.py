"""The run configuration's sections: dataclasses with DHA's JSON key names and their defaults.

Defaults live on the fields below, each with a comment. A JSON file only needs the keys that differ
(utils/config.py loads it); keys the original DHA configs carry but nothing reads are listed in
`LEGACY_KEYS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


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
    nan_patience: int = 10  # steps in a row with a non-finite loss or gradient (each skipped) before the run stops


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
    relative_limit: Optional[float] = None  # ... or, when set, once it moves by at most this fraction of its norm (scale-free)
    lasso_alpha: float = 1e-5  # ISTA: L1 weight of the sparse recovery
    measurement: str = "gaussian"  # ISTA measurement matrices: gaussian | uniform (the reference's)
    mixing: str = "normalized"  # ISTA: per node, weights scaled to sum |w| = sparseness (ours) | reference (DHA's raw weights)
    genotype: Optional[str] = None  # `train` mode: DARTS_V2, PC_DARTS, ... , a genotype JSON string or a genotype.json path
    reference_selection: bool = False  # ISTA: rank signed codes and never pick dil_conv_5x5 (DHA quirk)
    lasso_intercept: bool = False  # ISTA: fit an intercept in the recovery, as scikit-learn did for DHA
    space: str = "darts"  # the search space: darts (DARTS' cells) | mobilenet (MobileNetV2's layers; darts, darts_da, daas)
    width: float = 1.0  # MobileNet-like space: channel width multiplier (1.0 = MobileNetV2's channels)
    tau_max: float = 10.0  # single-path (GDAS) search: Gumbel-softmax temperature at the first epoch
    tau_min: float = 0.1  # ... annealed linearly to this at the last search epoch


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
    anneal: bool = True  # the learned lr is the stage's peak, run times the stage's cosine fall (w_lr_min / w_lr at its end; 1 throughout a constant-lr search) | false: as learned (DHA)
    restart: bool = False  # reset lr and wd to the midpoints when the search ends
    every: int = 4  # hypergradient step (and its validation pass) every N weight steps | 1: every step (DHA)
    signal: str = "val"  # val (DHA) | train (hypergradient descent of Baydin et al.)
    lookahead: str = "expected"  # signal val: expected (ours: the look-ahead of the expected step, the next batch's gradient standing in for this one's; hpo/expected_step.py) | step (DHA: of the step taken, its own noise counted as a cost)
    reference_val_pass: bool = False  # true: the val pass updates BN running stats and keeps drop path (DHA)
    overlap: bool = True  # CPU: step t's val pass may run on a helper thread beside step t+1's training pass, where that pays (small steps; the log says)


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
    continue_with_policy: bool = True  # single-stage modes: the policy keeps augmenting and learning in continued training (DHA) | false: it shapes the search only, and the continued training augments as `train` does (crop, flip, Cutout; policy.json keeps the searched policy)
    level_scale: str = "strength"  # level 0 = identity for every op (ours) | reference: DHA's, where level 0 is the strongest posterize / solarize / enhance
    update_rule: str = "reinforce"  # pair policy: reinforce (ours: unbiased, normalised, Adam) | reference (DHA's -loss * P, SGD)
    objective: str = "generalization"  # pair policy: generalization (favour pairs whose samples' gradients lower the validation loss) | affinity (pairs the network still reads: low training loss; the entropy floor keeps diversity) | adversarial (DHA: high-training-loss pairs)
    val_every: int = 4  # generalization: steps between the validation passes its gradient comes from
    entropy_weight: float = 0.1  # reinforce: weight of the entropy bonus (holds back the drift of noise)
    min_entropy: float = 0.6  # reinforce: entropy floor as a fraction of its maximum ln(K^2); below it a hinge pushes back
    magnitude_bins: int = 10  # daas: magnitude bins per op, bin i = i / (bins - 1) of the op's range (bin 0: identity)
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
    amp: str = "off"  # off | bf16: the network forwards under bfloat16 autocast (losses, lr / wd, LASSO stay float32 / float64)
    recompute_cells: int = 0  # the first N cells (-1: all) keep only their inputs for backward and run their forward again there: less memory for more compute (bench/memory.py)
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
