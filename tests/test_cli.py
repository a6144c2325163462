"""The command line: bad input exits 2 with one line and writes nothing; --dry_run; --help."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import search_darts

REPO = Path(__file__).resolve().parents[1]


def _bad(capsys, argv, needle):
    code = search_darts.main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_typo_key(write_config, tmp_path, capsys):
    conf = write_config(dataset={"batchsize": 8})
    line = _bad(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "dataset.batchsize")
    assert "dataset.batch_size" in line  # the suggestion
    assert not (tmp_path / "runs").exists()


def test_wrong_type(write_config, tmp_path, capsys):
    conf = write_config(train={"w_lr": "fast"})
    _bad(capsys, ["--conf_path", str(conf), "--Running", "darts"], "train.w_lr")
    assert not (tmp_path / "runs").exists()


def test_wrong_type_through_set(write_config, tmp_path, capsys):
    conf = write_config()
    _bad(capsys, ["--conf_path", str(conf), "--Running", "darts", "--set", "dataset.batch_size=big"], "dataset.batch_size")
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_folder(write_config, tmp_path, capsys):
    conf = write_config(dataset={"name": "cifar10", "root": str(tmp_path / "nowhere"), "num_class": 10})
    line = _bad(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "nowhere")
    assert "download" in line
    assert not (tmp_path / "runs").exists()


def test_missing_imagefolder(write_config, tmp_path, capsys):
    conf = write_config(dataset={"name": "imagefolder", "root": str(tmp_path / "mine"), "num_class": None})
    _bad(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "mine")
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path, capsys):
    _bad(capsys, ["--conf_path", str(tmp_path / "absent.json"), "--Running", "darts"], "absent.json")


def test_invalid_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    _bad(capsys, ["--conf_path", str(bad), "--Running", "darts"], "bad.json")


def test_unknown_mode(write_config, tmp_path, capsys):
    conf = write_config()
    _bad(capsys, ["--conf_path", str(conf), "--Running", "ista_singel_nor"], "ista_singel_nor")
    assert not (tmp_path / "runs").exists()


def test_mode_not_available_yet_says_so(write_config, tmp_path, capsys, monkeypatch):
    from search import modes
    later = modes.Mode("later", modes.MODES["darts"].stages, available=False, missing="a part not built")
    monkeypatch.setitem(modes.MODES, "later", later)
    conf = write_config()
    line = _bad(capsys, ["--conf_path", str(conf), "--Running", "later"], "not available yet")
    assert "a part not built" in line and "ista_single_doal" in line  # lists what is available
    assert not (tmp_path / "runs").exists()


def test_unknown_flag_is_one_line(capsys):
    _bad(capsys, ["--conf", "x.json"], "--conf")


def test_corrupted_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    _bad(capsys, ["--resume", str(run)], "corrupted")


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "search_darts.py"), "--conf_path", str(tmp_path / "x.json"),
                           "--Running", "darts"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_help_lists_every_flag_and_mode(capsys):
    with pytest.raises(SystemExit) as exc:
        search_darts.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--conf_path", "--Running", "--set", "--resume", "--device", "--dry_run"):
        assert flag in out
    from search.modes import MODES
    for name in MODES:
        assert name in out


def test_dry_run_writes_nothing(write_config, tmp_path, capsys):
    conf = write_config()
    assert search_darts.main(["--conf_path", str(conf), "--Running", "darts", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "weights" in out and "stage 1" in out and "stage 2" in out
    assert not (tmp_path / "runs").exists()


SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.json"))


def _mode_for(conf: str) -> str:
    if "daas" in conf:
        return "daas"
    if "demo" in conf:
        return "ista_single_doal"
    if conf.endswith("_darts.json"):
        return "darts"
    return "ista_single_doal" if conf.endswith("_single.json") else "ista_doal"


@pytest.mark.parametrize("conf", SHIPPED)
def test_every_shipped_config_dry_runs_on_fake(conf, capsys):
    # `fake` has 256 pool images: the papers' batches (up to 256) would not fit its training split,
    # which the dry run checks as the run would.
    argv = ["--conf_path", str(REPO / conf), "--Running", _mode_for(conf), "--dry_run", "--device", "cpu",
            "--set", "dataset.name=fake", "--set", "tune_dataset.name=fake",
            "--set", "dataset.batch_size=16", "--set", "tune_dataset.batch_size=16"]
    assert search_darts.main(argv) == 0, capsys.readouterr().err
    assert "dry run ok" in capsys.readouterr().out


def test_shipped_configs_exist():
    names = {Path(p).name for p in SHIPPED}
    for ds in ("cifar10", "cifar100", "flowers102", "sport8", "mit67", "imagenet"):
        assert f"{ds}_ista.json" in names and f"{ds}_ista_single.json" in names
    assert "cifar10_darts.json" in names and "digits.json" in names
    assert {"cifar10_daas.json", "digits_daas.json", "imagenet_mobilenet_ista_single.json"} <= names
    assert json.loads((REPO / "conf/demo/digits.json").read_text())["dataset"]["name"] == "digits"


def test_dry_run_refuses_a_batch_larger_than_the_training_split(write_config, tmp_path, capsys):
    conf = write_config()
    _bad(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor", "--dry_run",
                  "--set", "dataset.batch_size=5000"], "fewer than one batch")
    assert not (tmp_path / "runs").exists()
