"""A run's progress: which stage, which epoch, what the finished stages left. It is the checkpoint."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from models.genotypes import Genotype, genotype_from_dict
from utils.checkpoint import atomic_save_checked, atomic_write_text, load_checkpoint
from utils.errors import UserError
from utils.logging import trim_events

# Bumped whenever the layout of a checkpoint changes; a checkpoint of another format is refused.
# 3: the payload behind a checksum header.
CHECKPOINT_FORMAT = 3


@dataclass
class RunState:
    """Where a run stands. `carry` is what the last finished stage left (its network, policy and
    learned lr / wd: the next stage of the same network, or the artifacts, start from it);
    `searcher` is the state inside the current stage (None at a stage boundary)."""

    stage_index: int = 0
    epoch: int = 0  # the next epoch of the current stage
    results: list[dict] = field(default_factory=list)  # per finished stage: kind, epochs, history (genotype)
    elapsed: float = 0.0  # seconds of earlier sessions of this run
    search_seconds: float | None = None
    carry: dict | None = None
    searcher: dict | None = None
    policy_export: dict | None = None  # the last searched policy, for a stage that replays it
    finished: bool = False  # every artifact is written; a resume has nothing to do
    saved_at: float = 0.0  # wall time of the checkpoint: later TensorBoard events are redone on resume

    def genotype(self) -> Genotype | None:
        """The genotype the search found (None before it finished)."""
        found = [r["genotype"] for r in self.results if "genotype" in r]
        return genotype_from_dict(found[-1]) if found else None

    def history(self) -> list[dict]:
        """Every epoch record of the finished stages, in order."""
        return [record for result in self.results for record in result["history"]]

    def to_dict(self) -> dict:
        """Plain containers (tensors inside `carry` / `searcher`, not copied), for torch.save."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict) -> "RunState":
        """Inverse of `to_dict`."""
        return cls(**state)


def tidy_for_resume(run_dir: Path, state: RunState) -> None:
    """Before a resume: drop the temp files of interrupted writes, the metrics.jsonl lines of epochs
    after the checkpoint and the TensorBoard events after it (they are logged again), so the folder
    reads as one run."""
    for stale in run_dir.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)
    records = len(state.history()) + len((state.searcher or {}).get("history", []))
    trim_events(run_dir, state.saved_at)
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        lines = jsonl.read_text().splitlines(keepends=True)
        if len(lines) > records:
            atomic_write_text("".join(lines[:records]), jsonl)


def save_checkpoint(path: Path, mode_name: str, config: dict, state: RunState) -> None:
    """Write the checkpoint atomically: the format, the mode, the resolved config and the state."""
    state.saved_at = time.time()
    atomic_save_checked({"format": CHECKPOINT_FORMAT, "mode": mode_name, "config": config, "state": state.to_dict()}, path)


def read_checkpoint(path: Path) -> tuple[str, dict, RunState]:
    """(mode name, config dict, state) of a checkpoint; another format is a one-line UserError."""
    blob = load_checkpoint(path)
    if blob["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"'{path}' is a checkpoint of format {blob['format']!r}; this version reads format "
                        f"{CHECKPOINT_FORMAT} only (finish that run with the version that started it)")
    try:
        return blob["mode"], blob["config"], RunState.from_dict(blob["state"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"'{path}' is not a complete checkpoint of this tool ({exc})") from None
