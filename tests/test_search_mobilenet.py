"""The MobileNet-like space in the modes: DARTS and single-path searches, a given MobileNetV2, exports."""
import json

import pytest
import torch

import search_darts
from models.mobile_supernet import MobileSupernet
from models.mobilenet import LAYER_OPS

SMALL = {"space": "mobilenet", "width": 0.35, "input_size": 32}


@pytest.mark.real_export
@pytest.mark.parametrize("mode", ["darts", "darts_da", "daas"])
def test_searches_on_the_mobilenet_space_end_with_a_mobilenet_model(mode, write_config, tmp_path):
    conf = write_config(train_architecture=SMALL, tune_architecture=SMALL)
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"fake_{mode}"
    genotype = json.loads((run_dir / "genotype.json").read_text())
    assert genotype["space"] == "mobilenet" and len(genotype["layers"]) == 16
    program = torch.export.load(run_dir / "model.pt2")
    assert program.module()(torch.rand(3, 3, 32, 32)).shape == (3, 4)
    from models.network import load_model
    assert load_model(run_dir / "model_state.pt").genotype.layers == genotype["layers"]


def test_train_mode_trains_mobilenet_v2_as_the_baseline(write_config, tmp_path):
    # recompute_cells is for the cell space: here a notice, and the run goes on
    conf = write_config(tune_architecture={"genotype": "MOBILENET_V2", **SMALL}, recompute_cells=2)
    assert search_darts.main(["--conf_path", str(conf), "--Running", "train", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "runs" / "fake_train" / "metrics.json").read_text())
    assert metrics["genotype"]["layers"] == ["mb3_e6"] * 16
    log = (tmp_path / "runs" / "fake_train" / "log.txt").read_text()
    assert "recompute_cells 2 ignored: MobileNetwork has no cells" in log


@pytest.mark.real_export
def test_dha_on_the_mobilenet_space_ends_with_the_derived_network_on_64_px_images(write_config, tmp_path):
    arch = {**SMALL, "input_size": 64, "dist_limit": 0.0}
    conf = write_config(train_architecture=arch, train={"epochs": 2, "retrain_epochs": 1, "max_steps_per_epoch": 2})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_doal", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_doal"
    genotype = json.loads((run_dir / "genotype.json").read_text())
    assert genotype["space"] == "mobilenet" and len(genotype["layers"]) == 16
    x = torch.rand(3, 3, 64, 64)
    program = torch.export.load(run_dir / "model.pt2")  # plain torch.export, no project code needed
    from models.network import load_model
    model = load_model(run_dir / "model_state.pt")
    assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["search", "search", "continue"] and "node_code_change" in records[0]


def test_a_two_stage_ista_mode_on_the_mobilenet_space_is_one_line_before_anything_is_written(write_config, tmp_path,
                                                                                               capsys):
    conf = write_config(train_architecture=SMALL)
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_nor"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mobilenet" in err and "daas" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("mixing, ops_per_layer", [("softmax", None), ("gumbel", 1)])
def test_the_supernet_runs_every_allowed_op_or_one_and_alpha_learns(mixing, ops_per_layer):
    torch.manual_seed(0)
    net = MobileSupernet(4, mixing=mixing, width=0.35, stem="cifar").train()
    weights, active = net.mixing_weights()
    allowed = net.allowed.sum(1).tolist()
    assert [len(ops) for ops in active] == (allowed if ops_per_layer is None else [1] * len(allowed))
    assert not any(LAYER_OPS[k] == "skip" and not ok for ops, row in zip(active, net.allowed.tolist())
                   for k, ok in zip(ops, [row[k] for k in ops]))
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0
    assert len(net.genotype().layers) == 16
