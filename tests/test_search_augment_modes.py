"""Augmentation-search modes on the real digits data, and the policy in TensorBoard."""
import json

import pytest

import search_darts

DIGITS = {"name": "digits", "num_class": 10, "val_ratio": 0.2, "batch_size": 16, "max_train": 160, "max_test": 64,
          "flip": False}


@pytest.mark.parametrize("mode, objective", [("ista_single_da", "adversarial"), ("ista_single_doal", "generalization"),
                                             ("darts_da", "adversarial")])
def test_augmentation_modes_on_digits_write_every_artifact(mode, objective, write_config, tmp_path):
    conf = write_config(dataset=DIGITS, da={"log_images_every": 1, "objective": objective, "val_every": 2})
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"digits_{mode}"
    for name in ("config.json", "checkpoint.pt", "genotype.json", "policy.json", "hparams.json", "metrics.json",
                 "model.pt2", "model_state.pt"):
        assert (run_dir / name).is_file(), name
    policy = json.loads((run_dir / "policy.json").read_text())
    assert policy["type"] == ("subpolicy" if mode == "darts_da" else "pair") and policy["searched"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert "policy/entropy" in tags["scalars"]
    assert any(t.startswith("policy/op/") for t in tags["scalars"])
    assert "policy/matrix" in tags["images"] and "policy/samples" in tags["images"]
