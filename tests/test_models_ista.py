"""ISTA-NAS supernets (two-stage and single-stage DHA): sparse support, mixing weights, derivation."""
import copy

import pytest
import torch

from torch import nn

from ista_helpers import K, N_EDGES, STEPS, X, Y, bn_of_edges, fresh_like, make, node_edges, perturb_z
from models.genotypes import PRIMITIVES_ISTA, genotype_from_dict
from models.ista import TYPES, pick_support
from models.network import Network

_SHARED = {}


@pytest.fixture(params=[True, False], ids=["single", "two-stage"])
def shared(request):
    """One supernet per kind for the tests that do not change it (gradients are cleared)."""
    if request.param not in _SHARED:
        _SHARED[request.param] = make(request.param)
    net = _SHARED[request.param]
    net.zero_grad(set_to_none=True)
    net.train()
    return net


_PERTURBED = {}


@pytest.fixture(params=[True, False], ids=["single", "two-stage"])
def perturbed(request):
    """Read-only: a supernet whose codes were recovered from a random z (then z moved a little),
    with BN running statistics moved by a training forward. Single-stage has the auxiliary head."""
    single_stage = request.param
    if single_stage not in _PERTURBED:
        net = make(single_stage, auxiliary=single_stage)
        perturb_z(net, 2)
        info = net.on_epoch_end(0)
        assert info["accepted"]
        perturb_z(net, 3, scale=0.1)   # z is no longer the one the codes came from
        net.train()
        with torch.no_grad():
            net(X)
        _PERTURBED[single_stage] = net
    return _PERTURBED[single_stage]



# --- support and mixing weights ---------------------------------------------------------------

def test_two_active_ops_per_node_on_two_edges(perturbed):
    net = perturbed
    actives = dict(zip(TYPES, net.active_ops()))
    weights = dict(zip(TYPES, net.mixing_weights()))
    for t in TYPES:
        active, w = actives[t], weights[t]
        assert len(active) == N_EDGES and w.shape == (N_EDGES, K)
        nonzero = {(int(e), int(k)) for e, k in torch.nonzero(w.detach()).tolist()}
        from_active = {(e, k) for e in range(N_EDGES) for k in active[e]}
        assert nonzero == from_active
        for i in range(STEPS):
            pairs = [(e, k) for e in node_edges(i) for k in active[e]]
            assert len(pairs) == 2
            assert pairs[0][0] != pairs[1][0]


def test_mixing_weights_are_one_ista_step_on_the_support(perturbed):
    """w_S = x_S + [A^T (z - A x_S)]_S and zero elsewhere, per node (the module docstring); with the
    default normalized mixing, scaled so that |w_S| sums to 2 (a discrete node's 1 + 1)."""
    net = perturbed
    assert net.mixing == "normalized"
    for t, w in zip(TYPES, net.mixing_weights()):
        for i in range(STEPS):
            A = getattr(net, f"A_{t}_{i}").double()
            code = getattr(net, f"code_{t}_{i}").double()
            z = (net.z_normal if t == "normal" else net.z_reduce)[i].detach().double()
            support = getattr(net, f"support_{t}")[i].tolist()
            x_s = torch.zeros_like(code)
            x_s[support] = code[support]
            step = x_s + A.t() @ (z - A @ x_s)
            expected = torch.zeros_like(code)
            expected[support] = step[support]
            got = w.detach()[list(node_edges(i))].flatten().double()
            assert torch.allclose(got, expected * 2 / expected.abs().sum(), atol=1e-5)
            assert torch.count_nonzero(got) == 2 and float(got.abs().sum()) == pytest.approx(2.0, rel=1e-6)


def test_reference_mixing_keeps_dhas_raw_weights():
    ref = make(True, mixing="reference")
    for t, w in zip(TYPES, ref.mixing_weights()):
        for i in range(STEPS):
            A, code = getattr(ref, f"A_{t}_{i}"), getattr(ref, f"code_{t}_{i}")
            z = (ref.z_normal if t == "normal" else ref.z_reduce)[i].detach()
            support = getattr(ref, f"support_{t}")[i].tolist()
            x_s = torch.zeros_like(code)
            x_s[support] = code[support]
            expected = (x_s + A.t() @ (z - A @ x_s))[support]
            got = w.detach()[list(node_edges(i))].flatten()
            torch.testing.assert_close(got[torch.nonzero(got).flatten()], expected, rtol=1e-4, atol=1e-7)
            assert float(got.abs().sum()) < 0.1  # DHA's O(1e-3) start


def test_genotype_matches_the_support(perturbed):
    net = perturbed
    geno = net.genotype()
    assert genotype_from_dict(geno.to_dict()) == geno
    for t, active in zip(TYPES, net.active_ops()):
        gene = getattr(geno, t)
        expected = []
        for i in range(STEPS):
            for e in node_edges(i):
                for k in sorted(active[e]):
                    expected.append((PRIMITIVES_ISTA[k], e - node_edges(i)[0]))
        assert gene == expected


def test_only_active_ops_are_evaluated(shared):
    net = shared
    calls, handles = {}, []

    def hook(key):
        def f(module, inputs, output):
            calls[key] = calls.get(key, 0) + 1
        return f

    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                handles.append(op.register_forward_hook(hook((c, e, k))))
    try:
        loss = nn.functional.cross_entropy(net(X), Y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    actives = dict(zip(TYPES, net.active_ops()))
    expected = set()
    for c, cell in enumerate(net.cells):
        active = actives["reduce" if cell.reduction else "normal"]
        expected |= {(c, e, k) for e in range(N_EDGES) for k in active[e]}
    assert set(calls) == expected
    assert all(v == 1 for v in calls.values())
    # parameters of ops never run get no gradient
    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                if (c, e, k) not in expected:
                    assert all(p.grad is None for p in op.parameters())


def test_z_gradients_are_non_zero(shared):
    net = shared
    nn.functional.cross_entropy(net(X), Y).backward()
    for z in net.arch_parameters():
        assert z.requires_grad
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_arch_and_weight_parameters_partition(shared):
    net = shared
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert len(arch) == 2 * STEPS
    assert arch.isdisjoint(weights)
    assert arch | weights == {id(p) for p in net.parameters()}
    assert all(z.shape == (net.proj_dims,) for z in net.arch_parameters())


def test_state_dict_round_trip(perturbed):
    a = perturbed
    b = make(a.single_stage, seed=7, auxiliary=a.single_stage)
    assert not torch.equal(b.A_normal_0, a.A_normal_0)
    stale = copy.deepcopy(b.active_ops())   # b was used before the load (host-side support cached)
    assert stale != a.active_ops()
    b.load_state_dict(a.state_dict())
    assert b.genotype() == a.genotype()
    assert b.active_ops() == a.active_ops()
    for wa, wb in zip(a.mixing_weights(), b.mixing_weights()):
        assert torch.equal(wa, wb)
    a.eval(), b.eval()
    try:
        with torch.no_grad():
            assert torch.equal(a(X), b(X))
    finally:
        a.train()
    assert [z.requires_grad for z in a.arch_parameters()] == [z.requires_grad for z in b.arch_parameters()]


# --- derivation -------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("perturbed", [True], indirect=True)
def test_derive_model_reproduces_supernet(perturbed, freeze):
    net = fresh_like(perturbed) if freeze else perturbed
    if freeze:
        net.freeze_arch()
        assert not any(z.requires_grad for z in net.arch_parameters())
    derived = net.derive_model()
    assert isinstance(derived, Network)
    assert derived.genotype == net.genotype()
    assert derived.aux_head is not None
    net.eval(), derived.eval()
    try:
        with torch.no_grad():
            diff = (net(X) - derived(X)).abs().max().item()
    finally:
        net.train()
    assert diff < 1e-5
    # op_scale holds the mixing weights of the support
    w_normal = net.mixing_weights()[0].detach()
    normal_cell = next(c for c in derived.cells if not c.reduction)
    expected = [float(w_normal[e, k]) for i in range(STEPS) for e in node_edges(i)
                for k in sorted(net.active_ops()[0][e])]
    assert normal_cell.op_scale.tolist() == pytest.approx(expected, abs=1e-6)
    assert all(abs(v) > 0 for v in expected)


def test_freeze_arch_makes_weights_constant_and_bns_trainable():
    net = make(True).eval()
    with torch.no_grad():
        before = net(X)
    net.freeze_arch()
    assert all(m.weight.requires_grad for t in TYPES for m in bn_of_edges(net, t, range(N_EDGES)))
    perturb_z(net, 21)
    with torch.no_grad():
        assert torch.allclose(before, net(X), atol=1e-6)
    assert net.on_epoch_end(3) == {}


@pytest.mark.parametrize("shared", [False], indirect=True)
def test_derive_model_raises_for_two_stage(shared):
    net = shared
    with pytest.raises(RuntimeError):
        net.derive_model()


def test_two_stage_has_no_affine_op_bns_and_pool_bns():
    net = make(False, auxiliary=True)
    assert net.aux_head is None   # auxiliary is a single-stage feature
    assert not bn_of_edges(net, "normal", range(N_EDGES))
    pool = net.cells[0].edges[0].ops[PRIMITIVES_ISTA.index("max_pool_3x3")]
    assert isinstance(pool, nn.Sequential) and isinstance(pool[1], nn.BatchNorm2d)


@pytest.mark.parametrize("shared", [True], indirect=True)
def test_single_stage_ops_have_affine_bns_and_no_pool_bns(shared):
    pool = shared.cells[0].edges[0].ops[PRIMITIVES_ISTA.index("max_pool_3x3")]
    assert isinstance(pool, nn.MaxPool2d)
    assert bn_of_edges(shared, "normal", range(N_EDGES))


def test_bad_measurement_raises():
    with pytest.raises(ValueError):
        make(False, measurement="bernoulli")


def test_uniform_measurement_builds():
    net = make(False, measurement="uniform")
    assert (net.A_normal_0 >= 0).all()
    assert net(X).shape == (2, 3)


# --- pick_support -----------------------------------------------------------------------------

def test_pick_support_absolute():
    code = torch.zeros(3, K)
    code[0, 1] = 0.2
    code[1, 6] = -0.9
    code[2, 3] = 0.5
    assert pick_support(code.flatten(), 3, K) == sorted([1 * K + 6, 2 * K + 3])


def test_pick_support_reference_flags():
    code = torch.zeros(3, K)
    code[:, K - 1] = 5.0            # the last op is strongest everywhere
    code[0, 2] = 0.3
    code[1, 4] = -2.0              # strong only by magnitude
    code[1, 0] = 0.1
    code[2, 5] = 0.4
    ref = pick_support(code.flatten(), 3, K, absolute=False, exclude_last_op=True)
    assert all(flat % K != K - 1 for flat in ref)
    assert ref == [0 * K + 2, 2 * K + 5]
    ours = pick_support(code.flatten(), 3, K)
    assert all(flat % K == K - 1 for flat in ours)
    # absolute, last op excluded: the large negative now counts
    code[:, K - 1] = 0.0
    assert pick_support(code.flatten(), 3, K, exclude_last_op=True) == [1 * K + 4, 2 * K + 5]


def test_pick_support_reference_never_selects_last_op_randomly():
    g = torch.Generator().manual_seed(0)
    for n_in in (2, 3, 4, 5):
        for _ in range(10):
            code = torch.randn(n_in * K, generator=g)
            sel = pick_support(code, n_in, K, absolute=False, exclude_last_op=True)
            assert len(sel) == 2 and len({f // K for f in sel}) == 2
            assert all(f % K != K - 1 for f in sel)


def test_reference_selection_supernet_never_uses_dil_conv_5x5():
    net = make(False, reference_selection=True)
    for seed in range(1):
        perturb_z(net, seed, scale=2.0)
        net.on_epoch_end(0)
        geno = net.genotype()
        assert geno.count("dil_conv_5x5") == 0 and geno.count("dil_conv_5x5", "reduce") == 0
