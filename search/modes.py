"""The `--Running` table: the only place mode names live. A mode is a sequence of stages.

Every field of a stage is an enum member, so a typo fails at import, and `Mode` checks when it is
defined that its stages fit together; the builders (search/build.py, search/build_policy.py) map
each member to an object through tables that cover every member, so nothing falls through to a
default.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from utils.errors import UserError


class Kind(str, Enum):
    """What a stage trains."""

    SEARCH = "search"  # a supernet: weights and architecture
    CONTINUE = "continue"  # the same supernet, architecture fixed, weights keep training
    RETRAIN = "retrain"  # the discrete network of the found genotype, from scratch


class Space(str, Enum):
    """The supernet a search (and a continue) stage trains."""

    DARTS = "darts"
    ISTA = "ista"  # two-stage ISTA-NAS
    ISTA_SINGLE = "ista_single"  # single-stage ISTA (DHA): nodes freeze as their codes converge
    GDAS = "gdas"  # single path: one op per edge drawn by a hard Gumbel-softmax


class ArchUpdate(str, Enum):
    """How the architecture parameters move."""

    NONE = "none"
    BILEVEL = "bilevel"  # DARTS: on a validation batch, first or second order per train_architecture.order
    VAL = "val"  # first order on a validation batch
    JOINT = "joint"  # the training loss of the same batch, one backward (DHA)


class Augment(str, Enum):
    """The augmentation policy of a stage and how it learns."""

    NONE = "none"  # no searched policy (da.fixed_policy may still name a fixed one)
    PAIR = "pair"  # DHA's op-pair distribution, score-function update
    SUBPOLICY = "subpolicy"  # Faster-AA sub-policies, gradient through the images
    REINFORCE = "reinforce"  # DAAS: sub-policies (op pair + magnitude bins), REINFORCE on a validation reward
    REPLAY = "replay"  # the previous stage's searched policy, fixed


class Sections(str, Enum):
    """Which config sections a stage reads."""

    TRAIN = "train"  # dataset / train / train_architecture / hpo / da
    TUNE = "tune"  # tune_dataset / tune / tune_architecture / hpo_tune / da_tune


@dataclass(frozen=True)
class StageSpec:
    """One stage of a mode: what trains, how the architecture moves, which config sections apply."""

    kind: Kind
    space: Space | None = None  # search and continue stages
    arch_update: ArchUpdate = ArchUpdate.NONE
    augment: Augment = Augment.NONE
    hpo: bool = False  # learned lr / weight decay
    sections: Sections = Sections.TRAIN
    constant_lr: bool = False  # train at w_lr throughout (DHA's single-stage search); else cosine

    def __post_init__(self):
        for name, enum in (("kind", Kind), ("arch_update", ArchUpdate), ("augment", Augment), ("sections", Sections)):
            if not isinstance(getattr(self, name), enum):
                raise TypeError(f"StageSpec.{name} must be a {enum.__name__}, got {getattr(self, name)!r}")
        if not isinstance(self.space, (Space, type(None))):
            raise TypeError(f"StageSpec.space must be a Space or None, got {self.space!r}")
        if (self.space is None) != (self.kind is Kind.RETRAIN):
            raise ValueError(f"a {self.kind.value} stage {'has no' if self.kind is Kind.RETRAIN else 'needs a'} space")
        if (self.arch_update is ArchUpdate.NONE) == (self.kind is Kind.SEARCH):
            raise ValueError(f"a {self.kind.value} stage cannot have arch_update {self.arch_update.value}")


@dataclass(frozen=True)
class Mode:
    """A row of the table."""

    name: str
    stages: tuple[StageSpec, ...]
    available: bool = True
    note: str = ""
    missing: str = ""  # what an unavailable mode waits for

    def __post_init__(self):
        lone_retrain = len(self.stages) == 1 and self.stages[0].kind is Kind.RETRAIN  # a given genotype
        if not self.stages or (self.stages[0].kind is not Kind.SEARCH and not lone_retrain):
            raise ValueError(f"mode {self.name}: the first stage must search (or be the only, a retrain)")
        for before, spec in zip(self.stages, self.stages[1:]):
            if spec.kind is Kind.SEARCH:
                raise ValueError(f"mode {self.name}: only the first stage searches")
            if spec.kind is Kind.CONTINUE and spec.space is not before.space:
                raise ValueError(f"mode {self.name}: a continue stage keeps the supernet of the stage before it")
            if spec.augment is Augment.REPLAY and before.augment in (Augment.NONE, Augment.REPLAY):
                raise ValueError(f"mode {self.name}: replay needs a searched policy in the stage before")
        if self.available == bool(self.missing):
            raise ValueError(f"mode {self.name}: say what an unavailable mode misses, and only then")


def _single(name: str, augment: Augment, hpo: bool) -> Mode:
    return Mode(name, (StageSpec(Kind.SEARCH, Space.ISTA_SINGLE, ArchUpdate.JOINT, augment, hpo, constant_lr=True),
                       StageSpec(Kind.CONTINUE, Space.ISTA_SINGLE, augment=augment, hpo=hpo)),
                note="single-stage ISTA; the same network keeps training once every node froze")


def _two_stage(name: str, augment: Augment, hpo: bool) -> Mode:
    return Mode(name, (StageSpec(Kind.SEARCH, Space.ISTA, ArchUpdate.VAL),
                       StageSpec(Kind.RETRAIN, augment=augment, hpo=hpo, sections=Sections.TUNE)),
                note="two-stage ISTA; the genotype is retrained from scratch with the tune_* sections")


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("darts", (StageSpec(Kind.SEARCH, Space.DARTS, ArchUpdate.BILEVEL),
                   StageSpec(Kind.RETRAIN, sections=Sections.TUNE)),
         note="DARTS supernet, bilevel; the genotype is retrained from scratch with the tune_* sections"),
    _two_stage("ista_nor", Augment.NONE, False),
    _two_stage("ista_hpo", Augment.NONE, True),
    _two_stage("ista_da", Augment.PAIR, False),
    _two_stage("ista_doal", Augment.PAIR, True),
    _single("ista_single_nor", Augment.NONE, False),
    _single("ista_single_hpo", Augment.NONE, True),
    _single("ista_single_da", Augment.PAIR, False),
    _single("ista_single_doal", Augment.PAIR, True),
    Mode("darts_da", (StageSpec(Kind.SEARCH, Space.DARTS, ArchUpdate.BILEVEL, Augment.SUBPOLICY),
                      StageSpec(Kind.RETRAIN, augment=Augment.REPLAY, sections=Sections.TUNE)),
         note="DARTS + differentiable sub-policy augmentation (one validation backward); the genotype is "
              "retrained from scratch with the found policy replayed"),
    Mode("train", (StageSpec(Kind.RETRAIN, sections=Sections.TUNE),),
         note="no search: the genotype tune_architecture.genotype (e.g. DARTS_V2) trained from scratch with the "
              "tune_* sections; the baseline every search is compared with"),
    Mode("train_doal", (StageSpec(Kind.RETRAIN, augment=Augment.PAIR, hpo=True, sections=Sections.TUNE),),
         note="no architecture search: the genotype tune_architecture.genotype trained from scratch while DHA's "
              "augmentation policy and lr / wd are learned (da_tune, hpo_tune); `train` with them learned"),
    Mode("train_hpo", (StageSpec(Kind.RETRAIN, hpo=True, sections=Sections.TUNE),),
         note="no architecture search: `train_doal` without the augmentation policy (only lr / wd learned)"),
    Mode("train_da", (StageSpec(Kind.RETRAIN, augment=Augment.PAIR, sections=Sections.TUNE),),
         note="no architecture search: `train_doal` with lr / wd fixed (only the augmentation policy learned)"),
    Mode("daas", (StageSpec(Kind.SEARCH, Space.GDAS, ArchUpdate.VAL, Augment.REINFORCE),
                  StageSpec(Kind.RETRAIN, augment=Augment.REPLAY, sections=Sections.TUNE)),
         note="DAAS: single-path Gumbel supernet (one op per edge runs) + policy-gradient augmentation; the "
              "genotype is retrained from scratch with the found policy replayed"),
)}


def available_modes() -> list[str]:
    """Names of the modes that run today."""
    return [name for name, mode in MODES.items() if mode.available]


def get_mode(name: str) -> Mode:
    """The mode called `name`; unknown or not-yet-built modes are a UserError."""
    if name not in MODES:
        raise UserError(f"unknown mode '{name}'; available: {', '.join(available_modes())}")
    mode = MODES[name]
    if not mode.available:
        raise UserError(f"mode '{name}' is not available yet (it needs {mode.missing}); "
                        f"available now: {', '.join(available_modes())}")
    return mode


def modes_help() -> str:
    """One line per mode for --help."""
    return "\n".join(f"  {m.name:<18} {'' if m.available else '(not available yet) '}{m.note}" for m in MODES.values())
