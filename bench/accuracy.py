"""End-to-end accuracy on a real image folder: the single-stage searches against not searching.

    python bench/accuracy.py DATA_DIR [--search_epochs 5] [--retrain_epochs 5] [--seeds 5 6 7]
        [--modes ista_single_nor ista_single_doal train train_doal daas] [--space darts|mobilenet [--width 0.5]]
        [--out /tmp/acc_runs] [--set da.objective=...]
    python bench/accuracy.py DATA_DIR --collect OUT_DIR [OUT_DIR ...] [--modes ...]

DATA_DIR: an ImageFolder root with train/ and val/ (val/ is the test set; the validation split
is carved out of train/). Same seeds, same budget, a small 32-px network (C=8, 5 cells); the
bounds of DHA's cifar10 config for lr / wd and its policy size, our default update rules, and the
search's magnitude 1 kept in continued training (DHA's magnitude_tune 10 under-fits in 5 epochs: train
top-1 0.30 against 0.35, test 0.454 against 0.483 for ista_single_doal at seed 5). `train`
is the baseline: the fixed DARTS_V2 cell at the same C and cells, trained from scratch for the same
total epochs (search + retrain) with crop, flip, Cutout and a cosine lr; `train_doal` the same while
DHA's policy and lr / wd learn. Prints a table of the train top-1 after the first epoch, val / test
top-1, the epochs the search took to freeze, how far the learned parts moved (the policy's largest
entropy drop, the share of the lr band the learned lr covered) and the wall time of each run; with
several --seeds, each mode's mean and range and each mode minus the first, paired by seed, with its
standard error. At this budget the final epoch of one run lands anywhere in a val swing of a few
points, so compare means over seeds. --collect runs nothing: it prints the table of the runs already
under the given --out folders (e.g. seeds run in separate sittings).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_darts  # noqa: E402
from hpo.hypergrad import start_value  # noqa: E402
from search.modes import MODES, Kind  # noqa: E402

MODES_COMPARED = ("ista_single_nor", "ista_single_doal", "train")


def mode_sets(mode: str, retrain_epochs: int, space: str, width: float) -> list[str]:
    """Per-run overrides. A mode that retrains its genotype (daas, darts: the tune sections) does so for
    --retrain_epochs after its search, so its total is the others'; otherwise the tune epochs are the
    `train` baseline's total.
    The MobileNet-like space at `width`, with MobileNetV2 itself as the `train` baseline."""
    stages = MODES[mode].stages
    retrains_a_search = len(stages) > 1 and stages[-1].kind is Kind.RETRAIN
    sets = [f"tune.epochs={retrain_epochs}"] if retrains_a_search else []
    if space == "mobilenet":
        sets += [f"{sec}.{key}" for sec in ("train_architecture", "tune_architecture")
                 for key in ("space=mobilenet", f"width={width}")] + ["tune_architecture.genotype=MOBILENET_V2"]
    return sets


def config(data_dir: str, out: str, search_epochs: int, retrain_epochs: int) -> dict:
    """The shared budget (the seed comes per run, from --seeds)."""
    return {
        "save_root": out, "progress": False, "log_every": 50,
        "dataset": {"name": "imagefolder", "root": data_dir, "num_class": 10, "val_ratio": 0.1,
                    "batch_size": 32, "cutout_size": 16, "workers": 0},
        "train": {"epochs": search_epochs, "retrain_epochs": retrain_epochs, "w_lr": 0.025, "w_lr_min": 0.001},
        "train_architecture": {"input_size": 32, "init_channels": 8, "layers": 5, "alpha_lr": 3e-3,
                               "dist_limit": 1e-2, "drop_path_prob": 0.1, "auxiliary": True, "aux_weight": 0.4},
        "tune": {"epochs": search_epochs + retrain_epochs},  # the `train` baseline: the same total budget
        "tune_architecture": {"genotype": "DARTS_V2"},
        "hpo": {"learning_low": 1e-3, "learning_up": 0.05, "weight_decay_low": 1e-4, "weight_decay_up": 5e-4},
        "da": {"policy": 14, "d_lr": 0.02, "d_lr_tune": 0.05, "temperature": 2, "magnitude": 1, "magnitude_tune": 1},
    }


def movement(records: list[dict], cfg: dict) -> tuple[str, str]:
    """The policy's largest entropy drop below its first logged value's maximum ln K^2, and the
    share of the lr band the learned lr (the peak, where logged) covered ('-' where a run has no such part)."""
    import math
    entropies = [r["policy_entropy"] for r in records if "policy_entropy" in r]
    drop = f"{math.log(cfg['da']['policy'] ** 2) - min(entropies):.3f}" if entropies else "-"
    # the learned peak where a run logs it (the stepping lr also carries the cosine's fall)
    trace = [t for r in records for t in r.get("hyper_trace", [])]
    lrs = [t.get("lr_peak", t["lr"]) for t in trace]
    low, up = cfg["hpo"]["learning_low"], cfg["hpo"]["learning_up"]
    band = up - low
    if trace and "lr_peak" in trace[-1]:
        lrs.append(start_value((low, up)))  # where it started, before the first logged step
    cover = f"{(max(lrs) - min(lrs)) / band:.2f}" if lrs else "-"
    return drop, cover


def read_run(run_dir: Path) -> dict:
    """One finished run's row: mode, seed, metrics, whether the search froze, minutes, movement, epoch-1 train top-1."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"mode": metrics["mode"], "seed": cfg["seed"], "metrics": metrics, "moved": movement(records, cfg),
            "froze": any(r.get("stopped_early") for r in records if r["stage"] == "search"),
            "minutes": metrics["total_seconds"] / 60, "first": records[0]["train_top1"]}


def collect(out_dirs: list[str], modes: list[str]) -> list[dict]:
    """The rows of the finished runs (a metrics.json) of `modes` under the given --out folders, in seed then mode order."""
    rows = [read_run(d) for out in out_dirs for d in sorted(Path(out).glob("imagefolder_*_seed*"))
            if (d / "metrics.json").is_file()]
    return sorted((row for row in rows if row["mode"] in modes), key=lambda row: (row["seed"], modes.index(row["mode"])))


def paired_differences(rows: list[dict], reference: str, mode: str) -> tuple[int, float, float]:
    """(n seeds both modes ran, mean of mode's test top-1 minus reference's at the same seed, its standard
    error): pairing by seed removes the part of the spread the two runs share (data order, test set)."""
    ref = {row["seed"]: row["metrics"]["test_top1"] for row in rows if row["mode"] == reference}
    diffs = [row["metrics"]["test_top1"] - ref[row["seed"]] for row in rows if row["mode"] == mode and row["seed"] in ref]
    if not diffs:
        return 0, float("nan"), float("nan")
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return len(diffs), statistics.mean(diffs), se


def print_table(rows: list[dict], modes: list[str]) -> None:
    """One line per run, then each mode's means and range, then each mode against the first, paired by seed."""
    print(f"\n{'mode':<18} {'seed':>4} {'epoch-1 train':>13} {'val top-1':>9} {'test top-1':>10} "
          f"{'search epochs':>13} {'froze':>7} {'H drop':>6} {'lr cover':>8} {'params M':>8} {'minutes':>7}")
    for row in rows:
        m, (drop, cover) = row["metrics"], row["moved"]
        print(f"{row['mode']:<18} {row['seed']:4d} {row['first']:13.4f} {m['val_top1']:9.4f} {m['test_top1']:10.4f} "
              f"{m['search_epochs']:13d} {'yes' if row['froze'] else 'no':>7} {drop:>6} {cover:>8} "
              f"{m['params_m']:8.3f} {row['minutes']:7.1f}")
    means, seeds = {}, sorted({row["seed"] for row in rows})
    for mode in modes:
        mine = [row for row in rows if row["mode"] == mode]
        tests = [row["metrics"]["test_top1"] for row in mine]
        means[mode] = statistics.mean(tests)
        if len(seeds) > 1:
            print(f"{mode:<18} mean {statistics.mean(r['first'] for r in mine):13.4f} "
                  f"{statistics.mean(r['metrics']['val_top1'] for r in mine):9.4f} {means[mode]:10.4f}   "
                  f"test range {min(tests):.4f}-{max(tests):.4f} over {len(tests)} seeds")
    for mode in modes[1:] if len(seeds) > 1 else []:
        n, diff, se = paired_differences(rows, modes[0], mode)
        print(f"{mode:<18} minus {modes[0]}, paired by seed: {diff:+.4f} (standard error {se:.4f}, {n} seeds)")
    print("summary: test top-1 " + " vs ".join(f"{means[mode]:.4f} ({mode})" for mode in modes)
          + f", seeds {seeds}, same budget{' (means)' if len(seeds) > 1 else ''}")


def run_all(args: argparse.Namespace) -> list[dict] | int:
    """Run every mode for every seed -> their rows, or the exit code of the first run that failed."""
    torch.set_num_threads(2)
    conf = Path(args.out) / "accuracy.json"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(json.dumps(config(args.data_dir, args.out, args.search_epochs, args.retrain_epochs)))
    rows = []
    for seed in args.seeds:
        for mode in args.modes:
            save_name = time.strftime("%H%M%S") + f"_seed{seed}"
            code = search_darts.main(["--conf_path", str(conf), "--Running", mode, "--set", f"save_name={save_name}",
                                      "--set", f"seed={seed}", "--set", "progress=false"]
                                     + [arg for item in mode_sets(mode, args.retrain_epochs, args.space, args.width) + args.set
                                        for arg in ("--set", item)])
            if code != 0:
                return code
            rows.append(read_run(Path(args.out) / f"imagefolder_{mode}_{save_name}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run every mode for every seed and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--search_epochs", type=int, default=5)
    parser.add_argument("--retrain_epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[5])
    parser.add_argument("--modes", nargs="+", default=list(MODES_COMPARED),
                        choices=sorted(m for m in MODES if m.startswith(("ista_single", "train")) or m in ("daas", "darts")),
                        help="e.g. add ista_single_hpo and ista_single_da to see which half of DHA moves the result")
    parser.add_argument("--space", choices=("darts", "mobilenet"), default="darts",
                        help="the search space (train_architecture.space); mobilenet: the baseline is MobileNetV2")
    parser.add_argument("--width", type=float, default=0.5, help="width multiplier of the mobilenet space")
    parser.add_argument("--out", default="/tmp/accuracy_runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (as search_darts.py --set)")
    parser.add_argument("--collect", nargs="+", metavar="OUT_DIR",
                        help="run nothing: print the table of the runs already under these --out folders "
                             "(e.g. seeds run in separate sittings), for the --modes given")
    args = parser.parse_args(argv)
    if args.collect:
        missing = [d for d in args.collect if not Path(d).is_dir()]
        if missing:
            print(f"error: no run folder '{missing[0]}' to collect", file=sys.stderr)
            return 2
        rows = collect(args.collect, args.modes)
        if not rows:
            print(f"error: no finished run of {args.modes} under {args.collect}", file=sys.stderr)
            return 2
    elif not (Path(args.data_dir) / "train").is_dir():
        print(f"error: no ImageFolder train/ under '{args.data_dir}'", file=sys.stderr)
        return 2
    else:
        rows = run_all(args)
        if isinstance(rows, int):
            return rows
    print_table(rows, [m for m in args.modes if any(row["mode"] == m for row in rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
