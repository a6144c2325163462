"""Hyper-parameter search end to end: lr / wd move within bounds on real digits; DHA's README command."""
import json
from pathlib import Path

import search_darts

REPO = Path(__file__).resolve().parents[1]


def test_100_steps_on_digits_move_lr_and_wd_within_bounds(write_config, tmp_path):
    bounds = {"learning_low": 0.01, "learning_up": 0.08, "weight_decay_low": 1e-4, "weight_decay_up": 5e-4}
    conf = write_config(
        dataset={"name": "digits", "num_class": 10, "val_ratio": 0.2, "batch_size": 16, "max_train": 200,
                 "max_test": 32, "flip": False},
        train={"epochs": 5, "retrain_epochs": 5, "max_steps_per_epoch": None},
        train_architecture={"dist_limit": 0.0},
        hpo=bounds,
    )
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_hpo", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "digits_ista_single_hpo"
    hparams = json.loads((run_dir / "hparams.json").read_text())
    steps = hparams["steps"]
    assert hparams["learned"] and len(steps) == 100  # 10 steps per epoch, 10 epochs, logged every step
    lrs, wds = [s["lr_peak"] for s in steps], [s["wd"] for s in steps]
    assert max(lrs) - min(lrs) > 1e-3 and max(wds) - min(wds) > 1e-6
    assert all(bounds["learning_low"] <= v <= bounds["learning_up"] for v in lrs)
    # the steps run at the learned peak during the constant-lr search, then at it times the cosine's fall
    assert all(s["lr"] == s["lr_peak"] for s in steps if s["stage"] == "search")
    assert steps[-1]["stage"] == "continue" and steps[-1]["lr"] < 0.5 * steps[-1]["lr_peak"]
    assert all(bounds["weight_decay_low"] <= v <= bounds["weight_decay_up"] for v in wds)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    for tag in ("search/hparams_lr", "search/hparams_wd", "continue/hparams_lr", "search/lr", "search/wd"):
        assert tag in events.Tags()["scalars"], tag
    assert len(events.Scalars("search/hparams_lr")) == 50


def test_dha_readme_command_runs_with_the_flowers_config(tmp_path):
    # The original README's DHA command; the config lacks magnitude, aug_choice and restart (defaults fill them).
    argv = ["--conf_path", str(REPO / "conf/ista/flowers102_ista_single.json"), "--Running", "ista_single_doal",
            "--device", "cpu", "--set", "dataset.name=fake", "--set", f"save_root={tmp_path / 'runs'}",
            "--set", "train_architecture.input_size=32", "--set", "train_architecture.init_channels=4",
            "--set", "train_architecture.layers=3", "--set", "dataset.batch_size=8", "--set", "dataset.max_test=16",
            "--set", "dataset.val_ratio=0.1", "--set", "dataset.cutout_size=8",
            "--set", "train.epochs=1", "--set", "train.retrain_epochs=1", "--set", "train.max_steps_per_epoch=2",
            "--set", "progress=false"]
    assert search_darts.main(argv) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_doal"
    for name in ("genotype.json", "policy.json", "hparams.json", "metrics.json", "model.pt2", "model_state.pt"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["da"]["magnitude"] == 1.0 and config["da"]["magnitude_tune"] == 10.0
    assert config["dataset"]["aug_choice"] == 14 and config["hpo"]["restart"] is False
    assert json.loads((run_dir / "hparams.json").read_text())["learned"]
