"""ISTA-NAS supernets: the architecture as compressed sparse codes, two-stage or single-stage (DHA).

Per cell type and node i, a fixed measurement matrix A_i [m, K*(i+2)] maps the sparse code x_i (one
entry per (incoming edge, op)) to a short vector z_i = A_i x_i, the learned parameter. Each epoch the
codes are recovered from z by LASSO (`models.sparse.lasso`) and the `sparseness` strongest
(edge, op) pairs form the support S_i. Until the next recovery the node mixes only those ops with
weights w_S = x_S + [A^T (z - A x_S)]_S, one ISTA step restricted to S, which is linear in z:
w = z^T A_S - b with A_S = A with columns outside S zeroed and b = (A^T A - I)_S^T x_S. With
`mixing="normalized"` (the default) each node's weights are then scaled so that their magnitudes
add up to `sparseness`, as in a discrete node; "reference" keeps DHA's raw weights.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from models.genotypes import PRIMITIVES_ISTA, Genotype
from models.network import Network
from models.sparse import lasso
from models.supernet import Supernet

TYPES = ("normal", "reduce")


def pick_support(code: torch.Tensor, n_inputs: int, n_ops: int, sparseness: int = 2,
                 absolute: bool = True, exclude_last_op: bool = False) -> list[int]:
    """Flat indices edge*n_ops+op of the strongest op on each of the `sparseness` strongest edges.

    absolute=False and exclude_last_op=True reproduce the reference DHA selection (signed values,
    and a slice meant for `none` that makes the last op, dil_conv_5x5, unselectable).
    """
    block = code.detach().reshape(n_inputs, n_ops).cpu()
    score = block.abs() if absolute else block
    if exclude_last_op:
        score = score[:, :-1]
    best, op = score.max(dim=1)
    edges = torch.argsort(best, descending=True, stable=True)[:sparseness].tolist()
    return sorted(int(e) * n_ops + int(op[e]) for e in edges)


def converged(change: float, code: torch.Tensor, dist_limit: float, relative_limit: float | None = None) -> bool:
    """Whether a node's code has settled: it moved by at most `relative_limit` times its norm
    (scale-free) or, without a relative limit, by at most `dist_limit` (DHA's absolute rule)."""
    if relative_limit is not None:
        return change <= relative_limit * float(code.norm())
    return change <= dist_limit


class IstaSupernet(Supernet):
    """Two-stage (`single_stage=False`) or single-stage (DHA) ISTA supernet."""

    def __init__(self, *, single_stage: bool, init_channels: int, num_classes: int, layers: int,
                 steps: int = 4, proj_dims: int = 7, sparseness: int = 2, stem: str = "cifar",
                 in_channels: int = 3, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.25,) * 3,
                 auxiliary: bool = False, dist_limit: float = 1e-3, relative_limit: float | None = None,
                 param_limit: float | None = None,
                 size_fn: Callable[[Genotype], float] | None = None, lasso_alpha: float = 1e-5,
                 measurement: str = "gaussian", reference_selection: bool = False,
                 lasso_intercept: bool = False, mixing: str = "normalized"):
        # Single-stage ops keep affine BNs so their weights transfer to the discrete network.
        super().__init__(init_channels=init_channels, num_classes=num_classes, layers=layers, steps=steps,
                         primitives=PRIMITIVES_ISTA, affine=single_stage, pool_bn=not single_stage,
                         auxiliary=auxiliary and single_stage, stem=stem, in_channels=in_channels,
                         mean=mean, std=std)
        if measurement not in ("gaussian", "uniform"):
            raise ValueError(f"measurement must be 'gaussian' or 'uniform', got {measurement!r}")
        if mixing not in ("normalized", "reference"):
            raise ValueError(f"mixing must be 'normalized' or 'reference', got {mixing!r}")
        self.mixing = mixing
        self.single_stage = single_stage
        self.proj_dims = proj_dims
        self.sparseness = sparseness
        self.dist_limit, self.relative_limit = dist_limit, relative_limit
        self.param_limit = param_limit
        self.size_fn = size_fn
        self.lasso_alpha = lasso_alpha
        self.lasso_intercept = lasso_intercept
        self.reference_selection = reference_selection
        k = len(PRIMITIVES_ISTA)
        self.z_normal = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(proj_dims)) for _ in range(steps))
        self.z_reduce = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(proj_dims)) for _ in range(steps))
        for t in TYPES:
            for i in range(steps):
                n = k * (i + 2)
                # Gaussian N(0, 1/m) columns are near-orthonormal (compressed sensing); uniform [0,1)
                # is the reference's choice (all-positive, strongly correlated columns).
                A = torch.randn(proj_dims, n) / proj_dims ** 0.5 if measurement == "gaussian" else torch.rand(proj_dims, n)
                self.register_buffer(f"A_{t}_{i}", A)
                self.register_buffer(f"code_{t}_{i}", torch.zeros(n))
                self.register_buffer(f"proj_{t}_{i}", torch.zeros(proj_dims, n))
                self.register_buffer(f"bias_{t}_{i}", torch.zeros(n))
            self.register_buffer(f"support_{t}", torch.zeros(steps, sparseness, dtype=torch.long))
            self.register_buffer(f"frozen_{t}", torch.zeros(steps, dtype=torch.bool))
            self.register_buffer(f"fixed_weights_{t}", torch.zeros(self.num_edges, k))
        self.register_buffer("arch_frozen", torch.zeros((), dtype=torch.bool))
        self._active_cache: tuple[list[list[int]], list[list[int]]] | None = None
        self._arch_frozen_host = False
        with torch.no_grad():
            for t in TYPES:
                codes = self._recover(t, range(steps))
                for i in range(steps):
                    self._buf("code", t, i).copy_(codes[i])
                self._install(t)
        self._apply_trainability()
        self.register_load_state_dict_post_hook(lambda module, keys: module._after_load())

    # --- buffers and projection -----------------------------------------------------------------
    def _buf(self, kind: str, t: str, i: int) -> torch.Tensor:
        return getattr(self, f"{kind}_{t}_{i}")

    def _z(self, t: str) -> nn.ParameterList:
        return self.z_normal if t == "normal" else self.z_reduce

    def _recover(self, t: str, nodes: Sequence[int]) -> dict[int, torch.Tensor]:
        """LASSO recovery of the codes of `nodes` from the current z (batched, padded)."""
        nodes = list(nodes)
        if not nodes:
            return {}
        widths = [self._buf("A", t, i).shape[1] for i in nodes]
        A = torch.zeros(len(nodes), self.proj_dims, max(widths), dtype=torch.float64)
        for b, i in enumerate(nodes):
            A[b, :, :widths[b]] = self._buf("A", t, i).detach().cpu().double()
        z = torch.stack([self._z(t)[i].detach().cpu().double() for i in nodes])
        x = lasso(A, z, self.lasso_alpha, fit_intercept=self.lasso_intercept)
        device = self._buf("A", t, 0).device
        dtype = self._buf("code", t, nodes[0]).dtype
        return {i: x[b, :widths[b]].to(device=device, dtype=dtype) for b, i in enumerate(nodes)}

    def _support_of(self, t: str, i: int, code: torch.Tensor) -> list[int]:
        return pick_support(code, i + 2, len(self.primitives), self.sparseness,
                            absolute=not self.reference_selection, exclude_last_op=self.reference_selection)

    def _install(self, t: str) -> None:
        """Support, projected matrix A_S and bias b of every node, from the accepted codes."""
        support = getattr(self, f"support_{t}")
        for i in range(self.steps):
            A, code = self._buf("A", t, i), self._buf("code", t, i)
            idx = self._support_of(t, i, code)
            support[i] = torch.tensor(idx, device=support.device)
            mask = torch.zeros_like(code)
            mask[idx] = 1.0
            self._buf("proj", t, i).copy_(A * mask)
            gram = A.t() @ A - torch.eye(A.shape[1], device=A.device)
            self._buf("bias", t, i).copy_((gram * mask).t() @ (code * mask))
        self._active_cache = None

    def _after_load(self) -> None:
        self._active_cache = None
        self._arch_frozen_host = bool(self.arch_frozen)
        self._apply_trainability()

    def _apply_trainability(self) -> None:
        """z of frozen nodes stops learning; the BNs of a node's ops learn once the node froze."""
        arch_frozen = bool(self.arch_frozen)
        for t in TYPES:
            frozen = getattr(self, f"frozen_{t}").tolist()
            for i in range(self.steps):
                self._z(t)[i].requires_grad_(not (frozen[i] or arch_frozen))
            if not self.single_stage:
                continue
            for cell in self.cells:
                if cell.reduction != (t == "reduce"):
                    continue
                offset = 0
                for i in range(self.steps):
                    for e in range(offset, offset + i + 2):
                        for m in cell.edges[e].modules():
                            if isinstance(m, nn.BatchNorm2d) and m.affine:
                                m.weight.requires_grad_(frozen[i] or arch_frozen)
                                m.bias.requires_grad_(frozen[i] or arch_frozen)
                    offset += i + 2

    # --- Supernet interface -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The per-node compressed vectors z."""
        return list(self.z_normal) + list(self.z_reduce)

    def _weights(self, t: str) -> torch.Tensor:
        blocks = [self._z(t)[i] @ self._buf("proj", t, i) - self._buf("bias", t, i) for i in range(self.steps)]
        if self.mixing == "normalized":
            # Each node sums its `sparseness` ops with weights whose magnitudes add up to `sparseness`,
            # as a discrete cell's node does (1 + 1): with DHA's raw weights, O(1e-3) while z is small,
            # the ops' gradients are scaled down as much and the supernet idles for its first epochs.
            # z still sets the ratio and signs of the weights, which is what its codes select on.
            blocks = [w * (self.sparseness / w.abs().sum().clamp_min(1e-12)) for w in blocks]
        return torch.cat(blocks).view(self.num_edges, len(self.primitives))

    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected weights (2 non-zeros per node); constants once the architecture is frozen."""
        if self._arch_frozen_host:
            return self.fixed_weights_normal, self.fixed_weights_reduce
        return self._weights("normal"), self._weights("reduce")

    def active_ops(self) -> tuple[list[list[int]], list[list[int]]]:
        """Only the support's ops, computed from host-side indices (no device sync)."""
        if self._active_cache is None:
            k = len(self.primitives)
            result = []
            for t in TYPES:
                active: list[list[int]] = [[] for _ in range(self.num_edges)]
                offset = 0
                for i, row in enumerate(getattr(self, f"support_{t}").tolist()):
                    for flat in row:
                        active[offset + flat // k].append(flat % k)
                    offset += i + 2
                result.append(active)
            self._active_cache = (result[0], result[1])
        return self._active_cache

    def _gene(self, t: str, supports: Sequence[Sequence[int]]) -> list[tuple[str, int]]:
        k = len(self.primitives)
        return [(self.primitives[flat % k], flat // k) for row in supports for flat in sorted(row)]

    def genotype(self) -> Genotype:
        """The support the network computes with now (so it always matches the trained network)."""
        concat = list(range(2, 2 + self.steps))
        return Genotype(self._gene("normal", self.support_normal.tolist()), concat,
                        self._gene("reduce", self.support_reduce.tolist()), concat)

    def on_epoch_end(self, epoch: int) -> dict:
        """Recover codes for the nodes still searching, check the size limit, freeze converged nodes."""
        if self._arch_frozen_host:
            return {}
        with torch.no_grad():
            candidates, dists = {}, {}
            for t in TYPES:
                frozen = getattr(self, f"frozen_{t}").tolist()
                recovered = self._recover(t, [i for i in range(self.steps) if not frozen[i]])
                for i in range(self.steps):
                    old = self._buf("code", t, i)
                    new = recovered.get(i, old)
                    candidates[t, i] = new
                    dists[t, i] = float((new - old).norm()) if i in recovered else 0.0
            genes = {t: self._gene(t, [self._support_of(t, i, candidates[t, i]) for i in range(self.steps)])
                     for t in TYPES}
            concat = list(range(2, 2 + self.steps))
            candidate = Genotype(genes["normal"], concat, genes["reduce"], concat)
            size = self.size_fn(candidate) if self.size_fn is not None else float("nan")
            accepted = self.param_limit is None or self.size_fn is None or size < self.param_limit
            if accepted:
                for t in TYPES:
                    frozen = getattr(self, f"frozen_{t}")
                    for i in range(self.steps):
                        self._buf("code", t, i).copy_(candidates[t, i])
                        if self.single_stage and epoch > 0 and not frozen[i] and \
                                converged(dists[t, i], candidates[t, i], self.dist_limit, self.relative_limit):
                            frozen[i] = True
                    self._install(t)
                self._apply_trainability()
        return {"accepted": accepted, "candidate_params_m": size, "code_change": sum(dists.values()),
                "frozen_nodes": int(self.frozen_normal.sum() + self.frozen_reduce.sum()),
                "node_code_change": {f"{t}/node{i}": dists[t, i] for t in TYPES for i in range(self.steps)},
                "node_frozen": {f"{t}/node{i}": bool(getattr(self, f"frozen_{t}")[i]) for t in TYPES
                                for i in range(self.steps)}}

    def should_stop(self) -> bool:
        """Single-stage only: every node of both cell types has converged."""
        return self.single_stage and bool(self.frozen_normal.all() and self.frozen_reduce.all())

    def freeze_arch(self) -> None:
        """Make the current mixing weights constants; every op BN may now learn."""
        with torch.no_grad():
            w_normal, w_reduce = self._weights("normal"), self._weights("reduce")
            self.fixed_weights_normal.copy_(w_normal)
            self.fixed_weights_reduce.copy_(w_reduce)
        self.arch_frozen.fill_(True)
        self._arch_frozen_host = True
        self._apply_trainability()

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """Sparse codes per node."""
        return {f"{t}/node{i}": self._buf("code", t, i).detach() for t in TYPES for i in range(self.steps)}

    def derive_model(self) -> Network:
        """The discrete network of `genotype()` with this supernet's weights and coefficients."""
        if not self.single_stage:
            raise RuntimeError("a two-stage ISTA supernet has non-affine ops; retrain the genotype instead")
        genotype = self.genotype()
        device = self.classifier.weight.device
        net = Network(genotype, **self.net_kwargs).to(device)
        net.normalize.load_state_dict(self.normalize.state_dict())
        net.stem.load_state_dict(self.stem.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        if net.aux_head is not None:
            net.aux_head.load_state_dict(self.aux_head.state_dict())
        weights = dict(zip(TYPES, self.mixing_weights()))
        k = len(self.primitives)
        with torch.no_grad():
            for cell, new in zip(self.cells, net.cells):
                t = "reduce" if cell.reduction else "normal"
                new.preprocess0.load_state_dict(cell.preprocess0.state_dict())
                new.preprocess1.load_state_dict(cell.preprocess1.state_dict())
                offset = 0
                for i, row in enumerate(getattr(self, f"support_{t}").tolist()):
                    for r, flat in enumerate(sorted(row)):
                        e, op = offset + flat // k, flat % k
                        new.ops[2 * i + r].load_state_dict(cell.edges[e].ops[op].state_dict())
                        new.op_scale[2 * i + r] = weights[t][e, op]
                    offset += i + 2
        return net
