"""Is there anything for DHA's pair policy to learn? Per-op signal of its rewards in a real search.

    python bench/policy_signal.py DATA_DIR [--epochs 4] [--seed 5] [--set da.magnitude=4 ...]

Runs the search stage of `ista_single_da` at bench/accuracy.py's budget and size (C=8, 5 cells, batch
32; `--epochs` search epochs) and records, for every policy update, each sample's op pair, its
training loss and its reward under the configured objective (`da.objective`). Each quantity is
standardised per step (what the normalised advantage sees) and pooled over the two slots of a pair.
Prints, per op, the mean standardised value and its t statistic, and, per quantity, the split-half
correlation of the 196 per-pair means (even steps against odd, as runs log it): a policy can only
learn what repeats, so a correlation near 0 means the per-pair differences it follows are noise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import config  # noqa: E402
from augment.estimators import SplitHalfSignal  # noqa: E402
from search.data import RunData  # noqa: E402
from search.modes import MODES  # noqa: E402
from search.stage import build_stage  # noqa: E402
from search.state import RunState  # noqa: E402
from utils.config import config_from_dict  # noqa: E402
from utils.logging import RunLogger  # noqa: E402


def record_rewards(policy_step) -> list[tuple]:
    """Wrap the policy step's `update` (instance attributes only) to keep (pairs, train loss, reward) per step."""
    records: list[tuple] = []
    reward, update = policy_step.reward, policy_step.update

    def recording_update(outcome, info):
        seen = {}

        def recording_reward(o):
            seen["reward"] = reward(o)
            return seen["reward"]
        policy_step.reward = recording_reward
        update(outcome, info)
        policy_step.reward = reward
        records.append((info["pairs"].cpu(), outcome.per_sample_loss.detach().float().cpu(),
                        seen["reward"].detach().float().cpu()))
    policy_step.update = recording_update
    return records


def standardised(values: list[torch.Tensor]) -> torch.Tensor:
    """Each step's values minus their mean over their standard deviation, concatenated."""
    return torch.cat([(v - v.mean()) / (v.std() + 1e-12) for v in values])


def per_op(pairs: torch.Tensor, z: torch.Tensor, ops: int) -> list[tuple[float, float]]:
    """(mean, t) of z over the samples holding each op, both slots pooled."""
    both, values = pairs.reshape(-1), z.repeat_interleave(2)
    rows = []
    for k in range(ops):
        v = values[both == k]
        rows.append((v.mean().item(), v.mean().item() / (v.std().item() / math.sqrt(v.numel()))))
    return rows


def split_half(pairs: torch.Tensor, values: list[torch.Tensor], ops: int) -> float:
    """The runs' own statistic (augment/estimators.py): per-pair means on even against odd steps."""
    signal = SplitHalfSignal()
    for step_pairs, v in zip(pairs.split([len(v) for v in values]), values):
        signal.add(step_pairs[:, 0] * ops + step_pairs[:, 1], v, ops * ops)
    return signal.correlation()


def main(argv: list[str] | None = None) -> int:
    """Search, record, print the per-op table and the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "train").is_dir():
        print(f"error: no ImageFolder train/ under '{args.data_dir}'", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    raw = config(args.data_dir, "/tmp/policy_signal", args.epochs, 1)
    cfg, _ = config_from_dict(json.loads(json.dumps(raw)), [f"seed={args.seed}", *args.set])
    stage = build_stage(cfg, MODES["ista_single_da"], 0, RunState(), torch.device("cpu"),
                        RunLogger(None, quiet=True), RunData(cfg.seed))
    records = record_rewards(stage.searcher.policy_step)
    stage.searcher.run(0, lambda *_: None)
    ops = stage.searcher.policy.ops
    pairs = torch.cat([r[0] for r in records])
    raw = {"train loss": [r[1] for r in records], f"reward ({cfg.da.objective})": [r[2] for r in records]}
    columns = {name: standardised(values) for name, values in raw.items()}
    tables = {name: per_op(pairs, z, len(ops)) for name, z in columns.items()}
    print(f"{len(records)} policy updates, {len(pairs)} samples, magnitude {cfg.da.magnitude}, seed {args.seed}")
    print(f"{'op':<14}" + "".join(f"{name:>30}" for name in columns))
    for k, op in enumerate(ops):
        print(f"{op:<14}" + "".join(f"{tables[n][k][0]:+18.3f} (t {tables[n][k][1]:+5.1f})" for n in columns))
    summary = [f"{name}: largest |t| {max(abs(t) for _, t in tables[name]):.1f}, split-half r of per-pair means "
               f"{split_half(pairs, raw[name], len(ops)):+.2f}" for name in columns]
    print("summary: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
