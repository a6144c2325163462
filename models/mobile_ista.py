"""Single-stage ISTA (DHA) on the MobileNet-like space: every searchable layer is one node with one
input and its allowed ops, and computes one chosen op.

Per layer l a fixed Gaussian matrix A_l [m, n_l] (n_l allowed ops) maps the sparse code x_l to the
learned z_l. Each epoch LASSO recovers the codes of the layers still searching; the op of largest
|code| is the layer's support s, and the layer computes w * op_s(x) with the one-step ISTA weight
w = [z^T A_S - (A^T A - I)_S^T x_S]_s, linear in z (as models/ista.py). With `mixing="normalized"`
the value of w is 1, as in the discrete network, and its gradient is the raw weight's (straight
through): a single op's weight normalised to magnitude 1 would carry no gradient at all, and DHA's raw
O(1e-3) weight (`mixing="reference"`) starves the layer. A layer freezes once its code moves by at
most `dist_limit` (or `relative_limit` times its norm) in an epoch, not after the first; the search
stops when all froze.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.amp import autocast, widened
from models.ista import converged, pick_support
from models.mobile_supernet import MobileChoices
from models.mobilenet import LAYER_OPS, MobileGenotype, MobileNetwork
from models.sparse import lasso


class IstaMobileSupernet(MobileChoices):
    """The MobileNet space's candidates, each layer running the support op of its sparse code."""

    def __init__(self, num_classes: int, *, width: float = 1.0, stem: str = "imagenet", in_channels: int = 3,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 proj_dims: int = 7, dist_limit: float = 1e-3, relative_limit: float | None = None,
                 lasso_alpha: float = 1e-5,
                 mixing: str = "normalized", param_limit: float | None = None):
        super().__init__(num_classes, width=width, stem=stem, in_channels=in_channels, mean=mean, std=std)
        if mixing not in ("normalized", "reference"):
            raise ValueError(f"mixing must be 'normalized' or 'reference', got {mixing!r}")
        self.weight_mixing, self.proj_dims, self.dist_limit, self.lasso_alpha = mixing, proj_dims, dist_limit, lasso_alpha
        self.param_limit = param_limit  # M parameters a candidate must stay under (DHA's size check)
        self.relative_limit = relative_limit
        layers = len(self.ops_of)
        self.z = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(proj_dims)) for _ in range(layers))
        for layer, ops in enumerate(self.ops_of):
            A = torch.randn(proj_dims, len(ops)) / proj_dims ** 0.5
            self.register_buffer(f"A_{layer}", A)
            self.register_buffer(f"code_{layer}", torch.zeros(len(ops)))
            self.register_buffer(f"proj_{layer}", torch.zeros(proj_dims, len(ops)))
            self.register_buffer(f"bias_{layer}", torch.zeros(len(ops)))
        self.register_buffer("support", torch.zeros(layers, dtype=torch.long))  # column of A_l
        self.register_buffer("frozen", torch.zeros(layers, dtype=torch.bool))
        self.register_buffer("arch_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("fixed_weights", torch.ones(layers))
        with torch.no_grad():
            for layer, code in self._recover(range(layers)).items():
                getattr(self, f"code_{layer}").copy_(code)
            self._install()
        self._host_support = self.support.tolist()
        self._apply_trainability()
        self.register_load_state_dict_post_hook(lambda module, keys: module._after_load())

    def _recover(self, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """LASSO recovery of the codes of `layers` from the current z (one padded batch)."""
        layers = list(layers)
        if not layers:
            return {}
        widths = [len(self.ops_of[i]) for i in layers]
        A = torch.zeros(len(layers), self.proj_dims, max(widths), dtype=torch.float64)
        for b, i in enumerate(layers):
            A[b, :, :widths[b]] = getattr(self, f"A_{i}").detach().cpu().double()
        z = torch.stack([self.z[i].detach().cpu().double() for i in layers])
        x = lasso(A, z, self.lasso_alpha)
        device = self.support.device
        return {i: x[b, :widths[b]].to(device=device, dtype=self.z[i].dtype) for b, i in enumerate(layers)}

    def _install(self) -> None:
        """Support, projected matrix and bias of every layer, from the accepted codes."""
        for layer, ops in enumerate(self.ops_of):
            A, code = getattr(self, f"A_{layer}"), getattr(self, f"code_{layer}")
            column = pick_support(code, 1, len(ops), sparseness=1)[0]
            self.support[layer] = column
            mask = torch.zeros_like(code)
            mask[column] = 1.0
            getattr(self, f"proj_{layer}").copy_(A * mask)
            gram = A.t() @ A - torch.eye(A.shape[1], device=A.device)
            getattr(self, f"bias_{layer}").copy_((gram * mask).t() @ (code * mask))
        self._host_support = self.support.tolist()

    def _after_load(self) -> None:
        self._host_support = self.support.tolist()
        self._apply_trainability()

    def _apply_trainability(self) -> None:
        frozen, arch_frozen = self.frozen.tolist(), bool(self.arch_frozen)
        for layer, z in enumerate(self.z):
            z.requires_grad_(not (frozen[layer] or arch_frozen))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The per-layer compressed vectors z."""
        return list(self.z)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but z."""
        arch = {id(p) for p in self.z}
        return [p for p in self.parameters() if id(p) not in arch]

    def layer_weights(self) -> torch.Tensor:
        """w of every layer's support op, [L] (constants once the architecture is frozen)."""
        if bool(self.arch_frozen):
            return self.fixed_weights
        raw = torch.stack([(self.z[i] @ getattr(self, f"proj_{i}") - getattr(self, f"bias_{i}"))[s]
                           for i, s in enumerate(self._host_support)])
        return 1.0 + (raw - raw.detach()) if self.weight_mixing == "normalized" else raw  # exactly 1 in value

    def forward_with_aux(self, x: torch.Tensor, with_aux: bool = True, probe: bool = False) -> tuple[torch.Tensor, None]:
        """Logits (each searchable layer runs its support op only) and no auxiliary logits."""
        weights = self.layer_weights()
        with autocast(x, self.amp):
            x = self.trunk(x, probe)
            for layer, column in enumerate(self._host_support):
                x = self.run_op(layer, self.ops_of[layer][column], x, probe) * weights[layer]
            logits = self.logits(x, probe)
        return widened(logits), None

    def genotype(self) -> MobileGenotype:
        """The support op of every layer (what the network computes now)."""
        return MobileGenotype([LAYER_OPS[self.ops_of[i][s]] for i, s in enumerate(self._host_support)])

    def on_epoch_start(self, epoch: int) -> None:
        """Nothing: no temperature here."""

    def on_epoch_end(self, epoch: int) -> dict:
        """Recover the codes of the layers still searching; freeze those that stopped moving."""
        if bool(self.arch_frozen):
            return {}
        with torch.no_grad():
            frozen = self.frozen.tolist()
            recovered = self._recover([i for i, f in enumerate(frozen) if not f])
            dists = {i: float((code - getattr(self, f"code_{i}")).norm()) for i, code in recovered.items()}
            size = self._candidate_params_m(recovered)
            accepted = self.param_limit is None or size < self.param_limit
            if accepted:  # a rejected candidate changes nothing, freeze flags included
                for i, code in recovered.items():
                    getattr(self, f"code_{i}").copy_(code)
                    if epoch > 0 and converged(dists[i], code, self.dist_limit, self.relative_limit):
                        self.frozen[i] = True
                self._install()
                self._apply_trainability()
        return {"accepted": accepted, "candidate_params_m": size, "code_change": sum(dists.values()),
                "frozen_nodes": int(self.frozen.sum()),
                "node_code_change": {f"layer{i}": dists.get(i, 0.0) for i in range(len(self.ops_of))},
                "node_frozen": {f"layer{i}": bool(f) for i, f in enumerate(self.frozen.tolist())}}

    def _candidate_params_m(self, recovered: dict[int, torch.Tensor]) -> float:
        """Parameters (M) of the discrete network the recovered codes would select (meta device)."""
        if self.param_limit is None:
            return float("nan")
        ops = []
        for i, allowed in enumerate(self.ops_of):
            code = recovered.get(i, getattr(self, f"code_{i}"))
            ops.append(LAYER_OPS[allowed[pick_support(code, 1, len(allowed), sparseness=1)[0]]])
        with torch.device("meta"):
            net = MobileNetwork(MobileGenotype(ops), **self.net_kwargs)
        return sum(p.numel() for p in net.parameters()) / 1e6

    def should_stop(self) -> bool:
        """Every layer has converged."""
        return bool(self.frozen.all())

    def freeze_arch(self) -> None:
        """The current layer weights become constants."""
        with torch.no_grad():
            self.fixed_weights.copy_(self.layer_weights().detach())
        self.arch_frozen.fill_(True)
        self._apply_trainability()

    def arch_summary(self) -> dict[str, torch.Tensor]:
        """Sparse codes per layer."""
        return {f"layer{i}": getattr(self, f"code_{i}").detach() for i in range(len(self.ops_of))}

    def derive_model(self) -> MobileNetwork:
        """The discrete network of `genotype()` with this supernet's weights and layer weights."""
        net = MobileNetwork(self.genotype(), dropout=0.0, **self.net_kwargs).to(self.support.device)
        for name in ("normalize", "stem", "head", "classifier"):
            getattr(net, name).load_state_dict(getattr(self, name).state_dict())
        searchable = [i for i, spec in enumerate(net.plan) if spec.searchable]
        fixed = [i for i, spec in enumerate(net.plan) if not spec.searchable]
        weights = self.layer_weights().detach()
        with torch.no_grad():
            for i, block in zip(fixed, self.fixed):
                net.layers[i].load_state_dict(block.state_dict())
            for layer, (i, column) in enumerate(zip(searchable, self._host_support)):
                net.layers[i].load_state_dict(self.choices[layer][self.ops_of[layer][column]].state_dict())
                net.layer_scale[i] = weights[layer]
        return net
