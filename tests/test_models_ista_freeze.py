"""ISTA-NAS supernets: single-stage node freezing, its state after a round trip, and the size limit."""
import torch

from ista_helpers import N_EDGES, STEPS, X, bn_of_edges, codes_of, fresh_like, make, node_edges, perturb_z
from models.genotypes import Genotype
from models.ista import TYPES, converged


def test_state_dict_round_trip_restores_the_frozen_nodes():
    a = make(True, seed=0)
    a.on_epoch_end(1)             # z unchanged: every node converges and freezes
    a.freeze_arch()
    b = fresh_like(a)
    assert b.should_stop()
    assert not any(z.requires_grad for z in b.arch_parameters())
    assert all(m.weight.requires_grad for t in TYPES for m in bn_of_edges(b, t, range(N_EDGES)))
    # the architecture is frozen in b too: changing z does not change the output
    b.eval()
    with torch.no_grad():
        before = b(X)
        perturb_z(b, 4)
        assert torch.equal(before, b(X))


# --- single-stage freezing --------------------------------------------------------------------

def test_single_stage_bn_affine_trainable_only_after_node_freezes():
    net = make(True)
    bns = [m for t in TYPES for m in bn_of_edges(net, t, range(N_EDGES))]
    assert bns, "single-stage ops must have affine BNs"
    assert not any(m.weight.requires_grad or m.bias.requires_grad for m in bns)
    # preprocessing and stem BNs are ordinary weights
    assert net.cells[0].preprocess1.op[2].weight.requires_grad
    assert not net.should_stop()

    info0 = net.on_epoch_end(0)   # epoch 0 never freezes
    assert info0["accepted"] and info0["frozen_nodes"] == 0
    net.on_epoch_end(1)
    info = net.on_epoch_end(2)
    assert info["accepted"]
    assert info["frozen_nodes"] == 2 * STEPS
    assert net.should_stop()
    assert not any(z.requires_grad for z in net.arch_parameters())
    assert all(m.weight.requires_grad and m.bias.requires_grad for m in bns)


def test_single_stage_freezes_only_converged_nodes():
    net = make(True)
    perturb_z(net, 9, scale=2.0, which={("normal", 2)})
    info = net.on_epoch_end(1)
    assert info["frozen_nodes"] == 2 * STEPS - 1
    assert net.frozen_normal.tolist() == [True, True, False, True]
    assert net.frozen_reduce.all()
    assert not net.should_stop()
    assert net.z_normal[2].requires_grad
    assert not net.z_normal[1].requires_grad and not net.z_reduce[2].requires_grad
    searching = bn_of_edges(net, "normal", node_edges(2))
    assert searching and not any(m.weight.requires_grad for m in searching)
    others = [m for i in (0, 1, 3) for m in bn_of_edges(net, "normal", node_edges(i))]
    assert all(m.weight.requires_grad for m in others)
    assert all(m.weight.requires_grad for m in bn_of_edges(net, "reduce", range(N_EDGES)))
    # once it stops moving, it freezes too
    net.on_epoch_end(2)
    assert net.should_stop()


def test_the_relative_rule_is_scale_free_and_the_absolute_one_is_not():
    code, change = torch.tensor([0.3, -0.4]), 0.02  # 4% of the code's norm 0.5
    assert converged(change, code, 1e-3, 0.05) and not converged(change, code, 1e-3, 0.03)
    for scale in (1e-3, 1.0, 1e3):  # the same decision at every scale of the codes
        assert converged(change * scale, code * scale, 1e-3, 0.05)
    assert [converged(change * s, code * s, 1e-3) for s in (1e-3, 1.0)] == [True, False]


def test_with_a_relative_limit_a_node_freezes_once_its_code_moves_little_for_its_size():
    net = make(True, relative_limit=0.05)
    with torch.no_grad():
        for z in list(net.z_normal) + list(net.z_reduce):
            z.mul_(1000.0)  # codes of size O(1): their epoch-to-epoch noise dwarfs DHA's 1e-3
    net.on_epoch_end(1)
    assert not net.frozen_normal.any()  # each code jumped from O(1e-3) to O(1)
    with torch.no_grad():
        for z in list(net.z_normal) + list(net.z_reduce):
            z.mul_(1.01)  # a 1% move: under 5% of its size, far above an absolute 1e-3
    net.on_epoch_end(2)
    assert net.frozen_normal.all() and net.frozen_reduce.all()


def test_two_stage_never_freezes_nodes():
    net = make(False)
    info = net.on_epoch_end(5)    # z unchanged: a single-stage net would freeze everything now
    assert info["accepted"] and info["code_change"] <= net.dist_limit
    assert info["frozen_nodes"] == 0
    assert not net.frozen_normal.any() and not net.frozen_reduce.any()
    assert not net.should_stop()
    assert all(z.requires_grad for z in net.arch_parameters())


# --- size limit -------------------------------------------------------------------------------

def test_param_limit_rejects_then_accepts():
    seen, size = [], [100.0]

    def size_fn(g):
        seen.append(g)
        return size[0]

    net = make(True)
    net.size_fn, net.param_limit = size_fn, 1.0
    geno, codes, supports = net.genotype(), codes_of(net), (net.support_normal.clone(), net.support_reduce.clone())
    perturb_z(net, 11, scale=3.0)
    info = net.on_epoch_end(1)
    assert info["accepted"] is False
    assert info["candidate_params_m"] == 100.0
    assert len(seen) == 1 and isinstance(seen[0], Genotype)
    assert seen[0] != geno          # the candidate really differed
    assert net.genotype() == geno
    after = codes_of(net)
    assert all(torch.equal(codes[key], after[key]) for key in codes)
    assert torch.equal(net.support_normal, supports[0]) and torch.equal(net.support_reduce, supports[1])
    assert info["frozen_nodes"] == 0 and not net.should_stop()
    assert all(z.requires_grad for z in net.arch_parameters())

    size[0] = 0.5                   # the same candidate, now small enough
    info = net.on_epoch_end(2)
    assert info["accepted"] is True
    assert seen[-1] == seen[0]
    assert net.genotype() == seen[-1] != geno
    assert any(not torch.equal(codes[key], v) for key, v in codes_of(net).items())
