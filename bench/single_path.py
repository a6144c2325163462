"""One search step of the single-path supernet (daas: GDAS + its policy) against the DARTS supernet.

    python bench/single_path.py DATA_DIR [--steps 6] [--warmup 2] [--block 3] [--threads 2]

DATA_DIR: an ImageFolder root with train/ (e.g. shared/data/cifar10-subset), used at 32x32. The
setting of DARTS' search: C=16, 8 cells, batch 64. Rows: DARTS first order (the base: one
validation and one training forward / backward, as the single-path step), DARTS second order (its
default), daas. Time: median seconds per step, rows taking turns in one process (step_time.py's
scheme: each block of a row over the mean of the base blocks just before and after it). Memory: each
row in its own child process, the peak RSS growth over the steps above what the built row holds
before its first step (activations, gradients, optimizer state).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import child_json, make_searcher, measure_steps, time_modes  # noqa: E402

ROWS = [("darts", {"train_architecture.order": 1}), ("darts", {}), ("daas", {})]
SIZE = dict(init_channels=16, layers=8, batch_size=64)


def _label(mode: str, overrides: dict) -> str:
    return mode + "".join(f" {k.split('.')[-1]}={v}" for k, v in overrides.items())


def peak_growth_mib(data_dir: str, row: int, steps: int, threads: int) -> float:
    """In this process: build row `row`, run `steps` steps; peak RSS growth (MiB) over the steps."""
    torch.set_num_threads(threads)
    mode, overrides = ROWS[row]
    device = torch.device("cpu")
    return measure_steps(make_searcher(data_dir, mode, overrides, device, **SIZE), steps, 0, device)["step_rss_mib"]


def main(argv: list[str] | None = None) -> int:
    """Memory per row in child processes, then the timing side by side; the table and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory_row", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "train").is_dir():
        print(f"error: no ImageFolder train/ under '{args.data_dir}'", file=sys.stderr)
        return 2
    if args.memory_row is not None:
        print(json.dumps({"mib": peak_growth_mib(args.data_dir, args.memory_row, 3, args.threads)}))
        return 0
    memory = [child_json([__file__, args.data_dir, "--memory_row", str(row), "--threads", str(args.threads)])["mib"]
              for row in range(len(ROWS))]
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    searchers = [make_searcher(args.data_dir, mode, overrides, device, **SIZE) for mode, overrides in ROWS]
    timed = time_modes(searchers, args.steps, args.warmup, device, max(2, args.block), base=0)
    print(f"{'row (C=16, 8 cells, batch 64)':<30} {'s/step':>8} {'x darts o1':>11} {'peak MiB':>9} {'x darts o1':>11}")
    for (mode, overrides), (seconds, ratios, _), mib in zip(ROWS, timed, memory):
        print(f"{_label(mode, overrides):<30} {seconds:8.3f} {statistics.median(ratios):11.2f} {mib:9.0f} "
              f"{mib / memory[0]:11.2f}")
    t_o2 = statistics.median(timed[1][1])
    t_daas = statistics.median(timed[2][1])
    print(f"summary: the daas single-path step takes {t_daas:.2f}x the time and {memory[2] / memory[0]:.2f}x the peak "
          f"memory of a first-order DARTS step ({t_daas / t_o2:.2f}x and {memory[2] / memory[1]:.2f}x of the "
          f"second-order default), CPU, {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
