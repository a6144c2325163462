"""A MobileNet-like search space (DHA's ImageNet space): MobileNetV2's stem, stage plan and head; per
searchable layer an inverted-residual block (MBConv) with kernel 3 / 5 / 7 and expansion 3 / 6, or a
skip where the shape allows (stride 1, same channels). The first bottleneck stays fixed at
expansion 1, kernel 3, as in MobileNetV2. The space is data: `STAGES`, `LAYER_OPS`, `layer_plan`.

With every searchable layer `mb3_e6` at width 1.0 the network is MobileNetV2 itself (the same
modules, parameter for parameter). `stem="cifar"` is the usual 32-px variant: the stem and the
second stage keep stride 1 (32 -> 4 px before the head).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from models.amp import autocast, widened
from models.batchnorm import BatchNorm2d
from models.cells import Normalize
from models.operations import Layers

# MobileNetV2's plan: (expansion t, channels c, repeats n, first stride s) per stage.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
LAYER_OPS: tuple[str, ...] = ("mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6", "skip")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of `divisor`, never below 90% of `value` (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class LayerSpec:
    """One bottleneck position: its shape, and whether the search chooses its block."""

    c_in: int
    c_out: int
    stride: int
    searchable: bool  # the first bottleneck is fixed at expansion 1

    @property
    def skip_allowed(self) -> bool:
        """A skip keeps the shape only at stride 1 between equal channel counts."""
        return self.stride == 1 and self.c_in == self.c_out


def layer_plan(width: float = 1.0, stem: str = "imagenet") -> list[LayerSpec]:
    """Every bottleneck of the network in order (the searchable ones are those with `searchable`)."""
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"unknown stem {stem!r}: use 'imagenet' or 'cifar'")
    plan, c_in = [], make_divisible(STEM_CHANNELS * width)
    for index, (t, c, n, s) in enumerate(STAGES):
        c_out = make_divisible(c * width)
        if stem == "cifar" and index == 1:
            s = 1
        for i in range(n):
            plan.append(LayerSpec(c_in, c_out, s if i == 0 else 1, searchable=index > 0))
            c_in = c_out
    return plan


def parse_op(name: str) -> tuple[int, int]:
    """'mb5_e6' -> (kernel 5, expansion 6)."""
    if name not in LAYER_OPS or name == "skip":
        raise ValueError(f"{name!r} is not an MBConv op of the space ({', '.join(LAYER_OPS)})")
    kernel, expansion = name[2:].split("_e")
    return int(kernel), int(expansion)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (unless t = 1), k x k depthwise, 1x1 projection; BN after
    each, ReLU6 after the first two; the input added back when the shape allows."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, bias=False), BatchNorm2d(c_out)]
        self.block = Layers(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        out = self.block(x, probe)
        return x + out if self.residual else out


def make_layer_op(name: str, spec: LayerSpec) -> nn.Module:
    """The module of op `name` at one searchable position."""
    if name == "skip":
        if not spec.skip_allowed:
            raise ValueError(f"skip cannot replace a layer {spec.c_in} -> {spec.c_out} at stride {spec.stride}")
        return nn.Identity()
    kernel, expansion = parse_op(name)
    return MBConv(spec.c_in, spec.c_out, kernel, spec.stride, expansion)


class MobileGenotype(NamedTuple):
    """The op of each searchable layer, in order."""

    layers: list[str]

    def to_dict(self) -> dict:
        """JSON-safe form, tagged with its space."""
        return {"space": "mobilenet", "layers": list(self.layers)}

    def to_json(self) -> str:
        """Compact one-object JSON string."""
        return json.dumps(self.to_dict())

    def count(self, op: str) -> int:
        """How many layers use `op`."""
        return self.layers.count(op)

    def skips(self) -> int:
        """Layers the search skipped."""
        return self.count("skip")


def mobile_genotype_from_dict(d: dict, plan: Sequence[LayerSpec] | None = None) -> MobileGenotype:
    """Check a genotype's ops (and, given a plan, its length and where skips stand)."""
    layers = d.get("layers") if isinstance(d, dict) else None
    if not isinstance(layers, list) or not all(isinstance(op, str) and op in LAYER_OPS for op in layers):
        raise ValueError(f"a mobilenet genotype needs 'layers': a list of ops from {', '.join(LAYER_OPS)}")
    if plan is not None:
        searchable = [spec for spec in plan if spec.searchable]
        if len(layers) != len(searchable):
            raise ValueError(f"the space has {len(searchable)} searchable layers, the genotype names {len(layers)}")
        for i, (op, spec) in enumerate(zip(layers, searchable)):
            if op == "skip" and not spec.skip_allowed:
                raise ValueError(f"layer {i} changes shape ({spec.c_in} -> {spec.c_out}, stride {spec.stride}): no skip")
    return MobileGenotype(list(layers))


MOBILENET_V2 = MobileGenotype(["mb3_e6"] * sum(n for t, c, n, s in STAGES[1:]))


class MobileNetwork(nn.Module):
    """The discrete network of a MobileGenotype; takes images in [0, 1]."""

    def __init__(self, genotype: MobileGenotype, num_classes: int, *, width: float = 1.0, stem: str = "imagenet",
                 in_channels: int = 3, dropout: float = 0.2, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225)):
        super().__init__()
        plan = layer_plan(width, stem)
        self.genotype = mobile_genotype_from_dict(genotype.to_dict(), plan)
        self.kwargs = dict(num_classes=num_classes, width=width, stem=stem, in_channels=in_channels,
                           dropout=dropout, mean=list(mean), std=list(std))
        self.drop_path_prob = 0.0  # set by the training loop; no drop path in this space
        self.memory_format = torch.contiguous_format
        self.amp = "off"  # models/amp.py
        self.normalize = Normalize(mean, std)
        c_stem = make_divisible(STEM_CHANNELS * width)
        self.stem = Layers(nn.Conv2d(in_channels, c_stem, 3, 1 if stem == "cifar" else 2, 1, bias=False),
                           BatchNorm2d(c_stem), nn.ReLU6(inplace=True))
        self.plan = plan
        ops = iter(self.genotype.layers)
        self.layers = nn.ModuleList(make_layer_op(next(ops), spec) if spec.searchable
                                    else MBConv(spec.c_in, spec.c_out, 3, spec.stride, 1) for spec in plan)
        # 1.0 for networks trained from scratch; a single-stage search's layer weights for derived models.
        self.register_buffer("layer_scale", torch.ones(len(plan)))
        c_head = make_divisible(HEAD_CHANNELS * max(1.0, width))
        self.head = Layers(nn.Conv2d(plan[-1].c_out, c_head, 1, bias=False), BatchNorm2d(c_head), nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_head, num_classes))

    def features(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """Pooled features [N, C_head] of images in [0, 1]."""
        x = self.stem(self.normalize(x).contiguous(memory_format=self.memory_format), probe)
        for layer, scale in zip(self.layers, self.layer_scale):
            x = (layer(x, probe) if isinstance(layer, MBConv) else layer(x)) * scale
        return self.head(x, probe).mean((2, 3))

    def forward_with_aux(self, x: torch.Tensor, with_aux: bool = True,
                         probe: bool = False) -> tuple[torch.Tensor, None]:
        """Logits and no auxiliary logits (the space has no auxiliary head)."""
        with autocast(x, self.amp):
            logits = self.classifier(self.features(x, probe))
        return widened(logits), None

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        """x: [N, C, H, W] float in [0, 1] -> logits."""
        return self.forward_with_aux(x, probe=probe)[0]

    def weight_parameters(self) -> list[nn.Parameter]:
        """All parameters (the architecture is fixed)."""
        return list(self.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        """None: the architecture is fixed."""
        return []


def load_mobile_genotype(name_or_json: str) -> MobileGenotype | None:
    """MOBILENET_V2, or a JSON object / file tagged `"space": "mobilenet"`; None for anything else
    (a DARTS genotype), so callers can fall back to the cell space."""
    from pathlib import Path
    if name_or_json == "MOBILENET_V2":
        return MOBILENET_V2
    text = name_or_json
    if not name_or_json.lstrip().startswith("{"):
        path = Path(name_or_json)
        if not path.is_file():
            return None
        text = path.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        return None
    return mobile_genotype_from_dict(d) if isinstance(d, dict) and d.get("space") == "mobilenet" else None
