"""Every available mode end to end on `fake` data: two steps per stage, finite losses, all artifacts."""
import json
import math

import pytest

import search_darts
from search.modes import MODES
from utils.checkpoint import load_checkpoint

AVAILABLE = [name for name, mode in MODES.items() if mode.available]
ARTIFACTS = ["config.json", "checkpoint.pt", "genotype.json", "policy.json", "hparams.json", "metrics.json",
             "metrics.jsonl", "model.pt2", "model_state.pt", "log.txt"]


@pytest.mark.real_export
@pytest.mark.parametrize("mode", AVAILABLE)
def test_mode_runs_end_to_end(mode, write_config, tmp_path, capsys):
    conf = write_config(tune_architecture={"genotype": "DARTS_V2"})  # what `train` trains; searches ignore it
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"fake_{mode}"
    for name in ARTIFACTS:
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert not list(run_dir.glob(".*.tmp*")), "temporary files left behind"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_top1", "test_top1", "params_m", "madds_m", "search_seconds", "total_seconds", "genotype"):
        assert key in metrics
    assert 0.0 <= metrics["test_top1"] <= 1.0 and metrics["params_m"] > 0 and metrics["madds_m"] > 0
    assert metrics["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in records]
    assert stages == [s.kind for s in MODES[mode].stages]  # one epoch per stage
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in records)
    hparams = json.loads((run_dir / "hparams.json").read_text())
    assert len(hparams["trace"]) == len(records) and all(t["lr"] > 0 for t in hparams["trace"])
    assert str(run_dir / "model.pt2") in capsys.readouterr().out


def test_single_stage_search_changes_architecture_and_stops_when_frozen(write_config, tmp_path):
    # dist_limit huge: every node freezes at the first check (epoch index 1), so the search stops early.
    conf = write_config(train={"epochs": 5, "retrain_epochs": 1},
                        train_architecture={"dist_limit": 1e9})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_nor", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_nor"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["search_epochs"] == 2
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    z = [v for k, v in ckpt["state"]["carry"]["net"].items() if k.startswith("z_normal.")]
    assert z and all(t.abs().sum() > 0 for t in z)


def test_run_directory_is_never_overwritten(write_config, tmp_path):
    conf = write_config()
    for _ in range(2):
        assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_nor", "--device", "cpu"]) == 0
    assert (tmp_path / "runs" / "fake_ista_single_nor").is_dir()
    assert (tmp_path / "runs" / "fake_ista_single_nor_2").is_dir()


def test_cutout_eval_quirk_changes_evaluation_only_when_asked(write_config, tmp_path):
    results = {}
    for quirk in (False, True):
        conf = write_config(f"c{quirk}.json", save_name=str(quirk),
                            dataset={"cutout_size": 6, "cutout_eval": quirk, "max_test": 64},
                            # Mixing weights start at O(1e-3): a bolder architecture step makes the
                            # logits depend on the image well above float32 rounding after 2 steps.
                            train_architecture={"alpha_lr": 0.1})
        assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_nor", "--device", "cpu"]) == 0
        results[quirk] = json.loads((tmp_path / "runs" / f"fake_ista_single_nor_{quirk}" / "metrics.json").read_text())
    # Same training (Cutout on training batches either way), different evaluation inputs.
    assert results[False]["genotype"] == results[True]["genotype"]
    assert abs(results[False]["test_loss"] - results[True]["test_loss"]) > 2e-6  # measured 8e-5


def test_the_mode_table_is_checked_when_it_is_defined():
    from search.modes import ArchUpdate, Augment, Kind, Mode, Space, StageSpec
    with pytest.raises(TypeError):
        StageSpec("search", Space.DARTS, ArchUpdate.BILEVEL)  # a free string, not a Kind
    with pytest.raises(ValueError, match="needs a space"):
        StageSpec(Kind.SEARCH, None, ArchUpdate.BILEVEL)
    with pytest.raises(ValueError, match="cannot have arch_update"):
        StageSpec(Kind.CONTINUE, Space.ISTA_SINGLE, ArchUpdate.JOINT)
    search = StageSpec(Kind.SEARCH, Space.DARTS, ArchUpdate.BILEVEL)
    with pytest.raises(ValueError, match="keeps the supernet"):
        Mode("x", (search, StageSpec(Kind.CONTINUE, Space.ISTA_SINGLE)))
    with pytest.raises(ValueError, match="replay needs a searched policy"):
        Mode("x", (search, StageSpec(Kind.RETRAIN, augment=Augment.REPLAY)))


def test_every_enum_member_has_a_builder():
    from search import build, build_policy
    from search.modes import ArchUpdate, Augment, Space
    assert set(build.SUPERNETS) == set(Space)
    assert set(build.ARCH_STEPS) == set(ArchUpdate)
    assert set(build_policy.POLICY_STEPS) == set(Augment)


def test_train_mode_trains_the_given_genotype(write_config, tmp_path, capsys):
    from models.genotypes import PC_DARTS
    genotype_file = tmp_path / "genotype.json"
    genotype_file.write_text(PC_DARTS.to_json())
    conf = write_config(tune_architecture={"genotype": str(genotype_file)}, tune={"epochs": 2})
    assert search_darts.main(["--conf_path", str(conf), "--Running", "train", "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / "fake_train"
    assert json.loads((run_dir / "genotype.json").read_text()) == PC_DARTS.to_dict()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["search_epochs"] == 0 and metrics["search_seconds"] is None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["retrain", "retrain"]
    assert json.loads((run_dir / "policy.json").read_text())["searched"] is False


def test_train_mode_without_a_genotype_is_refused_before_writing(write_config, tmp_path, capsys):
    conf = write_config()
    assert search_darts.main(["--conf_path", str(conf), "--Running", "train"]) == 2
    assert "tune_architecture.genotype" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_recomputed_cells_leave_the_run_unchanged(write_config, tmp_path):
    """recompute_cells trades memory for compute only: the same search (hypergradient every step,
    drop path in the continued stage), up to float rounding of the reordered backward."""
    records = {}
    for recompute_cells in (0, -1):
        conf = write_config(f"r{recompute_cells}.json", recompute_cells=recompute_cells, save_name=f"r{recompute_cells}",
                            hpo={"every": 1})
        assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_doal", "--device", "cpu"]) == 0
        run_dir = tmp_path / "runs" / f"fake_ista_single_doal_r{recompute_cells}"
        records[recompute_cells] = ([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
                                    json.loads((run_dir / "hparams.json").read_text())["trace"])
    (plain, plain_trace), (recomputed, recomputed_trace) = records[0], records[-1]
    assert [r["stage"] for r in plain] == ["search", "continue"]
    for a, b in zip(plain + plain_trace, recomputed + recomputed_trace):
        for key, value in a.items():
            if isinstance(value, float) and "seconds" not in key and key != "time":
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
