"""Peak memory and time of one search step at the papers' CIFAR sizes.

    python bench/memory.py DATA_DIR [--steps 3] [--warmup 2] [--threads 2] [--device cpu|cuda]

DATA_DIR: an ImageFolder root with train/ (e.g. shared/data/cifar10-subset), used at 32x32. Rows:
the single-stage modes at DHA's size (C=36, 20 cells, batch 96), `ista_single_doal` also with the
overlapped validation pass forced on (the automatic choice turns it off at this size), and `darts` at DARTS' search size (C=16, 8 cells, batch 64); on CUDA
every row also with `amp: bf16`. Each row runs in its own child process (peak memory is per
process): on CPU the peak RSS of the process and its growth over the steps (what the steps add to
the built model and data), on CUDA `torch.cuda.max_memory_allocated`; time is the median over
--steps steps after --warmup, and images / s.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import child_json, make_searcher, measure_steps  # noqa: E402

DHA = dict(init_channels=36, layers=20, batch_size=96)
DARTS = dict(init_channels=16, layers=8, batch_size=64)
# "overlap forced": the overlapped validation pass where the automatic choice (search/build.py,
# overlap_choice) turns it off at this size, to show why. A hypergradient every step, as DHA: the
# step measured is the one with the validation pass.
EVERY_STEP = {"hpo.every": 1}
ROWS = [("ista_single_doal", EVERY_STEP, DHA), ("ista_single_doal", {**EVERY_STEP, "overlap": "forced"}, DHA),
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


def _label(mode: str, overrides: dict, size: dict, amp: str) -> str:
    extra = "".join(f" {k.split('.')[-1]}={v}" for k, v in overrides.items()) + (" bf16" if amp == "bf16" else "")
    return f"{mode}{extra} C={size['init_channels']} L={size['layers']} B={size['batch_size']}"


def main(argv: list[str] | None = None) -> int:
    """Every row in a child process; the table and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
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
    amps = ["off", "bf16"] if args.device.startswith("cuda") else ["off"]
    results = []
    for row in range(len(ROWS)):
        for amp in amps:
            results.append((_label(*ROWS[row], amp), child_json(
                [__file__, args.data_dir, "--row", str(row), "--amp", amp, "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device])))
    memory_key = "cuda_peak_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    print(f"{'step':<52} {'s/step':>8} {'images/s':>9} {'peak MiB':>9} {'step MiB':>9}")
    for label, r in results:
        print(f"{label:<52} {r['seconds']:8.2f} {r['batch'] / r['seconds']:9.1f} {r[memory_key]:9.0f} "
              f"{r['step_rss_mib']:9.0f}")
    doal, forced = results[0][1], results[len(amps)][1]
    print(f"summary: ista_single_doal at DHA's size {doal['seconds']:.2f} s/step, peak {doal[memory_key]:.0f} MiB "
          f"({forced['seconds']:.2f} s and {forced[memory_key]:.0f} MiB with the overlapped validation pass forced "
          f"on), on {args.device} with {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
