"""Exact resume: interrupted and resumed runs end with the same genotype and bitwise-equal weights."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import search.state
import search_darts


def _run(conf, mode, interrupt_after=None, monkeypatch=None):
    if interrupt_after is not None:
        real_save, calls = search.state.atomic_save_checked, []

        def save_then_crash(obj, path):
            real_save(obj, path)
            calls.append(path)
            if len(calls) == interrupt_after:
                raise KeyboardInterrupt
        monkeypatch.setattr(search.state, "atomic_save_checked", save_then_crash)
    return search_darts.main(["--conf_path", str(conf), "--Running", mode, "--device", "cpu"])


# interrupt after search epoch 1 / inside the continued training (doal: with and without the policy there)
@pytest.mark.parametrize("mode,interrupt_after,keep_policy", [("ista_single_nor", 1, False), ("ista_single_nor", 4, False),
                                                              ("ista_single_doal", 4, False), ("ista_single_doal", 4, True)])
def test_resume_is_exact_for_single_stage_modes(write_config, tmp_path, monkeypatch, interrupt_after, mode, keep_policy):
    # doal: policy, learned lr / wd, and (log_every > 1) validation passes overlapping the next step
    arch = {"dist_limit": 0.0}  # never freeze: the search runs all its epochs
    train = {"epochs": 3, "retrain_epochs": 2, "max_steps_per_epoch": 3}
    extra = {"log_every": 10, "hpo": {"h_lr": 1e-3, "h_lr_tune": 1e-3}, "da": {"continue_with_policy": keep_policy}}
    straight = write_config("straight.json", save_name="straight", train=train, train_architecture=arch, **extra)
    broken = write_config("broken.json", save_name="broken", train=train, train_architecture=arch, **extra)
    assert _run(straight, mode) == 0

    assert _run(broken, mode, interrupt_after, monkeypatch) == 130
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / f"fake_{mode}_broken"
    assert not (run_dir / "model.pt2").exists()
    assert search_darts.main(["--resume", str(run_dir), "--device", "cpu"]) == 0

    ref_dir = tmp_path / "runs" / f"fake_{mode}_straight"
    assert json.loads((run_dir / "genotype.json").read_text()) == json.loads((ref_dir / "genotype.json").read_text())
    a = torch.load(ref_dir / "model_state.pt", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "model_state.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = json.loads((ref_dir / "metrics.json").read_text())
    mb = json.loads((run_dir / "metrics.json").read_text())
    assert ma["test_top1"] == mb["test_top1"] and ma["search_epochs"] == mb["search_epochs"] == 3
    if mode.endswith("doal"):
        ha = json.loads((ref_dir / "hparams.json").read_text())
        hb = json.loads((run_dir / "hparams.json").read_text())
        assert ha == hb and ha["learned"]
        pa = json.loads((ref_dir / "policy.json").read_text())
        assert pa == json.loads((run_dir / "policy.json").read_text()) and pa["type"] == "pair"


def _arch(mode: str, **keys) -> dict:
    """train_architecture for `mode`'s resume tests: DARTS at first order. Its unrolled second order holds
    no state beyond the first order's optimizer (its numbers are tested in test_search_arch_step and, over
    several processes, test_search_distributed) and costs these tests most of their time."""
    return {**keys, **({"order": 1} if mode.startswith("darts") else {})}


def test_resume_of_a_finished_stage_boundary_in_darts(write_config, tmp_path, monkeypatch):
    train = {"epochs": 2, "max_steps_per_epoch": 2}
    arch = _arch("darts")
    straight = write_config("straight.json", save_name="straight", train=train, tune={"epochs": 2},
                            train_architecture=arch)
    broken = write_config("broken.json", save_name="broken", train=train, tune={"epochs": 2}, train_architecture=arch)
    assert _run(straight, "darts") == 0
    assert _run(broken, "darts", 2, monkeypatch) == 130  # crash right after the search finished
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "fake_darts_broken"
    assert search_darts.main(["--resume", str(run_dir)]) == 0
    a = torch.load(tmp_path / "runs" / "fake_darts_straight" / "model_state.pt", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "model_state.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_mode_is_refused(write_config, tmp_path, monkeypatch, capsys):
    conf = write_config(train={"epochs": 2})
    assert _run(conf, "ista_single_nor", 1, monkeypatch) == 130
    monkeypatch.undo()
    code = search_darts.main(["--resume", str(tmp_path / "runs" / "fake_ista_single_nor"), "--Running", "darts"])
    assert code == 2 and "ista_single_nor" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["ista_single_doal", "darts_da"])
def test_a_run_interrupted_after_its_last_stage_finishes_on_resume(write_config, tmp_path, monkeypatch, mode):
    # The last checkpoint is written after the last epoch; a crash then (evaluation, export) loses nothing.
    train = {"epochs": 1, "retrain_epochs": 1, "max_steps_per_epoch": 2}
    straight = write_config("straight.json", save_name="straight", train=train, train_architecture=_arch(mode))
    broken = write_config("broken.json", save_name="broken", train=train, train_architecture=_arch(mode))
    assert _run(straight, mode) == 0
    assert _run(broken, mode, 2, monkeypatch) == 130
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / f"fake_{mode}_broken"
    assert not (run_dir / "model.pt2").exists()
    assert search_darts.main(["--resume", str(run_dir), "--device", "cpu"]) == 0
    ref_dir = tmp_path / "runs" / f"fake_{mode}_straight"
    for name in ("genotype.json", "policy.json", "hparams.json"):
        assert json.loads((run_dir / name).read_text()) == json.loads((ref_dir / name).read_text()), name
    a = torch.load(ref_dir / "model_state.pt", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "model_state.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref_dir, run_dir))
    assert ma["test_top1"] == mb["test_top1"] and ma["search_epochs"] == mb["search_epochs"]


def _tree(run_dir):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()}


def test_resume_of_a_finished_run_says_so_and_writes_nothing(write_config, tmp_path, capsys):
    conf = write_config()
    assert _run(conf, "ista_single_nor") == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_nor"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"
    before = _tree(run_dir)
    capsys.readouterr()
    assert search_darts.main(["--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "finished" in out and str(run_dir / "model.pt2") in out
    assert _tree(run_dir) == before


def test_resume_refuses_overrides_that_change_results_and_conf_path(write_config, tmp_path, monkeypatch, capsys):
    conf = write_config(train={"epochs": 2})
    assert _run(conf, "ista_single_nor", 1, monkeypatch) == 130
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "fake_ista_single_nor"
    before = _tree(run_dir)
    for extra, words in ((["--set", "train_architecture.init_channels=16", "--set", "seed=3"],
                          ["seed", "train_architecture.init_channels"]),
                         (["--conf_path", str(conf)], ["--conf_path"])):
        capsys.readouterr()
        assert search_darts.main(["--resume", str(run_dir), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
    assert _tree(run_dir) == before
    # how a run reports may change
    assert search_darts.main(["--resume", str(run_dir), "--set", "log_every=5", "--set", "report=false"]) == 0


def test_resume_after_a_kill_between_log_and_checkpoint_leaves_one_line_per_epoch(write_config, tmp_path,
                                                                                   monkeypatch):
    train = {"epochs": 2, "retrain_epochs": 1, "max_steps_per_epoch": 2}
    conf = write_config(train=train)
    real_save, calls = search.state.atomic_save_checked, []

    def crash_before_the_second_save(obj, path):
        calls.append(path)
        if len(calls) == 2:
            Path(path).with_name(f".{Path(path).name}.x1.tmp.pt").write_bytes(b"")  # a write cut short
            raise KeyboardInterrupt
        real_save(obj, path)
    monkeypatch.setattr(search.state, "atomic_save_checked", crash_before_the_second_save)
    assert _run(conf, "ista_single_nor") == 130
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "fake_ista_single_nor"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # epoch 2 logged, not checkpointed
    assert search_darts.main(["--resume", str(run_dir)]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [("search", 0), ("search", 1), ("continue", 0)]
    assert not list(run_dir.glob(".*.tmp*"))
    # TensorBoard too: epoch 2's scalars were written before the kill and again after the resume
    scalars = _scalar_steps(run_dir)
    assert scalars["search/train_loss"] == [0, 1] and scalars["continue/train_loss"] == [0]
    assert all(len(steps) == len(set(steps)) for steps in scalars.values()), scalars


def _scalar_steps(run_dir):
    """{tag: [step, ...]} over every TensorBoard events file of the run."""
    from utils.logging import read_events
    steps = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in read_events(path):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return {tag: sorted(s) for tag, s in steps.items()}


def _same_results(ref_dir: Path, run_dir: Path) -> None:
    """Bitwise-equal weights; equal genotype, policy, lr / wd, metrics and epoch records."""
    for name in ("genotype.json", "policy.json", "hparams.json"):
        assert json.loads((run_dir / name).read_text()) == json.loads((ref_dir / name).read_text()), name
    a = torch.load(ref_dir / "model_state.pt", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "model_state.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref_dir, run_dir))
    assert {k: v for k, v in ma.items() if "seconds" not in k} == {k: v for k, v in mb.items() if "seconds" not in k}
    ra, rb = ([{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (ref_dir, run_dir))
    assert ra == rb


def _sigterm_at_step(monkeypatch, step: int) -> None:
    """Send this process a real SIGTERM while training step `step` (1-based, over the run) runs."""
    from search.searcher import Searcher
    real_step, calls = Searcher.train_step, []

    def step_and_signal(self, x, y):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, x, y)
    monkeypatch.setattr(Searcher, "train_step", step_and_signal)


@pytest.mark.parametrize("mode", ["ista_single_doal", "darts_da"])
def test_sigterm_mid_epoch_checkpoints_the_step_and_resumes_bit_for_bit(write_config, tmp_path, monkeypatch,
                                                                         capsys, mode):
    # doal: policy, learned lr / wd, and (log_every > steps, a pass every step) a background validation
    # pass pending at the stop
    train = {"epochs": 2, "retrain_epochs": 1, "max_steps_per_epoch": 4}
    extra = {"log_every": 10, "train_architecture": _arch(mode, dist_limit=0.0), "tune": {"epochs": 1},
             "hpo": {"every": 1}}
    straight = write_config("straight.json", save_name="straight", train=train, **extra)
    broken = write_config("broken.json", save_name="broken", train=train, **extra)
    assert _run(straight, mode) == 0

    _sigterm_at_step(monkeypatch, 6)  # the second step of the second search epoch
    capsys.readouterr()
    assert _run(broken, mode) == 143
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / f"fake_{mode}_broken"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"python search_darts.py --resume {run_dir}" in err
    _, _, state = search.state.read_checkpoint(run_dir / "checkpoint.pt")
    assert (state.stage_index, state.epoch, state.searcher["position"]["batch"]) == (0, 1, 2)
    assert not (run_dir / "model.pt2").exists()
    assert search_darts.main(["--resume", str(run_dir), "--device", "cpu"]) == 0
    _same_results(tmp_path / "runs" / f"fake_{mode}_straight", run_dir)
    assert _scalar_steps(run_dir) == _scalar_steps(tmp_path / "runs" / f"fake_{mode}_straight")


@pytest.mark.parametrize("mode", ["ista_single_doal", "darts_da"])
def test_sigterm_during_the_final_export_is_finished_by_resume(write_config, tmp_path, monkeypatch, mode):
    import search.pipeline
    train = {"epochs": 1, "retrain_epochs": 1, "max_steps_per_epoch": 2}
    straight = write_config("straight.json", save_name="straight", train=train, train_architecture=_arch(mode))
    broken = write_config("broken.json", save_name="broken", train=train, train_architecture=_arch(mode))
    assert _run(straight, mode) == 0
    real_export = search.pipeline.export_model

    def signal_then_export(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_export(*args, **kwargs)
    monkeypatch.setattr(search.pipeline, "export_model", signal_then_export)
    assert _run(broken, mode) == 143
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / f"fake_{mode}_broken"
    assert not (run_dir / "model.pt2").exists() and not (run_dir / "metrics.json").exists()
    assert search_darts.main(["--resume", str(run_dir), "--device", "cpu"]) == 0
    _same_results(tmp_path / "runs" / f"fake_{mode}_straight", run_dir)
