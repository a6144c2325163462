"""Test setup: import from the repo root and keep torch to the machine's two cores."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)

import json  # noqa: E402

import pytest  # noqa: E402

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
# A test parametrized over DEVICES runs the same code on the CPU and, where one is present, on CUDA.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


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


def pytest_configure(config):
    config.addinivalue_line("markers", "real_export: the run writes a real torch.export model.pt2 (other tests "
                                       "get a stand-in file, see `_stand_in_export`)")


@pytest.fixture(autouse=True)
def _stand_in_export(request):
    """torch.export of even a tiny network takes seconds (about a third of a tiny run), so a test about
    something else gets a small stand-in model.pt2, written the same atomic way. The real export is
    tested where it is the subject (`@pytest.mark.real_export`: every mode end to end, the exported
    program's outputs, MobileNet, bf16) and in the subprocess runs, which this does not reach."""
    if request.node.get_closest_marker("real_export"):
        yield
        return
    import search.export
    from utils.checkpoint import replace_from_temp

    def stand_in(model, path, image_shape):
        replace_from_temp(path, lambda tmp: Path(tmp).write_bytes(b"test stand-in for a torch.export program"))
    with pytest.MonkeyPatch.context() as patch:  # its own: a test's monkeypatch.undo() leaves it in place
        patch.setattr(search.export, "export_program", stand_in)
        yield


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
