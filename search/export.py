"""Artifacts of a finished run: the ready model (torch.export + state), genotype, policy, metrics."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from models.network import Network, save_model_state, set_channels_last
from utils.checkpoint import atomic_write_text, replace_from_temp


def write_json(obj: dict, path: Path) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_text(json.dumps(obj, indent=2, default=float) + "\n", path)


def export_program(model: Network, path: Path, image_shape: tuple[int, int, int]) -> None:
    """`torch.export` the eval-mode model with a dynamic batch size; loads with plain PyTorch.

    Input: float32 [N, C, H, W] in [0, 1]; output: logits [N, classes]. The model normalises itself.
    """
    model = model.eval()
    example = torch.rand(2, *image_shape, device=next(model.parameters()).device)
    batch = torch.export.Dim("batch", min=1)  # no upper bound: any batch size
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    replace_from_temp(path, lambda tmp: torch.export.save(program, tmp))


def export_model(model: Network, run_dir: Path, image_shape: tuple[int, int, int]) -> None:
    """model.pt2 (torch.export, CPU) and model_state.pt (weights + genotype for `load_model`)."""
    # The exported program and the saved weights use the default NCHW layout (plain PyTorch users).
    cpu_model = set_channels_last(model.to("cpu"), False).eval()
    export_program(cpu_model, run_dir / "model.pt2", image_shape)
    save_model_state(cpu_model, run_dir / "model_state.pt")
