"""Test setup: import from the repo root and keep torch to the machine's two cores."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)

import json  # noqa: E402

import pytest  # noqa: E402

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"


def tiny_config(save_root: Path, **sections) -> dict:
    """A CPU-sized config on `fake` data: 2 steps per epoch, 8-px images, a 3-cell supernet."""
    cfg = {
        "seed": 0, "save_root": str(save_root), "progress": False, "log_every": 1, "report": False,
        "dataset": {"name": "fake", "num_class": 4, "val_ratio": 0.25, "batch_size": 8, "max_test": 16},
        "train": {"epochs": 1, "retrain_epochs": 1, "max_steps_per_epoch": 2, "w_lr": 0.05},
        "train_architecture": {"input_size": 8, "init_channels": 4, "layers": 3, "alpha_lr": 3e-3},
        "tune": {"epochs": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(name, {}).update(values)
        else:
            cfg[name] = values
    return cfg


@pytest.fixture
def write_config(tmp_path):
    """Write a tiny config (with section updates) to tmp_path and return its path."""
    def _write(name: str = "tiny.json", **sections) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(tiny_config(tmp_path / "runs", **sections)))
        return path
    return _write


@pytest.fixture
def torch_threads():
    """Set torch's intra-op thread count for one test: `torch_threads(n)`; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
