"""`torchrun --nproc_per_node 2 search_darts.py ...` on CPU (gloo): one set of artifacts, written by
rank 0, and a run stopped by SIGTERM resumes, under torchrun again, to the uninterrupted run's result."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
VOLATILE = {"total_seconds", "search_seconds"}

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this python")


def _torchrun(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(ROOT / "search_darts.py"),
                             "--device", "cpu", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _metrics(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in VOLATILE}


def test_two_processes_write_one_run_and_resume_after_sigterm(write_config, tmp_path):
    train = {"epochs": 4, "retrain_epochs": 1, "max_steps_per_epoch": 2}
    extra = {"train_architecture": {"dist_limit": 0.0}}  # no freezing: every search epoch runs
    straight = write_config("straight.json", save_name="straight", train=train, **extra)
    broken = write_config("broken.json", save_name="broken", train=train, **extra)
    runs = tmp_path / "runs"

    code, out, err = _finish(_torchrun("--conf_path", str(straight), "--Running", "ista_single_doal"))
    assert code == 0, err
    assert sorted(p.name for p in runs.iterdir()) == ["fake_ista_single_doal_straight"]  # one folder, not one per rank
    straight_dir = runs / "fake_ista_single_doal_straight"
    assert out.count("done: test top-1") == 1  # rank 0 reports; rank 1 stays quiet
    for name in ("model.pt2", "genotype.json", "policy.json", "hparams.json", "metrics.json", "checkpoint.pt"):
        assert (straight_dir / name).is_file(), name
    assert len([line for line in (straight_dir / "metrics.jsonl").read_text().splitlines()]) == 5  # one writer

    process = _torchrun("--conf_path", str(broken), "--Running", "ista_single_doal")
    broken_dir = runs / "fake_ista_single_doal_broken"
    deadline = time.time() + 240
    while not (broken_dir / "checkpoint.pt").exists():  # the first epoch's checkpoint
        assert time.time() < deadline and process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)  # what a scheduler does to the job: every process gets it
    code, _, err = _finish(process)
    assert code != 0 and not (broken_dir / "metrics.json").exists(), err
    assert "the last checkpoint is kept: continue with  python search_darts.py --resume" in err  # rank 0's line
    from search.state import read_checkpoint
    _, _, state = read_checkpoint(broken_dir / "checkpoint.pt")
    assert not state.finished and (state.stage_index, state.epoch) < (1, 2)

    code, _, err = _finish(_torchrun("--resume", str(broken_dir)))
    assert code == 0, err
    assert _metrics(broken_dir) == _metrics(straight_dir)
    assert (broken_dir / "genotype.json").read_text() == (straight_dir / "genotype.json").read_text()
