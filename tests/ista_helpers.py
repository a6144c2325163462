"""Tiny ISTA supernets and helpers shared by the tests of models/ista.py."""
import torch
from torch import nn

from models.genotypes import PRIMITIVES_ISTA
from models.ista import TYPES, IstaSupernet

K = len(PRIMITIVES_ISTA)
STEPS = 4
N_EDGES = sum(i + 2 for i in range(STEPS))

X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(123))
Y = torch.tensor([0, 2])


def make(single_stage, seed=0, **kw):
    """A fresh tiny supernet (construction runs two LASSO recoveries: keep the count low)."""
    torch.manual_seed(seed)
    args = dict(single_stage=single_stage, init_channels=4, num_classes=3, layers=3)
    args.update(kw)
    return IstaSupernet(**args)



def fresh_like(net, seed=7):
    """A new instance of the same configuration built with another seed, loaded from `net`."""
    other = make(net.single_stage, seed=seed, auxiliary=net.aux_head is not None)
    other.load_state_dict(net.state_dict())
    return other


def node_edges(i):
    offset = sum(j + 2 for j in range(i))
    return range(offset, offset + i + 2)


def bn_of_edges(net, t, edges):
    out = []
    for cell in net.cells:
        if cell.reduction != (t == "reduce"):
            continue
        for e in edges:
            out += [m for m in cell.edges[e].modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    return out


def perturb_z(net, seed, scale=1.0, which=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in TYPES:
            for i, z in enumerate(net.z_normal if t == "normal" else net.z_reduce):
                if which is None or (t, i) in which:
                    z.add_(scale * torch.randn(z.shape, generator=g))


def codes_of(net):
    return {(t, i): getattr(net, f"code_{t}_{i}").clone() for t in TYPES for i in range(STEPS)}
