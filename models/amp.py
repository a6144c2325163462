"""Mixed precision of a network's forward: `net.amp` is "off" or "bf16" (set by the builder).

The forward of the cells / layers runs under autocast; the architecture's mixing weights are
computed before it (float32, as the codes and alphas), and the logits leave as float32 (or wider:
a network built in float64 stays float64), so losses, hypergradients (float64) and the LASSO never
see bfloat16.
"""
from __future__ import annotations

import torch

AMP_MODES = ("off", "bf16")


def widened(t: torch.Tensor) -> torch.Tensor:
    """t in float32 at least: a bfloat16 forward's output widened, float32 / float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def autocast(x: torch.Tensor, amp: str):
    """bfloat16 autocast on x's device for amp == "bf16"; a no-op context for "off"."""
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def set_amp(model: torch.nn.Module, amp: str) -> torch.nn.Module:
    """Select the forward's precision (every network class here reads `amp`)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    model.amp = amp
    return model
