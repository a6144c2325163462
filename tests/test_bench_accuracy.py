"""bench/accuracy.py's table: runs read back from their folders, modes compared paired by seed."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "accuracy.py"
_spec = importlib.util.spec_from_file_location("bench_accuracy", _PATH)
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def _row(mode: str, seed: int, test: float) -> dict:
    return {"mode": mode, "seed": seed, "metrics": {"test_top1": test}}


def test_paired_differences_pair_by_seed_and_skip_unmatched_seeds():
    rows = [_row("a", 1, 0.50), _row("a", 2, 0.60), _row("a", 3, 0.40),
            _row("b", 1, 0.52), _row("b", 2, 0.66), _row("b", 4, 0.99)]  # seed 4: no reference run
    n, diff, se = accuracy.paired_differences(rows, "a", "b")
    assert n == 2
    assert diff == pytest.approx(0.04)
    assert se == pytest.approx(0.02)  # stdev(0.02, 0.06) / sqrt(2)


def _fake_run(out: Path, mode: str, seed: int, test: float) -> None:
    run = out / f"imagefolder_{mode}_000000_seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": seed, "hpo": {"learning_low": 0.0, "learning_up": 1.0},
                                                 "da": {"policy": 14}}))
    (run / "metrics.json").write_text(json.dumps({"mode": mode, "test_top1": test, "val_top1": test, "params_m": 0.05,
                                                  "search_epochs": 5, "total_seconds": 60.0}))
    (run / "metrics.jsonl").write_text(json.dumps({"stage": "search", "train_top1": 0.2}) + "\n")


def test_collect_prints_the_runs_of_several_sittings_paired_by_seed(tmp_path, capsys):
    for seed, (nor, doal) in {5: (0.50, 0.55), 6: (0.60, 0.61)}.items():
        _fake_run(tmp_path / f"sitting{seed}", "ista_single_nor", seed, nor)
        _fake_run(tmp_path / f"sitting{seed}", "ista_single_doal", seed, doal)
    code = accuracy.main(["unused", "--collect", str(tmp_path / "sitting5"), str(tmp_path / "sitting6"),
                          "--modes", "ista_single_nor", "ista_single_doal"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ista_single_doal   minus ista_single_nor, paired by seed: +0.0300 (standard error 0.0200, 2 seeds)" in out
    assert "seeds [5, 6]" in out


def test_collect_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    code = accuracy.main(["unused", "--collect", str(tmp_path / "nowhere")])
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_the_lr_band_covered_is_the_learned_peaks_not_the_annealed_steps():
    cfg = {"hpo": {"learning_low": 0.02, "learning_up": 0.06}, "da": {"policy": 14}}
    trace = [{"lr": 0.046, "lr_peak": 0.046}, {"lr": 0.01, "lr_peak": 0.03}, {"lr": 0.002, "lr_peak": 0.03}]
    assert accuracy.movement([{"hyper_trace": trace}], cfg) == ("-", "0.40")  # 0.03-0.046
    falling = [{"lr": 0.033, "lr_peak": 0.033}, {"lr": 0.001, "lr_peak": 0.03}]
    assert accuracy.movement([{"hyper_trace": falling}], cfg) == ("-", "0.25")  # from the start 0.04 to 0.03
    assert accuracy.movement([{"hyper_trace": falling}, {"stage": "retrain"}], cfg) == ("-", "0.25")  # no trace last
    old_run = [{k: v for k, v in step.items() if k == "lr"} for step in trace]  # logged before lr_peak
    assert accuracy.movement([{"hyper_trace": old_run}], cfg) == ("-", "1.10")  # the steps' lr, as logged
