"""Figures of a run: `python -m search.report RUN_DIR` writes PNGs into RUN_DIR/figures/.

curves.png (train / val loss and top-1 per epoch), hparams.png (lr and wd over training),
policy_ops.png (the policy's op probabilities per epoch, stacked), policy_matrix.png (the final pair
probabilities), code_distances.png (per-node change of the ISTA codes, with the freeze epochs) and
cells.png (the normal and reduction cells as graphs). A figure a run has no data for is skipped with
a note. Every run writes them at its end and also puts them in TensorBoard.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def load_run(run_dir: Path) -> dict:
    """The epoch records and the JSON artifacts a run folder holds (missing ones as None)."""
    def read(name):
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else None
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return {"records": [json.loads(line) for line in lines if line.strip()], "hparams": read("hparams.json"),
            "policy": read("policy.json"), "genotype": read("genotype.json")}


def _stage_lines(ax, records: list[dict]) -> None:
    for x in range(1, len(records)):
        if records[x]["stage"] != records[x - 1]["stage"]:
            ax.axvline(x + 0.5, color="grey", linestyle=":", linewidth=1)
            ax.text(x + 0.6, ax.get_ylim()[1], records[x]["stage"], va="top", fontsize=8, color="grey")


def plot_curves(records: list[dict], path: Path) -> None:
    """Train / val loss and top-1 per epoch over all stages."""
    x = list(range(1, len(records) + 1))
    fig, (loss, top1) = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in ((loss, "loss"), (top1, "top1")):
        ax.plot(x, [r[f"train_{key}"] for r in records], marker=".", label="train")
        ax.plot(x, [r[f"val_{key}"] for r in records], marker=".", label="val")
        ax.set_xlabel("epoch (all stages)")
        ax.set_title(key)
        ax.legend()
        _stage_lines(ax, records)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hparams(hparams: dict, records: list[dict], path: Path) -> None:
    """lr and wd: per logged step when learned, per epoch otherwise."""
    steps = hparams.get("steps") or []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("lr", "wd")):
        if steps:
            ax.plot(range(1, len(steps) + 1), [s[key] for s in steps], linewidth=1, label="the steps'")
            if key == "lr" and "lr_peak" in steps[0]:  # the learned value, before the schedule's fall
                ax.plot(range(1, len(steps) + 1), [s["lr_peak"] for s in steps], linewidth=1, label="learned peak")
                ax.legend()
            ax.set_xlabel("logged step")
        else:
            ax.plot(range(1, len(records) + 1), [r[key] for r in records], marker=".")
            ax.set_xlabel("epoch")
        ax.set_title(f"{key} ({'learned' if hparams.get('learned') else 'scheduled'})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_policy_ops(records: list[dict], path: Path) -> bool:
    """Stacked op probabilities per epoch; False when the run logged none."""
    rows = [r for r in records if r.get("policy_ops")]
    if not rows:
        return False
    names = list(rows[0]["policy_ops"])
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.stackplot(range(1, len(rows) + 1), [[r["policy_ops"][n] for r in rows] for n in names], labels=names)
    ax.set_xlabel("epoch (with a policy)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_policy_matrix(policy: dict | None, path: Path) -> bool:
    """Heatmap of the final pair probabilities; False for policies without a pair matrix."""
    if not policy or "pair_probabilities" not in policy:
        return False
    names = policy["ops"]
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(policy["pair_probabilities"], cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("second op")
    ax.set_ylabel("first op")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_code_distances(records: list[dict], path: Path) -> bool:
    """Per-node code change per search epoch (log scale), a marker where a node froze."""
    rows = [r for r in records if r.get("node_code_change")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(10, 4))
    for node in rows[0]["node_code_change"]:
        values = [max(r["node_code_change"][node], 1e-12) for r in rows]
        line, = ax.plot(range(1, len(rows) + 1), values, marker=".", label=node)
        froze = next((e for e, r in enumerate(rows, 1) if r["node_frozen"][node]), None)
        if froze is not None:
            ax.plot([froze], [values[froze - 1]], marker="*", markersize=12, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("search epoch")
    ax.set_ylabel("||code change||  (* froze)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _draw_cell(ax, gene: list, concat: list, title: str) -> None:
    steps = len(gene) // 2
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    pos.update({2 + i: (1.0 + i, 1.5 * (-1) ** i * 0.6) for i in range(steps)})
    out = (steps + 1.5, 0.0)
    names = {0: "c[k-2]", 1: "c[k-1]", **{2 + i: str(i) for i in range(steps)}}
    for k, (op, src) in enumerate(gene):
        dst = 2 + k // 2
        ax.annotate("", xy=pos[dst], xytext=pos[src], arrowprops=dict(
            arrowstyle="->", color="tab:blue", shrinkA=14, shrinkB=14, connectionstyle=f"arc3,rad={0.15 * (k % 2 * 2 - 1)}"))
        mid = ((pos[src][0] + pos[dst][0]) / 2, (pos[src][1] + pos[dst][1]) / 2 + 0.15 * (k % 2 * 2 - 1))
        ax.text(*mid, op, fontsize=7, ha="center", va="center", color="tab:blue",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for node in concat:
        ax.annotate("", xy=out, xytext=pos[node], arrowprops=dict(arrowstyle="->", color="grey", shrinkA=14, shrinkB=14))
    for node, (x, y) in pos.items():
        ax.text(x, y, names[node], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="circle", fc="lightyellow" if node < 2 else "lightblue"))
    ax.text(*out, "c[k]", ha="center", va="center", fontsize=9, bbox=dict(boxstyle="circle", fc="lightgreen"))
    ax.set_xlim(-0.7, steps + 2.2)
    ax.set_ylim(-2.0, 2.0)
    ax.set_title(title)
    ax.axis("off")


def plot_cells(genotype: dict, path: Path) -> None:
    """The normal and the reduction cell as graphs (drawn by matplotlib, no graphviz needed)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    _draw_cell(axes[0], genotype["normal"], genotype["normal_concat"], "normal cell")
    _draw_cell(axes[1], genotype["reduce"], genotype["reduce_concat"], "reduction cell")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run_dir: Path) -> tuple[list[Path], list[str]]:
    """Every figure the run has data for, into run_dir/figures/; returns (written, notes on skipped)."""
    run = load_run(run_dir)
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    written, notes = [], []
    if run["records"]:
        plot_curves(run["records"], out / "curves.png")
        written.append(out / "curves.png")
    else:
        notes.append("curves: no epoch records (metrics.jsonl)")
    if run["hparams"]:
        plot_hparams(run["hparams"], run["records"], out / "hparams.png")
        written.append(out / "hparams.png")
    for name, made, why in (
            ("policy_ops.png", lambda p: plot_policy_ops(run["records"], p), "no searched policy"),
            ("policy_matrix.png", lambda p: plot_policy_matrix(run["policy"], p), "no pair policy"),
            ("code_distances.png", lambda p: plot_code_distances(run["records"], p), "no ISTA codes")):
        if made(out / name):
            written.append(out / name)
        else:
            notes.append(f"{name}: skipped ({why} in this mode)")
    if run["genotype"] and "normal" in run["genotype"]:
        plot_cells(run["genotype"], out / "cells.png")
        written.append(out / "cells.png")
    elif run["genotype"]:
        notes.append(f"cells.png: skipped (a {run['genotype'].get('space')} genotype has no cells: "
                     f"{', '.join(run['genotype'].get('layers', []))})")
    return written, notes


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m search.report RUN_DIR."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not (Path(argv[0]) / "metrics.jsonl").is_file():
        print("error: usage: python -m search.report RUN_DIR (a run folder with metrics.jsonl)", file=sys.stderr)
        return 2
    written, notes = write_report(Path(argv[0]))
    for path in written:
        print(f"wrote {path}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
