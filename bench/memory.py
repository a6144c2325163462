"""Peak memory and time of one search step at the papers' CIFAR sizes.

    python bench/memory.py DATA_DIR [--steps 4] [--warmup 2] [--threads 2] [--device cpu|cuda] [--rows 0,4]
        [--precisions off,bf16]

DATA_DIR: an ImageFolder root with train/ (e.g. shared/data/cifar10-subset), used at 32x32. Rows:
`ista_single_doal` at DHA's size (C=36, 20 cells, batch 96) with a hypergradient every step as the
original (also with the overlapped validation pass forced on, which the automatic choice turns off
at this size, and with cells recomputed in backward: `recompute_cells`), at the default hpo.every,
`ista_single_nor` at the same size and `darts` at DARTS' search size (C=16, 8 cells, batch 64); on
CUDA every row also with `amp: bf16` (`--precisions off,bf16` asks for both on CPU too, for CPUs
with bfloat16 units such as AMX). Each row runs in its own child process (peak memory is per
process): on CPU the peak RSS of the process and its growth over the steps (what the steps add to
the built model and data), on CUDA `torch.cuda.max_memory_allocated`; time is the mean over --steps
steps after --warmup (4: one whole cycle of the default hpo.every), and images / s. `--rows 0,4`
runs only those rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import checked_device, child_json, make_searcher, measure_steps  # noqa: E402

# The original DHA code (hypergradient every step) at DHA's size, 2 threads, measured side by side
# with ours by an earlier session on a 2-core AMD EPYC; on another machine or sitting the ratios
# below cross machines (times drift by up to 16% between sittings of one VM).
ORIGINAL_SECONDS, ORIGINAL_MIB = 21.1, 12099
DHA = dict(init_channels=36, layers=20, batch_size=96)
DARTS = dict(init_channels=16, layers=8, batch_size=64)
# "overlap forced": the overlapped validation pass where the automatic choice (search/build.py,
# overlap_choice) turns it off at this size, to show why. A hypergradient every step, as DHA: the
# step measured is the one with the validation pass.
# Then with cells recomputed in backward (recompute_cells: the first 4 or the 6 full-resolution
# cells of the 20, or all), and at the default hpo.every (4: the time is the mean over a cycle).
EVERY_STEP = {"hpo.every": 1}
ROWS = [("ista_single_doal", EVERY_STEP, DHA), ("ista_single_doal", {**EVERY_STEP, "overlap": "forced"}, DHA),
        ("ista_single_doal", {**EVERY_STEP, "recompute_cells": 6}, DHA),
        ("ista_single_doal", {**EVERY_STEP, "recompute_cells": -1}, DHA),
        ("ista_single_doal", {}, DHA), ("ista_single_doal", {"recompute_cells": 4}, DHA),
        ("ista_single_doal", {"recompute_cells": 6}, DHA),
        ("ista_single_nor", {}, DHA), ("darts", {}, DARTS)]


def measure(data_dir: str, row: int, amp: str, steps: int, warmup: int, threads: int, device: str) -> dict:
    """In this process: build the row, run warmup + steps; memory and seconds per step."""
    torch.set_num_threads(threads)
    mode, overrides, size = ROWS[row]
    if overrides.get("overlap") == "forced":
        import search.build
        search.build.OVERLAP_MAX_GMADDS = float("inf")
    sets = {k: v for k, v in overrides.items() if k != "overlap"}
    searcher = make_searcher(data_dir, mode, {**sets, "amp": amp}, torch.device(device), **size)
    return {**measure_steps(searcher, steps, warmup, torch.device(device)), "batch": size["batch_size"]}


def _row_args(text: str) -> list[int]:
    return [int(r) for r in text.split(",")] if text else list(range(len(ROWS)))


def _label(mode: str, overrides: dict, size: dict, amp: str) -> str:
    extra = "".join(f" {k.split('.')[-1]}={v}" for k, v in overrides.items()) + (" bf16" if amp == "bf16" else "")
    return f"{mode}{extra} C={size['init_channels']} L={size['layers']} B={size['batch_size']}"


def main(argv: list[str] | None = None) -> int:
    """Every row in a child process; the table and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default="", help="comma-separated row numbers (default: all)")
    parser.add_argument("--precisions", default="", help="comma-separated amp settings, off and / or bf16 "
                        "(default: off on CPU, both on CUDA)")
    parser.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--amp", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "train").is_dir():
        print(f"error: no ImageFolder train/ under '{args.data_dir}'", file=sys.stderr)
        return 2
    if args.row is not None:
        print(json.dumps(measure(args.data_dir, args.row, args.amp, args.steps, args.warmup, args.threads,
                                 args.device)))
        return 0
    if checked_device(args.device) is None:
        return 2
    amps = args.precisions.split(",") if args.precisions else \
        (["off", "bf16"] if args.device.startswith("cuda") else ["off"])
    if not set(amps) <= {"off", "bf16"}:
        print(f"error: --precisions takes off and / or bf16, got '{args.precisions}'", file=sys.stderr)
        return 2
    results = []
    for row in _row_args(args.rows):
        for amp in amps:
            results.append((_label(*ROWS[row], amp), child_json(
                [__file__, args.data_dir, "--row", str(row), "--amp", amp, "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device])))
    memory_key = "cuda_peak_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    print(f"{'step':<52} {'s/step':>8} {'images/s':>9} {'peak MiB':>9} {'step MiB':>9}")
    for label, r in results:
        print(f"{label:<52} {r['seconds']:8.2f} {r['batch'] / r['seconds']:9.1f} {r[memory_key]:9.0f} "
              f"{r['step_rss_mib']:9.0f}")
    shown = [f"{label.split(' C=')[0].replace('ista_single_doal', 'doal')}: {ORIGINAL_SECONDS / r['seconds']:.2f}x, "
             f"{r[memory_key] / ORIGINAL_MIB:.0%}" for label, r in results if label.startswith("ista_single_doal")]
    print(f"summary: against the original DHA code at its size ({ORIGINAL_SECONDS} s/step, {ORIGINAL_MIB:,} MiB peak "
          f"RSS, a 2-core AMD EPYC in an earlier sitting), speed-up and share of its memory: {'; '.join(shown)} "
          f"({args.device}, {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
