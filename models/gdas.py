"""The single-path supernet (GDAS, as DAAS uses it): per edge one op, drawn by a hard Gumbel-softmax.

Training forward: for each edge a sample k = argmax((log softmax(alpha) + G) / tau) picks one op;
only that op runs forward and backward. Its weight is the straight-through one-hot
h = onehot(k) - soft.detach() + soft with soft = softmax((log softmax(alpha) + G) / tau): the value
1, the gradient of the relaxed sample, so alpha learns from the chosen op's output alone. tau
anneals linearly from `tau_max` to `tau_min` over the search epochs. Evaluation runs the arg-max op
of every edge (no noise). The genotype is DARTS' parsing of softmax(alpha).
"""
from __future__ import annotations

import torch
from torch import nn

from models.genotypes import PRIMITIVES_DARTS, Genotype, parse_weights
from models.supernet import Supernet


def hard_gumbel(alpha: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(straight-through one-hot weights [E, K], chosen op per row [E]) of one hard Gumbel-softmax draw."""
    logits = alpha.log_softmax(dim=-1)
    u = torch.rand_like(logits).clamp(torch.finfo(logits.dtype).tiny, 1.0 - 1e-7)
    soft = ((logits - torch.log(-torch.log(u))) / tau).softmax(dim=-1)
    index = soft.argmax(dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, index.unsqueeze(-1), 1.0)
    return hard - soft.detach() + soft, index


class GdasSupernet(Supernet):
    """DARTS' cell space with one sampled op per edge; alphas [n_edges, 8] per cell type (1e-3 N(0, 1))."""

    def __init__(self, *, init_channels: int, num_classes: int, layers: int, steps: int = 4,
                 epochs: int = 1, tau_max: float = 10.0, tau_min: float = 0.1,
                 stem: str = "cifar", in_channels: int = 3, mean=(0.5,) * 3, std=(0.25,) * 3,
                 auxiliary: bool = False):
        super().__init__(init_channels=init_channels, num_classes=num_classes, layers=layers, steps=steps,
                         primitives=PRIMITIVES_DARTS, affine=False, pool_bn=True, auxiliary=auxiliary,
                         stem=stem, in_channels=in_channels, mean=mean, std=std)
        if not 0 < tau_min <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        k = len(PRIMITIVES_DARTS)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(self.num_edges, k))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(self.num_edges, k))
        self.epochs, self.tau_max, self.tau_min = epochs, tau_max, tau_min
        self.tau = tau_max
        self._active: tuple[list[list[int]], list[list[int]]] | None = None

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha_normal, alpha_reduce."""
        return [self.alpha_normal, self.alpha_reduce]

    def on_epoch_start(self, epoch: int) -> None:
        """tau for this epoch: linear from tau_max (first epoch) to tau_min (last)."""
        self.tau = self.tau_max - (self.tau_max - self.tau_min) * epoch / max(1, self.epochs - 1)

    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: a fresh hard Gumbel draw per cell type (its ops become `active_ops()` for this
        forward; one host sync for both); evaluation: the arg-max op of each edge, weight 1."""
        alphas = torch.stack([self.alpha_normal, self.alpha_reduce])
        if self.training:
            weights, index = hard_gumbel(alphas, self.tau)
        else:
            index = alphas.argmax(dim=-1)
            weights = torch.zeros_like(alphas).scatter_(-1, index.unsqueeze(-1), 1.0).detach()
        chosen = index.tolist()
        self._active = ([[k] for k in chosen[0]], [[k] for k in chosen[1]])
        return weights[0], weights[1]

    def active_ops(self) -> tuple[list[list[int]], list[list[int]]]:
        """The ops the last `mixing_weights()` drew: one per edge (the forward calls that first)."""
        if self._active is None:
            raise RuntimeError("active_ops() before mixing_weights(): the single-path draw happens there")
        return self._active

    def genotype(self) -> Genotype:
        """Two strongest edges per node, strongest non-`none` op on each, from softmax(alpha)."""
        concat = list(range(2, 2 + self.steps))
        return Genotype(parse_weights(self.alpha_normal.detach().softmax(-1), self.primitives, self.steps), concat,
                        parse_weights(self.alpha_reduce.detach().softmax(-1), self.primitives, self.steps), concat)

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """Softmax of the alphas per edge (what the draws follow at tau = 1)."""
        return {"normal": self.alpha_normal.detach().softmax(-1), "reduce": self.alpha_reduce.detach().softmax(-1)}

    def on_epoch_end(self, epoch: int) -> dict:
        """The epoch's temperature, for the log."""
        return {"tau": self.tau}
