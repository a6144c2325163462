"""The device benches refuse a device they cannot use with one line and exit code 2, before building anything."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", ["memory.py", "step_time.py"])
@pytest.mark.parametrize("device", ["tpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is present here"))])
def test_an_unusable_device_is_one_line_and_exit_2(tmp_path, script, device):
    (tmp_path / "train").mkdir()
    done = subprocess.run([sys.executable, str(BENCH / script), str(tmp_path), "--device", device],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and device in done.stderr
    assert done.stdout == ""
