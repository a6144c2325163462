"""Augmentation-search modes on the real digits data, and the policy in TensorBoard."""
import json

import pytest

import search_darts

DIGITS = {"name": "digits", "num_class": 10, "val_ratio": 0.2, "batch_size": 16, "max_train": 160, "max_test": 64,
          "flip": False}


@pytest.mark.parametrize("mode, objective", [("ista_single_da", "adversarial"), ("ista_single_doal", "generalization"),
                                             ("ista_single_da", "affinity"), ("darts_da", "adversarial"),
                                             ("daas", "generalization")])
def test_augmentation_modes_on_digits_write_every_artifact(mode, objective, write_config, tmp_path):
    # 8 steps per epoch: enough samples for pairs seen on both even and odd steps
    conf = write_config(dataset=DIGITS, train={"max_steps_per_epoch": 8},
                        da={"log_images_every": 1, "objective": objective, "val_every": 2})
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"digits_{mode}"
    for name in ("config.json", "checkpoint.pt", "genotype.json", "policy.json", "hparams.json", "metrics.json",
                 "model.pt2", "model_state.pt"):
        assert (run_dir / name).is_file(), name
    policy = json.loads((run_dir / "policy.json").read_text())
    kinds = {"darts_da": "subpolicy", "daas": "pair_bins"}
    assert policy["type"] == kinds.get(mode, "pair") and policy["searched"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert "policy/entropy" in tags["scalars"]
    assert any(t.startswith("policy/op/") for t in tags["scalars"])
    assert "policy/matrix" in tags["images"] and "policy/samples" in tags["images"]
    # score-function rules report whether their per-pair rewards repeat; darts_da learns through the images
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scored = mode != "darts_da"
    assert ("policy/reward_split_half_r" in tags["scalars"]) == scored
    assert all(("policy_signal" in r) == scored for r in records if r["stage"] == "search")
    assert all(-1 <= r["policy_signal"] <= 1 for r in records if "policy_signal" in r)


def test_daas_learns_its_policy_from_the_reward_alone_and_replays_it(write_config, tmp_path):
    """The search stage's policy moves (REINFORCE on the validation reward); the retrain replays it."""
    conf = write_config(dataset=DIGITS, train={"epochs": 2, "max_steps_per_epoch": 6}, da={"d_lr": 0.05})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "daas", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "digits_daas"
    policy = json.loads((run_dir / "policy.json").read_text())
    assert policy["entropy"] < policy["max_entropy"] - 1e-3  # it moved from uniform
    q = policy["bin_probabilities"]
    assert any(abs(v - 1 / len(row)) > 1e-3 for row in q for v in row)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["search", "search", "retrain"]
    assert records[-1]["policy_entropy"] == pytest.approx(policy["entropy"])  # the retrain replayed this policy


def test_train_doal_learns_policy_and_lr_for_the_given_genotype(write_config, tmp_path):
    conf = write_config(dataset=DIGITS, tune={"epochs": 2, "max_steps_per_epoch": 12},
                        tune_architecture={"genotype": "DARTS_V2"})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "train_doal", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "digits_train_doal"
    from models.genotypes import DARTS_V2, genotype_from_dict
    assert genotype_from_dict(json.loads((run_dir / "genotype.json").read_text())) == DARTS_V2
    policy = json.loads((run_dir / "policy.json").read_text())
    assert policy["type"] == "pair" and policy["searched"] and policy["entropy"] < policy["max_entropy"] - 1e-3
    hparams = json.loads((run_dir / "hparams.json").read_text())
    steps = hparams["steps"]
    # the learned lr itself (final_peak: without the cosine fall the steps also carry) and wd moved
    assert hparams["learned"] and abs(hparams["final_peak"]["lr"] - steps[0]["lr"]) > 1e-4
    assert max(s["wd"] for s in steps) - min(s["wd"] for s in steps) > 1e-6
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["retrain", "retrain"]


@pytest.mark.parametrize("mode,policy_learns,hpo_learns", [("train_hpo", False, True), ("train_da", True, False)])
def test_train_hpo_and_train_da_learn_one_half_of_train_doal(write_config, tmp_path, mode, policy_learns, hpo_learns):
    conf = write_config(dataset=DIGITS, tune={"epochs": 1, "max_steps_per_epoch": 8},
                        tune_architecture={"genotype": "DARTS_V2"})
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"digits_{mode}"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["retrain"]
    assert ("policy_entropy" in records[-1]) == policy_learns
    assert json.loads((run_dir / "hparams.json").read_text())["learned"] == hpo_learns


@pytest.mark.parametrize("keep", [True, False])
def test_continued_training_keeps_or_drops_the_searched_policy(write_config, tmp_path, keep):
    """da.continue_with_policy: DHA's continued training goes on augmenting with the policy; without it the
    continued training has no policy, and policy.json still holds the policy the search ended with."""
    conf = write_config(da={"continue_with_policy": keep})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_da", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_da"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["search", "continue"]
    assert "policy_entropy" in records[0] and ("policy_entropy" in records[1]) == keep
    policy = json.loads((run_dir / "policy.json").read_text())
    assert policy["type"] == "pair" and policy["searched"]
    assert policy.get("applied_in_continued_training", True) == keep
    if not keep:
        assert policy["entropy"] == pytest.approx(records[0]["policy_entropy"])
    log = (run_dir / "log.txt").read_text()
    assert ("continued training augments as `train` does" in log) == (not keep)
