"""Config sections -> finished objects: the loaders the search loop reads, the overlap choice."""
import torch
from conftest import tiny_config

import search.build as build
from search.build import sections_for
from search.data import RunData, build_data, build_loaders
from search.modes import MODES
from search.stage import build_stage
from search.state import RunState
from utils.config import config_from_dict
from utils.logging import RunLogger


def _loaders(tmp_path, **dataset):
    cfg, _ = config_from_dict(tiny_config(tmp_path, dataset=dataset))
    sec = sections_for(cfg, MODES["ista_single_doal"].stages[0])
    data = build_data(sec.dataset, sec.arch, cfg.seed)
    return data, build_loaders(data, sec.dataset, cfg.seed)


def test_validation_stream_yields_only_full_batches(tmp_path):
    # 32 images, val_ratio 0.5 -> 16 val images in batches of 6: two full ones per pass, the 4 left
    # over are not a (noisy) batch of their own; each pass reshuffles, so all are used over time.
    data, loaders = _loaders(tmp_path, max_train=32, val_ratio=0.5, batch_size=6)
    assert len(data.val) % 6
    sizes = [next(loaders["val_stream"])[0].shape[0] for _ in range(7)]
    assert sizes == [6] * 7
    # evaluation still sees every validation image
    assert sum(x.shape[0] for x, _ in loaders["val"]) == len(data.val)


def test_a_validation_split_smaller_than_a_batch_still_streams(tmp_path):
    data, loaders = _loaders(tmp_path, max_train=12, val_ratio=0.25, batch_size=8)
    assert len(data.val) < 8
    assert next(loaders["val_stream"])[0].shape[0] == len(data.val)


def test_the_validation_pass_overlaps_only_small_steps_and_the_log_says_why(tmp_path, monkeypatch, capsys):
    cfg, _ = config_from_dict(tiny_config(tmp_path))
    mode = MODES["ista_single_doal"]

    def stage():
        return build_stage(cfg, mode, 0, RunState(), torch.device("cpu"), RunLogger(None), RunData(cfg.seed))
    assert stage().searcher.weight_update.background
    assert "overlapped with the next step" in capsys.readouterr().out
    monkeypatch.setattr(build, "OVERLAP_MAX_GMADDS", 1e-6)  # as if the network were large
    assert not stage().searcher.weight_update.background
    assert "not overlapped: a training forward is" in capsys.readouterr().out
    cfg.hpo.overlap = False
    assert not stage().searcher.weight_update.background
