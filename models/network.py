"""The discrete network built from a genotype: the ready-to-use model every mode ends with."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from models.activations import forward_cells
from models.cells import AuxiliaryHead, Cell, Normalize, Stem, aux_channels, cell_plan
from models.genotypes import Genotype, genotype_from_dict


class Network(nn.Module):
    """DARTS-style network (CIFAR or 224-px stem) from a genotype; takes images in [0, 1]."""

    def __init__(self, genotype: Genotype, init_channels: int, num_classes: int, layers: int, *,
                 auxiliary: bool = False, stem: str = "cifar", in_channels: int = 3,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__()
        self.genotype = genotype
        self.kwargs = dict(init_channels=init_channels, num_classes=num_classes, layers=layers,
                           auxiliary=auxiliary, stem=stem, in_channels=in_channels,
                           mean=list(mean), std=list(std))
        self.drop_path_prob = 0.0
        self.drop_path_shard = (0, 1)  # (rank, world): this process's share of the global batch
        self.memory_format = torch.contiguous_format
        self.amp = "off"  # models/amp.py
        self.recompute_cells = 0  # models/activations.py, recomputes
        self.layers = layers
        self.normalize = Normalize(mean, std)
        self.stem = Stem(stem, in_channels, init_channels)
        plan = cell_plan(stem, init_channels, layers, self.stem.out_channels, len(genotype.normal_concat))
        self.cells = nn.ModuleList()
        for c_pp, c_p, c, reduction, reduction_prev in plan:
            gene, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            self.cells.append(Cell(gene, concat, c_pp, c_p, c, reduction, reduction_prev))
        self.aux_index = 2 * layers // 3
        self.aux_head = AuxiliaryHead(aux_channels(plan, layers, len(genotype.normal_concat)), num_classes) if auxiliary else None
        self.classifier = nn.Linear(len(genotype.normal_concat) * plan[-1][2], num_classes)

    def forward_with_aux(self, x: torch.Tensor, with_aux: bool = True,
                         probe: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, in training mode with an auxiliary head (and `with_aux`), the auxiliary logits.

        probe: a training-mode forward that leaves the network alone (batch statistics without
        running-statistic updates, no drop path), e.g. the hypergradient's validation pass.
        """
        return forward_cells(self, x, probe, with_aux)

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """x: [N, C, H, W] float in [0, 1] -> logits [N, num_classes]. (`probe`: see `forward_with_aux`)"""
        return self.forward_with_aux(x, with_aux=False, probe=probe)[0]  # validation passes in training mode skip the head

    def weight_parameters(self) -> list[nn.Parameter]:
        """All parameters (a discrete network has no architecture parameters)."""
        return list(self.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        """None: the architecture is fixed."""
        return []


def set_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Run a Network or supernet in channels_last (NHWC) layout: on CPU its depthwise and 1x1
    convolutions and max pooling are several times faster than in NCHW."""
    model.memory_format = torch.channels_last if enabled else torch.contiguous_format
    return model.to(memory_format=model.memory_format)


def count_params_m(model: nn.Module, exclude_aux: bool = True) -> float:
    """Parameters in millions, the auxiliary head excluded (the convention of the DARTS papers)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not (exclude_aux and name.startswith("aux_head"))) / 1e6


def network_params_m(genotype: Genotype, init_channels: int, num_classes: int, layers: int,
                     stem: str = "cifar", in_channels: int = 3) -> float:
    """Parameter count of the discrete network for a genotype, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = Network(genotype, init_channels, num_classes, layers, stem=stem, in_channels=in_channels)
    return count_params_m(net)


def save_model_state(model: Network, path: str | Path) -> None:
    """Weights + genotype + constructor arguments: enough for `load_model` to rebuild it."""
    from utils.checkpoint import atomic_save
    atomic_save({"genotype": model.genotype.to_dict(), "kwargs": model.kwargs,
                 "state_dict": model.state_dict()}, path)


def load_model(path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a saved Network (or MobileNetwork) in eval mode."""
    from models.mobilenet import MobileGenotype, MobileNetwork
    blob = torch.load(path, map_location=map_location, weights_only=False)
    genotype = genotype_from_dict(blob["genotype"])
    net = (MobileNetwork if isinstance(genotype, MobileGenotype) else Network)(genotype, **blob["kwargs"])
    net.load_state_dict(blob["state_dict"])
    return net.eval()
