"""RunState and its checkpoint: round trip, format version checked on resume."""
import pytest
import torch

import search_darts
from search.state import CHECKPOINT_FORMAT, RunState, read_checkpoint, save_checkpoint
from utils.checkpoint import atomic_save_checked
from utils.errors import UserError


def test_round_trip_through_a_checkpoint_file(tmp_path):
    state = RunState(stage_index=1, epoch=2, results=[{"stage": "search", "epochs": 3, "history": [{"epoch": 0}],
                                                       "genotype": None}],
                     elapsed=12.5, search_seconds=10.0, carry={"net": {"w": torch.arange(3.0)}},
                     policy_export={"type": "none"})
    save_checkpoint(tmp_path / "checkpoint.pt", "ista_single_nor", {"seed": 1}, state)
    mode, config, back = read_checkpoint(tmp_path / "checkpoint.pt")
    assert (mode, config) == ("ista_single_nor", {"seed": 1})
    assert back.stage_index == 1 and back.epoch == 2 and back.elapsed == 12.5 and back.search_seconds == 10.0
    assert torch.equal(back.carry["net"]["w"], torch.arange(3.0)) and back.results == state.results
    assert back.history() == [{"epoch": 0}]


def _old_format_checkpoint(path):
    # The layout of format 1: the state's fields at the top level, no "state" key.
    torch.save({"format": 1, "mode": "ista_single_nor", "config": {}, "results": [], "elapsed": 0.0,
                "search_seconds": None, "stage_index": 0, "epoch": 1, "searcher": None, "carry": None}, path)


def test_a_checkpoint_of_another_format_is_refused_naming_both(tmp_path):
    _old_format_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match=f"format 1; this version reads format {CHECKPOINT_FORMAT}"):
        read_checkpoint(tmp_path / "checkpoint.pt")


def test_resume_of_an_old_checkpoint_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _old_format_checkpoint(run_dir / "checkpoint.pt")
    assert search_darts.main(["--resume", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "format 1" in err and f"format {CHECKPOINT_FORMAT}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("blob", [
    {"format": CHECKPOINT_FORMAT, "mode": "darts", "config": {}, "state": {"bogus": 1}},
    {"format": CHECKPOINT_FORMAT, "config": {}, "state": {}},
    {"format": CHECKPOINT_FORMAT, "mode": "darts", "state": {}},
    {"format": CHECKPOINT_FORMAT, "mode": "darts", "config": {}},
    {"format": CHECKPOINT_FORMAT, "mode": "darts", "config": {}, "state": []},
])
def test_an_incomplete_checkpoint_is_refused(tmp_path, blob):
    atomic_save_checked(blob, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="not a complete checkpoint"):
        read_checkpoint(tmp_path / "checkpoint.pt")


@pytest.mark.parametrize("version", [99, 2, "3", None])
def test_a_checkpoint_of_an_unknown_format_is_refused(tmp_path, version):
    atomic_save_checked({"format": version, "mode": "darts", "config": {}, "state": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match=f"this version reads format {CHECKPOINT_FORMAT}"):
        read_checkpoint(tmp_path / "checkpoint.pt")
