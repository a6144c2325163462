"""Bad values, paths and files: one line on stderr naming the problem, exit 2, nothing written."""
import json
import os

import pytest
import torch

import search_darts
from datasets.source import SourceRequest
from datasets.torchvision_sets import load_torchvision
from utils.errors import UserError

DIGITS = {"name": "digits", "num_class": 10, "val_ratio": 0.2, "batch_size": 16, "flip": False}


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _refused(capsys, argv, needle, root):
    before = _files(root)
    code = search_darts.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert _files(root) == before
    return err


@pytest.mark.parametrize("override, needle", [
    ("train_architecture.alpha_weight_decay=-1", "train_architecture.alpha_weight_decay"),
    ("hpo.h_momentum=-0.5", "hpo.h_momentum"),
    ("da.d_momentum=1.5", "da.d_momentum"),
    ("seed=18446744073709551616", "seed"),
    ("seed=-1", "seed"),
    ("dataset.crop_padding=100000000", "dataset.crop_padding"),
    ("dataset.mean=[NaN]", "dataset.mean[0]"),
    ("dataset.mean=[7]", "dataset.mean"),
    ("train_architecture.lasso_alpha=NaN", "train_architecture.lasso_alpha"),
    ("hpo.learning_up=Infinity", "hpo.learning_up"),
    ("train.w_lr=Infinity", "train.w_lr"),
    ("train.w_lr=1e999", "train.w_lr"),
    ("train.nan_patience=0", "train.nan_patience"),
    ("train_architecture.input_size=100000", "train_architecture.input_size"),
    ("train_architecture.init_channels=100000", "train_architecture.init_channels"),
    ("dataset.batch_size=5000", "dataset.batch_size"),
    ("dataset.num_class=1", "dataset.num_class"),
    ("save_name=x/../../other", "save_name"),
    ("save_name=..", "save_name"),
    ("save_name=a\x00b", "save_name"),
    ("save_name=a\udc80b", "save_name"),
    ("da.fixed_policy=autoaugment", "da.fixed_policy"),
    ("dataset.mean=[0.5, 0.5]", "mean"),
    ("train.epochs=" + "9" * 5000, "4300 digits"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_values_are_refused_before_anything_is_written(override, needle, dry_run, write_config, tmp_path, capsys):
    conf = write_config(dataset=DIGITS)
    argv = ["--conf_path", str(conf), "--Running", "ista_single_nor", "--device", "cpu", "--set", override]
    _refused(capsys, argv + (["--dry_run"] if dry_run else []), needle, tmp_path / "runs")


@pytest.mark.parametrize("content", ["[1, 2", "\x00\x01garbage", json.dumps({"type": "pair"}), "{" * 100000])
def test_a_fixed_policy_file_that_is_not_a_policy_is_refused(content, write_config, tmp_path, capsys):
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    for path in (policy, tmp_path / "absent.json", tmp_path):
        conf = write_config(da={"fixed_policy": str(path)})
        _refused(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "da.fixed_policy",
                 tmp_path / "runs")


def test_unreadable_config_files_are_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    huge = tmp_path / "huge.json"
    huge.write_text('{"seed": ' + "1" * 5000 + "}")
    for path, needle in ((deep, "nested too deeply"), (huge, "4300 digits"), (tmp_path, "is a folder")):
        _refused(capsys, ["--conf_path", str(path), "--Running", "darts"], needle, tmp_path / "runs")


def test_a_config_with_a_byte_order_mark_is_read(write_config, capsys):
    conf = write_config()
    conf.write_bytes(b"\xef\xbb\xbf" + conf.read_bytes())
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_nor", "--dry_run"]) == 0


def test_a_newline_in_an_argument_stays_on_one_line(write_config, tmp_path, capsys):
    conf = write_config()
    err = _refused(capsys, ["--conf_path", str(conf), "--Running", "dar\nts"], "dar\\nts", tmp_path / "runs")
    assert err.count("\n") == 1


@pytest.mark.parametrize("kind", ["file", "dangling_link"])
def test_an_unusable_save_root_is_one_line(kind, write_config, tmp_path, capsys):
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("not a folder")
    else:
        os.symlink(tmp_path / "gone", root)
    conf = write_config()
    argv = ["--conf_path", str(conf), "--Running", "ista_single_nor", "--set", f"save_root={root / 'runs'}"]
    _refused(capsys, argv, "save_root", tmp_path / "nothing")
    assert not (tmp_path / "gone").exists()


def test_a_legacy_key_note_comes_only_after_every_check(write_config, tmp_path, capsys):
    conf = write_config(gpu=0, train={"w_lr": -1})
    _refused(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "train.w_lr", tmp_path / "runs")


def test_a_one_class_image_folder_is_refused(write_config, tmp_path, capsys):
    from PIL import Image
    for split in ("train", "val"):
        (tmp_path / "one" / split / "cat").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "one" / split / "cat" / f"{i}.png")
    conf = write_config(dataset={"name": "imagefolder", "root": str(tmp_path / "one"), "num_class": None})
    _refused(capsys, ["--conf_path", str(conf), "--Running", "ista_single_nor"], "at least 2", tmp_path / "runs")


def test_a_failed_download_leaves_no_folder_behind(tmp_path):
    root = tmp_path / "a" / "b"

    def download():
        root.mkdir(parents=True)  # as torchvision does before fetching
        raise OSError("network unreachable")
    with pytest.raises(UserError, match="network unreachable"):
        load_torchvision(SourceRequest("cifar10", root, 32, True, None), "cifar-10-batches-py/", download)
    assert not (tmp_path / "a").exists()


@pytest.mark.real_export
def test_model_program_takes_any_batch_size(tmp_path):
    from models.genotypes import DARTS_V2
    from models.network import Network
    from search.export import export_program
    net = Network(DARTS_V2, 4, 3, 2)
    export_program(net, tmp_path / "model.pt2", (3, 8, 8))
    program = torch.export.load(tmp_path / "model.pt2")
    bounds = list(program.range_constraints.values())
    assert len(bounds) == 1 and bounds[0].upper > 2**40
    for n in (1, 5):  # neither of them the batch of 2 it was traced with
        assert program.module()(torch.rand(n, 3, 8, 8)).shape == (n, 3)  # 3 classes
