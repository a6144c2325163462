"""The search space as data: primitive lists, the Genotype value, published genotypes, JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

# Index order matters: ISTA codes and DARTS alphas are laid out in this order.
PRIMITIVES_ISTA: tuple[str, ...] = (
    "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
    "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
PRIMITIVES_DARTS: tuple[str, ...] = PRIMITIVES_ISTA + ("none",)


class Genotype(NamedTuple):
    """A discrete cell pair: two (op, input) entries per intermediate node, normal and reduction."""

    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]]
    reduce_concat: list[int]

    def to_dict(self) -> dict:
        """JSON-safe form: lists of [op, input] pairs."""
        return {
            "normal": [[op, int(i)] for op, i in self.normal],
            "normal_concat": [int(i) for i in self.normal_concat],
            "reduce": [[op, int(i)] for op, i in self.reduce],
            "reduce_concat": [int(i) for i in self.reduce_concat],
        }

    def to_json(self) -> str:
        """Compact one-object JSON string."""
        return json.dumps(self.to_dict())

    def count(self, op: str, cell: str = "normal") -> int:
        """How many times `op` appears in the `normal` or `reduce` cell."""
        return sum(1 for name, _ in getattr(self, cell) if name == op)

    def skips(self) -> int:
        """Skip connections in the normal cell (the DARTS collapse symptom)."""
        return self.count("skip_connect")


def genotype_from_dict(d: dict) -> Genotype:
    """Build a Genotype from its JSON form, checking op names and input indices (a dict tagged
    `"space": "mobilenet"` gives a models.mobilenet.MobileGenotype)."""
    if isinstance(d, dict) and d.get("space") == "mobilenet":
        from models.mobilenet import mobile_genotype_from_dict
        return mobile_genotype_from_dict(d)
    try:
        normal = [(str(op), int(i)) for op, i in d["normal"]]
        reduce = [(str(op), int(i)) for op, i in d["reduce"]]
        steps = len(normal) // 2
        normal_concat = [int(i) for i in d.get("normal_concat", range(2, 2 + steps))]
        reduce_concat = [int(i) for i in d.get("reduce_concat", range(2, 2 + steps))]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a genotype: {exc}") from None
    for cell in (normal, reduce):
        if len(cell) % 2 or len(cell) != len(normal):
            raise ValueError("a genotype needs two entries per node, the same number in both cells")
        for k, (op, i) in enumerate(cell):
            if op not in PRIMITIVES_DARTS or op == "none":
                raise ValueError(f"unknown operation {op!r} in genotype")
            if not 0 <= i < 2 + k // 2:
                raise ValueError(f"input {i} of node {k // 2} does not exist")
    for concat in (normal_concat, reduce_concat):
        if not concat or any(not 0 <= i < 2 + steps for i in concat):
            raise ValueError(f"concat {concat} names states that do not exist (0..{1 + steps})")
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def parse_weights(weights: torch.Tensor, primitives: Sequence[str], steps: int, absolute: bool = True) -> list[tuple[str, int]]:
    """Pick the 2 strongest incoming edges per node and their strongest op (`none` never counts).

    weights: [n_edges, n_ops] mixing weights of one cell type, edges ordered node by node.
    absolute: rank by |w| (ours) or by the signed value (the reference DHA code).
    """
    w = weights.detach().float().cpu()
    w = w.abs() if absolute else w
    usable = [k for k, name in enumerate(primitives) if name != "none"]
    gene: list[tuple[str, int]] = []
    start = 0
    for node in range(steps):
        n_in = node + 2
        block = w[start:start + n_in][:, usable]
        best_val, best_op = block.max(dim=1)
        edges = torch.argsort(best_val, descending=True, stable=True)[:2].tolist()
        for e in sorted(edges):
            gene.append((primitives[usable[int(best_op[e])]], int(e)))
        start += n_in
    return gene


def load_genotype(name_or_json: str) -> Genotype:
    """A published genotype by name (MOBILENET_V2 in the MobileNet-like space), a JSON string, or a
    path to a JSON file."""
    if name_or_json in PUBLISHED:
        return PUBLISHED[name_or_json]
    if name_or_json == "MOBILENET_V2":
        from models.mobilenet import MOBILENET_V2
        return MOBILENET_V2
    text = name_or_json
    path = Path(name_or_json)
    if not name_or_json.lstrip().startswith("{"):
        if not path.is_file():
            raise ValueError(f"{name_or_json!r} is neither a published genotype ({', '.join(PUBLISHED)}), "
                             "a JSON object nor a JSON file")
        text = path.read_text()
    try:
        return genotype_from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"genotype JSON does not parse: {exc}") from None


_CONCAT = [2, 3, 4, 5]

DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=_CONCAT,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=_CONCAT,
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=_CONCAT,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=_CONCAT,
)
PC_DARTS = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=_CONCAT,
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=_CONCAT,
)

PUBLISHED: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2, "PC_DARTS": PC_DARTS}
