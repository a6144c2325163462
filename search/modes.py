"""The `--Running` table: the only place mode names live. A mode is a sequence of stages."""
from __future__ import annotations

from dataclasses import dataclass

from utils.errors import UserError


@dataclass(frozen=True)
class StageSpec:
    """One stage of a mode: what trains, how the architecture moves, which config sections apply.

    kind: "search" (a supernet), "continue" (the same supernet, architecture frozen) or
    "retrain" (the discrete network of the found genotype, from scratch).
    arch_update: "bilevel" (DARTS, order from config), "val" (first order on a validation batch),
    "joint" (the training loss of the same batch, one backward) or "none".
    """

    kind: str
    space: str | None = None  # darts | ista | ista_single (search stages)
    arch_update: str = "none"
    augment: str = "none"  # none | pair | subpolicy | replay (the previous stage's policy, fixed)
    hpo: bool = False  # learned lr / weight decay (issue 4)
    sections: str = "train"  # "train": dataset/train/train_architecture; "tune": the tune_* sections


@dataclass(frozen=True)
class Mode:
    """A row of the table."""

    name: str
    stages: tuple[StageSpec, ...]
    available: bool = True
    note: str = ""


def _single(name: str, augment: str, hpo: bool, available: bool) -> Mode:
    return Mode(name, (StageSpec("search", "ista_single", "joint", augment, hpo, "train"),
                       StageSpec("continue", None, "none", augment, hpo, "train")), available,
                "single-stage ISTA; the same network keeps training once every node froze")


def _two_stage(name: str, augment: str, hpo: bool, available: bool) -> Mode:
    return Mode(name, (StageSpec("search", "ista", "val"),
                       StageSpec("retrain", None, "none", augment, hpo, "tune")), available,
                "two-stage ISTA; the genotype is retrained from scratch with the tune_* sections")


_LATER_DA = "augmentation-policy search (issue 3)"
_LATER_HPO = "hyper-parameter search (issue 4)"

MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("darts", (StageSpec("search", "darts", "bilevel"), StageSpec("retrain", sections="tune")),
         True, "DARTS supernet, bilevel; the genotype is retrained from scratch with the tune_* sections"),
    _two_stage("ista_nor", "none", False, True),
    _two_stage("ista_hpo", "none", True, True),
    _two_stage("ista_da", "pair", False, True),
    _two_stage("ista_doal", "pair", True, True),
    _single("ista_single_nor", "none", False, True),
    _single("ista_single_hpo", "none", True, True),
    _single("ista_single_da", "pair", False, True),
    _single("ista_single_doal", "pair", True, True),
    Mode("darts_da", (StageSpec("search", "darts", "bilevel", "subpolicy"),
                      StageSpec("retrain", augment="replay", sections="tune")),
         True, "DARTS + differentiable sub-policy augmentation (one validation backward); the genotype is "
               "retrained from scratch with the found policy replayed"),
    Mode("daas", (StageSpec("search", "gdas", "bilevel", "reinforce"), StageSpec("retrain", sections="tune")),
         False, "GDAS single-path supernet + policy-gradient augmentation"),
)}


def get_mode(name: str) -> Mode:
    """The mode called `name`; unknown or not-yet-built modes are a UserError."""
    if name not in MODES:
        raise UserError(f"unknown mode '{name}'; available: {', '.join(m for m in MODES if MODES[m].available)}")
    mode = MODES[name]
    if not mode.available:
        needs = []
        if any(s.augment != "none" for s in mode.stages):
            needs.append(_LATER_DA)
        if any(s.hpo for s in mode.stages):
            needs.append(_LATER_HPO)
        raise UserError(f"mode '{name}' is not available yet (it needs {' and '.join(needs) or 'a later issue'}); "
                        f"available now: {', '.join(m for m in MODES if MODES[m].available)}")
    return mode


def modes_help() -> str:
    """One line per mode for --help."""
    return "\n".join(f"  {m.name:<18} {'' if m.available else '(not available yet) '}{m.note}" for m in MODES.values())
