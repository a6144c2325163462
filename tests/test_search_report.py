"""Figures of a finished run: every PNG the mode has data for exists and decodes; the rest is skipped with a note."""
import matplotlib.image
import pytest

import search_darts
from search.report import main

ALWAYS = {"curves.png", "hparams.png", "cells.png", "code_distances.png"}
POLICY = {"policy_ops.png", "policy_matrix.png"}


@pytest.mark.parametrize("mode", ["ista_single_doal", "ista_single_nor"])
def test_report_of_a_finished_run(mode, write_config, tmp_path, capsys):
    conf = write_config(train={"epochs": 2, "retrain_epochs": 1}, report=True)
    assert search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"]) == 0
    run_dir = tmp_path / "runs" / f"fake_{mode}"
    expected = ALWAYS | (POLICY if mode.endswith("doal") else set())
    assert {p.name for p in (run_dir / "figures").glob("*.png")} == expected  # written by the run itself
    for path in (run_dir / "figures").iterdir():
        path.unlink()
    capsys.readouterr()
    assert main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    for name in expected:
        image = matplotlib.image.imread(run_dir / "figures" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name
    if not mode.endswith("doal"):
        assert "policy_ops.png: skipped" in out and "policy_matrix.png: skipped" in out


def test_report_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
