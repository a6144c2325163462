"""Step cost of every mode's search step on one machine, side by side in one process.

    python bench/step_time.py DATA_DIR [--steps 24] [--warmup 5] [--device cpu] [--block 5] [--skip_darts]

DATA_DIR: an ImageFolder root with train/ (e.g. shared/data/cifar10-subset); images are used at
32x32. The setting: C=8, 5 layers, batch 32, torch threads 2 on CPU. Prints, per mode, the
median seconds per step over --steps steps after --warmup (rows take turns in blocks of --block
steps), the ratio to ista_single_nor (paired: each block of a row is divided by the mean of the
ista_single_nor blocks run just before and after it, then the median over turns, so drift of a
shared machine cancels), and the achieved GFLOP/s (FLOPs of one step counted by
torch.utils.flop_counter, forward and backward).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.data import RunData  # noqa: E402
from search.modes import MODES  # noqa: E402
from search.stage import build_stage  # noqa: E402
from search.state import RunState  # noqa: E402
from utils.config import config_from_dict  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.logging import RunLogger  # noqa: E402

ROWS = [("ista_single_nor", {"channels_last": "false"}), ("ista_single_nor", {}), ("ista_single_hpo", {}), ("ista_single_da", {}), ("ista_single_doal", {"hpo.every": 1}),
        ("ista_single_doal", {}), ("ista_nor", {}), ("darts", {}), ("darts_da", {})]


def make_searcher(data_dir: str, mode_name: str, overrides: dict, device: torch.device,
                  init_channels: int = 8, layers: int = 5, batch_size: int = 32):
    """The search-stage Searcher of a mode at a benchmark size (this file's: C=8, 5 cells, batch 32)."""
    raw = {"seed": 0, "progress": False, "log_every": 10**9,
           "dataset": {"name": "imagefolder", "root": data_dir, "num_class": 10, "val_ratio": 0.2,
                       "batch_size": batch_size, "max_train": 1000, "workers": 0},
           "train": {"epochs": 1, "w_lr": 0.025},
           "train_architecture": {"input_size": 32, "init_channels": init_channels, "layers": layers}}
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg, _ = config_from_dict(raw, sets)
    stage = build_stage(cfg, MODES[mode_name], 0, RunState(), device, RunLogger(None, quiet=True), RunData(cfg.seed))
    searcher = stage.searcher
    searcher.start_epoch(0)
    searcher.net.train()
    return searcher


def measure_steps(searcher, steps: int, warmup: int, device: torch.device) -> dict:
    """In this process: run warmup + steps training steps on two cached batches; the mean seconds
    of the timed ones (a whole hpo.every cycle when steps is a multiple of it), the peak RSS (MiB) and its growth over the steps, on CUDA the peak allocated."""
    batches = iter(searcher.train_loader)
    cached = [next(batches) for _ in range(2)]
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        searcher.train_step(*cached[i % 2])
        searcher.step += 1
        searcher.weight_update.finish_pending()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": statistics.mean(times), "peak_rss_mib": peak, "step_rss_mib": peak - built}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def child_json(argv: list[str]) -> dict:
    """Run `python argv...` in a child process (peak memory is per process); its last stdout line as JSON."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_modes(searchers: list, steps: int, warmup: int, device: torch.device, block: int = 5,
               base: int = 1) -> list[tuple[float, list[float], float]]:
    """Per searcher: median seconds per step, its ratio to the base row per turn, FLOPs of one step.

    The rows take turns in blocks of `block` consecutive steps, so a slower or busier stretch of
    the machine hits every row alike; the first step of each block is not timed, since it runs
    on caches the previous row (a DARTS supernet is 50x bigger) has just evicted, which a real
    run never does. Within a turn the base row runs a block before and after every other row, and
    a row's ratio is its block median over the mean of the two base blocks around it, so even
    drift within a turn (a DARTS block lasts half a minute) cancels to first order.
    """
    cached = []
    for searcher in searchers:
        batches = iter(searcher.train_loader)
        cached.append([next(batches) for _ in range(4)])
    times: list[list[float]] = [[] for _ in searchers]
    ratios: list[list[float]] = [[] for _ in searchers]
    done = [0 for _ in searchers]

    def run_block(row: int) -> float | None:
        in_block = []
        for j in range(block):
            x, y = cached[row][done[row] % len(cached[row])]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            searchers[row].train_step(x, y)
            searchers[row].step += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            done[row] += 1
            if done[row] > warmup and j > 0:
                in_block.append(time.perf_counter() - start)
        # A step's background validation pass is finished by the next step (and so timed in it);
        # the block's last one is finished here, untimed, as the block's first step is untimed.
        searchers[row].weight_update.finish_pending()
        times[row].extend(in_block)
        return statistics.median(in_block) if in_block else None

    others = [row for row in range(len(searchers)) if row != base]
    while min(len(times[row]) for row in others) < steps:
        before = run_block(base)
        for row in others:
            own = run_block(row)
            after = run_block(base)
            if own is not None and before is not None and after is not None:
                ratios[row].append(own / (0.5 * (before + after)))
            before = after
    ratios[base] = [1.0]
    results = []
    for row, searcher in enumerate(searchers):
        # The counter sees the calling thread only: count a step with the validation pass inline.
        background = getattr(searcher.weight_update, "background", False)
        searcher.weight_update.background = False
        with FlopCounterMode(display=False) as counter:
            searcher.train_step(*cached[row][0])
        searcher.weight_update.background = background
        results.append((statistics.median(times[row]), ratios[row], counter.get_total_flops()))
    return results


def checked_device(name: str) -> torch.device | None:
    """The device a bench runs on, or None after a one-line error on stderr (unknown, or CUDA absent)."""
    try:
        return resolve_device(name)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    """Run every row, print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=int, default=5, help="consecutive steps per row per turn (>= 2)")
    parser.add_argument("--skip_darts", action="store_true", help="leave out the (slow) DARTS rows")
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "train").is_dir():
        print(f"error: no ImageFolder train/ under '{args.data_dir}'", file=sys.stderr)
        return 2
    device = checked_device(args.device)
    if device is None:
        return 2
    torch.set_num_threads(args.threads)
    rows = [(mode, overrides) for mode, overrides in ROWS if not (args.skip_darts and mode.startswith("darts"))]
    searchers = [make_searcher(args.data_dir, mode, overrides, device) for mode, overrides in rows]
    base = rows.index(("ista_single_nor", {}))
    timed = time_modes(searchers, args.steps, args.warmup, device, max(2, args.block), base)
    results = [(mode + "".join(f" {k}={v}" for k, v in overrides.items()), seconds, statistics.median(ratios), flops)
               for (mode, overrides), (seconds, ratios, flops) in zip(rows, timed)]
    turns = min(len(ratios) for row, (_, ratios, _) in enumerate(timed) if row != base)
    print(f"{'mode':<36} {'s/step':>8} {'x nor':>7} {'GFLOP/step':>11} {'GFLOP/s':>8}")
    for label, seconds, ratio, flops in results:
        print(f"{label:<36} {seconds:8.4f} {ratio:7.2f} {flops / 1e9:11.3f} {flops / 1e9 / seconds:8.2f}")
    by_label = {label: (seconds, ratio) for label, seconds, ratio, _ in results}
    print(f"summary: ista_single_doal {by_label['ista_single_doal'][0]:.3f} s/step, "
          f"{by_label['ista_single_doal hpo.every=1'][1]:.2f}x ista_single_nor (every=1), "
          f"{by_label['ista_single_doal'][1]:.2f}x (every=4, the default), on {device} with {args.threads} threads; "
          f"x nor = median over {turns} turns of a row's block median / the mean of the ista_single_nor blocks just "
          f"before and after it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
