"""The ready model: model.pt2 loads with plain PyTorch (no project code) and predicts as the run did."""
import json
import subprocess
import sys

import pytest
import torch

import search_darts
from datasets import BatchLoader, build_splits
from models.network import load_model
from search.evaluate import predict

PLAIN_TORCH = """
import sys, torch
program = torch.export.load(sys.argv[1])
images = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(program.module()(images).argmax(1), sys.argv[3])
"""

pytestmark = pytest.mark.real_export


def test_exported_program_matches_the_runs_own_evaluation(write_config, tmp_path):
    conf = write_config(train={"epochs": 2, "retrain_epochs": 2})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_nor", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_nor"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    data = build_splits("fake", None, image_size=8, val_ratio=cfg["dataset"]["val_ratio"], seed=cfg["seed"],
                        num_classes=4, max_test=cfg["dataset"]["max_test"])
    images = torch.stack([data.test[i][0] for i in range(len(data.test))]).float() / 255
    labels = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    torch.save(images, tmp_path / "images.pt")

    # A fresh interpreter started outside the repository: only torch is importable from there.
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TORCH)
    subprocess.run([sys.executable, "-I", str(script), str(run_dir / "model.pt2"), str(tmp_path / "images.pt"),
                    str(tmp_path / "pred.pt")], check=True, cwd=tmp_path)
    exported = torch.load(tmp_path / "pred.pt")

    model = load_model(run_dir / "model_state.pt")
    own = predict(model, BatchLoader(data.test, 8, shuffle=False, drop_last=False, seed=0), torch.device("cpu"))
    assert torch.equal(exported, own)
    assert abs((exported == labels).float().mean().item() - metrics["test_top1"]) < 1e-9
    assert metrics["test_images"] == len(labels)
