"""The supernet skeleton shared by every search space; subclasses say how alphas become weights."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.activations import forward_cells
from models.cells import AuxiliaryHead, Normalize, SearchCell, Stem, aux_channels, cell_plan
from models.genotypes import Genotype


class Supernet(nn.Module):
    """Stem, search cells, optional auxiliary head, classifier; the architecture lives in subclasses.

    Subclasses implement `mixing_weights()`, `active_ops()`, `arch_parameters()` and `genotype()`,
    and may override the epoch hooks.
    """

    def __init__(self, *, init_channels: int, num_classes: int, layers: int, steps: int,
                 primitives: Sequence[str], affine: bool, pool_bn: bool, auxiliary: bool,
                 stem: str, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.primitives = tuple(primitives)
        self.steps = steps
        self.layers = layers
        self.num_edges = sum(n + 2 for n in range(steps))
        self.drop_path_prob = 0.0
        self.drop_path_shard = (0, 1)  # (rank, world): this process's share of the global batch
        self.memory_format = torch.contiguous_format
        self.amp = "off"  # models/amp.py
        self.recompute_cells = 0  # models/activations.py, recomputes
        self.net_kwargs = dict(init_channels=init_channels, num_classes=num_classes, layers=layers,
                               auxiliary=auxiliary, stem=stem, in_channels=in_channels,
                               mean=list(mean), std=list(std))
        self.normalize = Normalize(mean, std)
        self.stem = Stem(stem, in_channels, init_channels)
        plan = cell_plan(stem, init_channels, layers, self.stem.out_channels, steps)
        self.cells = nn.ModuleList(
            SearchCell(steps, steps, c_pp, c_p, c, red, red_prev, primitives, affine, pool_bn)
            for c_pp, c_p, c, red, red_prev in plan
        )
        self.aux_index = 2 * layers // 3
        self.aux_head = AuxiliaryHead(aux_channels(plan, layers, steps), num_classes) if auxiliary else None
        self.classifier = nn.Linear(steps * plan[-1][2], num_classes)

    # --- what subclasses provide -------------------------------------------------------------
    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[n_edges, n_ops] weights of the normal and the reduction cells."""
        raise NotImplementedError

    def active_ops(self) -> tuple[list[list[int]], list[list[int]]]:
        """Per edge, the op indices worth evaluating (host ints, so no device sync decides it)."""
        raise NotImplementedError

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (registered, so they follow `.to()` and `state_dict()`)."""
        raise NotImplementedError

    def genotype(self) -> Genotype:
        """The discrete architecture the supernet currently encodes."""
        raise NotImplementedError

    # --- lifecycle hooks (no-ops by default) ---------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called by the search loop before each search epoch."""

    def on_epoch_end(self, epoch: int) -> dict:
        """Called after each search epoch; returns loggable facts."""
        return {}

    def should_stop(self) -> bool:
        """True when the search has converged before its epoch budget."""
        return False

    def freeze_arch(self) -> None:
        """Stop updating the architecture (the arch parameters get no gradient)."""
        for p in self.arch_parameters():
            p.requires_grad_(False)

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """Named architecture tensors worth plotting (per node)."""
        return {}

    # --- shared -------------------------------------------------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward_with_aux(self, x: torch.Tensor, with_aux: bool = True,
                         probe: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, in training mode with an auxiliary head (and `with_aux`), the auxiliary logits.

        probe: a training-mode forward that leaves the network alone (batch statistics without
        running-statistic updates, no drop path), e.g. the hypergradient's validation pass.
        """
        w_normal, w_reduce = self.mixing_weights()
        a_normal, a_reduce = self.active_ops()
        return forward_cells(self, x, probe, with_aux,
                             lambda cell: (w_reduce, a_reduce) if cell.reduction else (w_normal, a_normal))

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """x: [N, C, H, W] float in [0, 1] -> logits. (`probe`: see `forward_with_aux`)"""
        return self.forward_with_aux(x, with_aux=False, probe=probe)[0]  # validation passes in training mode skip the head

