"""What one network forward shares between its cells, and the cells that rerun their forward in
backward instead of storing activations (`recompute_cells`)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.amp import autocast, widened
from models.fast_ops import global_avg_pool
from models.operations import Layers


class Activations:
    """What one network forward shares between its ops: relu(x) computed once per tensor, and
    whether the forward is a probe (training-mode batch statistics, running statistics untouched).

    Several ops start with a ReLU of the same state (both preprocessors of a cell read the stem or
    a cell output that the next cell reads again; nodes share inputs); each would otherwise store
    its own copy for backward and run its own ReLU backward. The probe flag travels with the forward
    instead of living on the modules, so a probe pass can run on one thread while another thread
    trains the same modules (the hypergradient's overlapped validation pass).
    """

    def __init__(self, probe: bool = False):
        self.probe = probe
        self._seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        """The cached relu(x) (keyed by identity; x is held so its id cannot be reused)."""
        hit = self._seen.get(id(x))
        if hit is None or hit[0] is not x:
            hit = (x, torch.relu(x))
            self._seen[id(x)] = hit
        return hit[1]

    def keep(self, *tensors: torch.Tensor) -> None:
        """Forget every cached ReLU but those of `tensors`: a forward without autograd would
        otherwise hold every cell's states to its end (the next cell reads only its two inputs)."""
        ids = {id(t) for t in tensors}
        self._seen = {k: v for k, v in self._seen.items() if k in ids}

    def run(self, op: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """op(x), reusing relu(x) when the op starts with a ReLU."""
        if getattr(op, "relu_first", False):
            return op(self.relu(x), activated=True, probe=self.probe)
        return op(x, self.probe) if isinstance(op, Layers) else op(x)


def recomputes(index: int, recompute_cells: int) -> bool:
    """Whether cell `index` recomputes its forward in backward: the first `recompute_cells` cells
    (-1: all). The first cells run at full resolution: they hold the most activations per FLOP."""
    return recompute_cells < 0 or index < recompute_cells


def call_cell(cell: Callable[..., torch.Tensor], s0: torch.Tensor, s1: torch.Tensor, acts: Activations,
              recompute: bool, *args, **kwargs) -> torch.Tensor:
    """cell(s0, s1, *args, acts=acts, **kwargs); with `recompute` (and autograd recording), backward
    keeps only s0, s1 and runs the cell's forward again instead of holding its activations (less
    memory, more compute)."""
    if not (recompute and torch.is_grad_enabled()):
        out = cell(s0, s1, *args, acts=acts, **kwargs)
        acts.keep(s1, out)
        return out
    runs: list[None] = []

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # The backward's second run is a probe: the same batch statistics, so the same outputs, but
        # BatchNorm running statistics move once per step.
        inner = Activations(acts.probe or bool(runs))
        runs.append(None)
        return cell(a, b, *args, acts=inner, **kwargs)

    # Drop path's masks are drawn again from the restored RNG state. A probe draws none, and must not
    # set the global RNG from its thread while another one trains (the overlapped validation pass).
    return checkpoint(run, s0, s1, use_reentrant=False, preserve_rng_state=not acts.probe)


def forward_cells(net: nn.Module, x: torch.Tensor, probe: bool, with_aux: bool,
                  cell_args: Callable[[nn.Module], tuple] = lambda cell: ()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The cell stack's forward shared by the discrete network and the supernets: stem, every cell
    (called with `cell_args(cell)`, e.g. a supernet's mixing weights), the auxiliary head's logits in
    training mode when asked, the classifier -> float32 (logits, aux logits or None)."""
    with autocast(x, net.amp):
        s0, s1 = net.stem(net.normalize(x).contiguous(memory_format=net.memory_format), probe)
        aux, acts = None, Activations(probe)
        drop = 0.0 if probe else net.drop_path_prob
        for i, cell in enumerate(net.cells):
            s0, s1 = s1, call_cell(cell, s0, s1, acts, recomputes(i, net.recompute_cells), *cell_args(cell), drop,
                                   drop_shard=net.drop_path_shard)
            if i == net.aux_index and net.aux_head is not None and net.training and with_aux:
                aux = net.aux_head(s1, probe)
        logits = net.classifier(global_avg_pool(s1))
    return widened(logits), None if aux is None else widened(aux)
