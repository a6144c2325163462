"""Cells shared by the supernets and the discrete networks, and the network skeleton parts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.activations import Activations
from models.batchnorm import BatchNorm2d
from models.fast_ops import WholeInputConv2d
from models.operations import FactorizedReduce, Identity, Layers, ReLUConvBN, drop_path, make_op


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, so every model takes images in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _accumulate(total: torch.Tensor | None, out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """total + weight * out in one pass (addcmul), weight a 0-d tensor."""
    return out * weight if total is None else torch.addcmul(total, out, weight)


def _same_order_flat(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both tensors as 1-d views in one element order (both NCHW or both NHWC), else None."""
    if a.is_contiguous() and b.is_contiguous():
        return a.view(-1), b.view(-1)
    if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) \
            and b.is_contiguous(memory_format=torch.channels_last):
        return a.permute(0, 2, 3, 1).reshape(-1), b.permute(0, 2, 3, 1).reshape(-1)
    return None


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> as one float32-or-wider dot product. Half-precision operands (bf16 autocast) are
    widened first: the sum keeps float32 digits instead of 8 bits, and on CPU the bfloat16 dot is
    4-30x slower than widening and a float32 dot together (at the cells' sizes)."""
    if a.dtype in (torch.bfloat16, torch.float16):
        a, b = a.float(), b.float()
    flat = _same_order_flat(a, b)
    return torch.dot(*flat) if flat is not None else (a * b).sum()


def _will_use(node) -> bool:
    """Whether the running backward pass executes `node`: `torch.autograd.grad` for the network
    weights alone (the hypergradient's validation pass) needs no architecture gradient, which
    `needs_input_grad` (fixed at forward time) cannot tell."""
    try:
        return node is not None and torch._C._will_engine_execute_node(node)
    except (AttributeError, RuntimeError):  # a private helper: if it is gone, compute the gradient
        return True


class _WeightedSum(torch.autograd.Function):
    """sum_k w_k * out_k over one node's candidate outputs, each w_k a 0-d tensor.

    The forward is the addcmul chain of `_accumulate`. The backward gets each d w_k = <g, out_k> from
    one dot product; autograd's addcmul backward writes g * out_k to a temporary and then sums it.
    """

    @staticmethod
    def forward(ctx, n: int, *weights_then_outs: torch.Tensor) -> torch.Tensor:
        weights, outs = weights_then_outs[:n], weights_then_outs[n:]
        total = outs[0] * weights[0]
        for w, out in zip(weights[1:], outs[1:]):
            total.addcmul_(out, w)
        ctx.n = n
        # The outputs are kept only for the weights' gradients: under a frozen architecture this
        # node holds no activations beyond what its ops keep.
        ctx.save_for_backward(*weights, *(outs if any(ctx.needs_input_grad[1:n + 1]) else ()))
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = ctx.n
        saved = ctx.saved_tensors
        weights, outs = saved[:n], saved[n:]
        need = ctx.needs_input_grad[1:]
        weight_grads = []
        for i, (w, wanted) in enumerate(zip(weights, need[:n])):
            if not (wanted and _will_use(ctx.next_functions[i][0])):
                weight_grads.append(None)
                continue
            weight_grads.append(_inner(grad, outs[i]).to(w.dtype).reshape(w.shape))
        out_grads = [grad * w if wanted else None for w, wanted in zip(weights, need[n:])]
        return (None, *weight_grads, *out_grads)


def weighted_sum(weights: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_k weights[k] * outs[k] (0-d weights), with a cheaper backward for the weights."""
    return _WeightedSum.apply(len(outs), *weights, *outs)


def make_preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell: bring both previous outputs to C channels and one resolution."""
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


class MixedEdge(nn.Module):
    """All candidate ops of one edge; the caller says which ones to evaluate and their weights."""

    def __init__(self, channels: int, stride: int, primitives: Sequence[str], affine: bool, pool_bn: bool):
        super().__init__()
        ops = []
        for name in primitives:
            op = make_op(name, channels, stride, affine)
            if pool_bn and "pool" in name:
                # DARTS normalises pool outputs so their scale is comparable to the conv ops'.
                op = Layers(op, BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)


class SearchCell(nn.Module):
    """A cell of a supernet: every edge is a MixedEdge; it owns no architecture parameters."""

    def __init__(self, steps: int, multiplier: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, primitives: Sequence[str], affine: bool, pool_bn: bool):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.preprocess0, self.preprocess1 = make_preprocess(c_pp, c_p, c, reduction_prev, affine)
        self.edges = nn.ModuleList()
        for node in range(steps):
            for j in range(node + 2):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedEdge(c, stride, primitives, affine, pool_bn))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                active: Sequence[Sequence[int]], drop_prob: float = 0.0,
                acts: Activations | None = None, drop_shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """weights: [n_edges, n_ops]; active[e]: the op indices of edge e to evaluate (host ints);
        `acts` shares ReLUs of the inputs with the rest of the network's forward."""
        acts = acts if acts is not None else Activations()
        states = [acts.run(self.preprocess0, s0), acts.run(self.preprocess1, s1)]
        offset = 0
        for node in range(self.steps):
            node_weights, outs = [], []
            for j in range(node + 2):
                e = offset + j
                for k in active[e]:
                    op = self.edges[e].ops[k]
                    out = acts.run(op, states[j])
                    if self.training and drop_prob > 0 and not isinstance(op, Identity):
                        out = drop_path(out, drop_prob, drop_shard)
                    node_weights.append(weights[e, k])
                    outs.append(out)
            if not outs:
                raise RuntimeError(f"node {node} of a cell has no active operation")
            states.append(weighted_sum(node_weights, outs))
            offset += node + 2
        return torch.cat(states[-self.multiplier:], dim=1)


class Cell(nn.Module):
    """A discrete cell built from a genotype; `op_scale` holds folded-in architecture coefficients."""

    def __init__(self, gene: Sequence[tuple[str, int]], concat: Sequence[int], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = make_preprocess(c_pp, c_p, c, reduction_prev, True)
        self.steps = len(gene) // 2
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.inputs = [int(i) for _, i in gene]
        self.ops = nn.ModuleList(
            make_op(name, c, 2 if reduction and idx < 2 else 1, True) for name, idx in gene
        )
        # 1.0 for networks trained from scratch; the learned ISTA coefficients for derived models.
        self.register_buffer("op_scale", torch.ones(len(gene)))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0,
                acts: Activations | None = None, drop_shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        acts = acts if acts is not None else Activations()
        states = [acts.run(self.preprocess0, s0), acts.run(self.preprocess1, s1)]
        for node in range(self.steps):
            total = None
            for k in (2 * node, 2 * node + 1):
                out = acts.run(self.ops[k], states[self.inputs[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], Identity):
                    out = drop_path(out, drop_prob, drop_shard)
                total = _accumulate(total, out, self.op_scale[k])
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS auxiliary classifier on the 2/3-depth feature map (adaptive pooling: any input size)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = Layers(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(channels, 128, 1, bias=False),
            BatchNorm2d(128),
            nn.ReLU(inplace=False),
            WholeInputConv2d(128, 768, 2, bias=False),  # its input is always 2x2
            BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        return self.classifier(self.features(x, probe).flatten(1))


class Stem(nn.Module):
    """CIFAR stem (one 3x3 conv, both cell inputs equal) or 224-px stem (stride 8, two outputs)."""

    def __init__(self, kind: str, in_channels: int, c: int, stem_multiplier: int = 3):
        super().__init__()
        if kind not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {kind!r}: use 'cifar' or 'imagenet'")
        self.kind = kind
        if kind == "cifar":
            self.out_channels = stem_multiplier * c
            self.stem0 = Layers(
                nn.Conv2d(in_channels, self.out_channels, 3, padding=1, bias=False),
                BatchNorm2d(self.out_channels),
            )
            self.stem1 = None
        else:
            self.out_channels = c
            self.stem0 = Layers(
                nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
                BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
                BatchNorm2d(c),
            )
            self.stem1 = Layers(
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                BatchNorm2d(c),
            )

    def forward(self, x: torch.Tensor, probe: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x, probe)
        return (s0, s0) if self.stem1 is None else (s0, self.stem1(s0, probe))


def cell_plan(stem: str, c: int, layers: int, stem_channels: int, multiplier: int = 4) -> list[tuple[int, int, int, bool, bool]]:
    """(C_pp, C_p, C, reduction, reduction_prev) of each cell; reductions at 1/3 and 2/3 depth."""
    plan = []
    c_pp, c_p, c_curr = stem_channels, stem_channels, c
    reduction_prev = stem == "imagenet"
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
        plan.append((c_pp, c_p, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, multiplier * c_curr
    return plan


def aux_channels(plan: list[tuple[int, int, int, bool, bool]], layers: int, multiplier: int = 4) -> int:
    """Channels entering the auxiliary head (output of the cell at 2/3 depth)."""
    return multiplier * plan[2 * layers // 3][2]
