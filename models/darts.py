"""The DARTS supernet: a softmax over all 8 ops (`none` included) on every edge."""
from __future__ import annotations

import torch
from torch import nn

from models.genotypes import PRIMITIVES_DARTS, Genotype, parse_weights
from models.supernet import Supernet


class DartsSupernet(Supernet):
    """Continuous relaxation of DARTS; alphas [n_edges, 8] per cell type, initialised 1e-3 N(0, 1)."""

    def __init__(self, *, init_channels: int, num_classes: int, layers: int, steps: int = 4,
                 stem: str = "cifar", in_channels: int = 3, mean=(0.5,) * 3, std=(0.25,) * 3,
                 auxiliary: bool = False):
        super().__init__(init_channels=init_channels, num_classes=num_classes, layers=layers, steps=steps,
                         primitives=PRIMITIVES_DARTS, affine=False, pool_bn=True, auxiliary=auxiliary,
                         stem=stem, in_channels=in_channels, mean=mean, std=std)
        k = len(PRIMITIVES_DARTS)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(self.num_edges, k))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(self.num_edges, k))
        self._all_ops = [list(range(k)) for _ in range(self.num_edges)]

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha_normal, alpha_reduce."""
        return [self.alpha_normal, self.alpha_reduce]

    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax over ops, per edge."""
        return self.alpha_normal.softmax(dim=-1), self.alpha_reduce.softmax(dim=-1)

    def active_ops(self) -> tuple[list[list[int]], list[list[int]]]:
        """Every op of every edge carries weight."""
        return self._all_ops, self._all_ops

    def genotype(self) -> Genotype:
        """Two strongest edges per node, strongest non-`none` op on each (DARTS parsing)."""
        w_normal, w_reduce = self.mixing_weights()
        concat = list(range(2, 2 + self.steps))
        return Genotype(parse_weights(w_normal, self.primitives, self.steps), concat,
                        parse_weights(w_reduce, self.primitives, self.steps), concat)

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """Softmax weights per edge."""
        w_normal, w_reduce = self.mixing_weights()
        return {"normal": w_normal.detach(), "reduce": w_reduce.detach()}
