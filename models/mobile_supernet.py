"""The MobileNet-like space as a supernet: per searchable layer every candidate op of
models/mobilenet.py (skip only where the shape allows), mixed by the architecture logits alpha [L, 7].

`mixing="softmax"` (DARTS): every allowed op runs, weighted by softmax(alpha) of its layer.
`mixing="gumbel"` (GDAS / DAAS): one op per layer, drawn by a hard straight-through Gumbel-softmax
(models/gdas.py), only it runs; tau anneals over the search epochs. Evaluation runs the arg-max op.
The genotype is the arg-max allowed op of each layer.
"""
from __future__ import annotations

import torch
from torch import nn

from models.amp import autocast, widened
from models.batchnorm import BatchNorm2d
from models.cells import Normalize, weighted_sum
from models.gdas import hard_gumbel
from models.mobilenet import (HEAD_CHANNELS, LAYER_OPS, STEM_CHANNELS, MBConv, MobileGenotype, layer_plan,
                              make_divisible, make_layer_op)
from models.operations import Layers

MIXINGS = ("softmax", "gumbel")


class MobileChoices(nn.Module):
    """Stem, the fixed first bottleneck, every candidate op of every searchable layer, head and
    classifier; subclasses hold the architecture and say which ops a forward runs."""

    def __init__(self, num_classes: int, *, width: float = 1.0, stem: str = "imagenet", in_channels: int = 3,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.net_kwargs = dict(num_classes=num_classes, width=width, stem=stem, in_channels=in_channels,
                               mean=list(mean), std=list(std))
        self.drop_path_prob = 0.0
        self.memory_format = torch.contiguous_format
        self.amp = "off"  # models/amp.py
        self.normalize = Normalize(mean, std)
        plan = layer_plan(width, stem)
        c_stem = make_divisible(STEM_CHANNELS * width)
        self.stem = Layers(nn.Conv2d(in_channels, c_stem, 3, 1 if stem == "cifar" else 2, 1, bias=False),
                           BatchNorm2d(c_stem), nn.ReLU6(inplace=True))
        self.fixed = nn.ModuleList(MBConv(s.c_in, s.c_out, 3, s.stride, 1) for s in plan if not s.searchable)
        searchable = [s for s in plan if s.searchable]
        # Candidates a layer cannot take (skip across a shape change) are placeholders, never run.
        self.choices = nn.ModuleList(
            nn.ModuleList(make_layer_op(op, s) if op != "skip" or s.skip_allowed else nn.Identity() for op in LAYER_OPS)
            for s in searchable)
        allowed = torch.tensor([[op != "skip" or s.skip_allowed for op in LAYER_OPS] for s in searchable])
        self.register_buffer("allowed", allowed, persistent=False)
        # The same as host lists (LAYER_OPS indices), so a forward decides which ops run without a sync.
        self.ops_of = [[k for k, ok in enumerate(row) if ok] for row in allowed.tolist()]
        c_head = make_divisible(HEAD_CHANNELS * max(1.0, width))
        self.head = Layers(nn.Conv2d(plan[-1].c_out, c_head, 1, bias=False), BatchNorm2d(c_head), nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(c_head, num_classes))

    def trunk(self, x: torch.Tensor, probe: bool) -> torch.Tensor:
        """Normalised images through the stem and the fixed first bottleneck."""
        x = self.stem(self.normalize(x).contiguous(memory_format=self.memory_format), probe)
        for block in self.fixed:
            x = block(x, probe)
        return x

    def run_op(self, layer: int, k: int, x: torch.Tensor, probe: bool) -> torch.Tensor:
        """Candidate `k` (index into LAYER_OPS) of searchable layer `layer`."""
        op = self.choices[layer][k]
        return op(x, probe) if isinstance(op, MBConv) else op(x)

    def logits(self, x: torch.Tensor, probe: bool) -> torch.Tensor:
        """Head, global pooling and classifier."""
        return self.classifier(self.head(x, probe).mean((2, 3)))

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """x: [N, C, H, W] float in [0, 1] -> logits."""
        return self.forward_with_aux(x, probe=probe)[0]

    def should_stop(self) -> bool:
        """By default the search runs all its epochs."""
        return False


class MobileSupernet(MobileChoices):
    """The candidates mixed by alpha [layers, ops]: softmax (all allowed run) or Gumbel (one runs)."""

    def __init__(self, num_classes: int, *, mixing: str = "softmax", width: float = 1.0, stem: str = "imagenet",
                 in_channels: int = 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 epochs: int = 1, tau_max: float = 10.0, tau_min: float = 0.1):
        super().__init__(num_classes, width=width, stem=stem, in_channels=in_channels, mean=mean, std=std)
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        self.mixing, self.epochs, self.tau_max, self.tau_min, self.tau = mixing, epochs, tau_max, tau_min, tau_max
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.choices), len(LAYER_OPS)))

    def _logits(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.allowed, float("-inf"))

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha [searchable layers, ops]."""
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but alpha."""
        return [p for p in self.parameters() if p is not self.alpha]

    def mixing_weights(self) -> tuple[torch.Tensor, list[list[int]]]:
        """(weights [L, ops], the op indices each layer runs): softmax over the allowed ops, or one
        hard Gumbel draw per layer (one host sync); in evaluation the arg-max op, weight 1."""
        logits = self._logits()
        if self.training and self.mixing == "gumbel":
            weights, index = hard_gumbel(logits, self.tau)
            return weights, [[k] for k in index.tolist()]
        if self.training:
            weights = logits.softmax(dim=-1)
            return weights, self.ops_of
        index = logits.argmax(dim=-1)
        return torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1.0).detach(), [[k] for k in index.tolist()]

    def forward_with_aux(self, x: torch.Tensor, with_aux: bool = True, probe: bool = False) -> tuple[torch.Tensor, None]:
        """Logits and no auxiliary logits."""
        weights, active = self.mixing_weights()
        with autocast(x, self.amp):
            x = self.trunk(x, probe)
            for layer, ops in enumerate(active):
                x = weighted_sum([weights[layer, k] for k in ops], [self.run_op(layer, k, x, probe) for k in ops])
            logits = self.logits(x, probe)
        return widened(logits), None

    def genotype(self) -> MobileGenotype:
        """The arg-max allowed op of every searchable layer."""
        return MobileGenotype([LAYER_OPS[k] for k in self._logits().argmax(dim=-1).tolist()])

    def on_epoch_start(self, epoch: int) -> None:
        """Gumbel mixing: tau for this epoch, linear from tau_max to tau_min."""
        self.tau = self.tau_max - (self.tau_max - self.tau_min) * epoch / max(1, self.epochs - 1)

    def on_epoch_end(self, epoch: int) -> dict:
        """Nothing to log beyond tau under Gumbel mixing."""
        return {"tau": self.tau} if self.mixing == "gumbel" else {}

    def freeze_arch(self) -> None:
        """alpha stops learning."""
        self.alpha.requires_grad_(False)

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) over the allowed ops, per layer."""
        return {"layers": self._logits().detach().softmax(dim=-1)}
