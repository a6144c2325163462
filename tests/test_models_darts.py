"""The DARTS supernet: registered alphas, softmax mixing, genotype parsing, gradients."""
import pytest
import torch

from models.darts import DartsSupernet
from models.genotypes import PRIMITIVES_DARTS, genotype_from_dict


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DartsSupernet(init_channels=4, num_classes=3, layers=3)


def test_alphas_are_registered_parameters(net):
    sd = net.state_dict()
    assert "alpha_normal" in sd and "alpha_reduce" in sd
    names = dict(net.named_parameters())
    assert names["alpha_normal"] is net.alpha_normal
    assert net.alpha_normal.shape == (14, len(PRIMITIVES_DARTS))
    assert net.alpha_reduce.shape == (14, len(PRIMITIVES_DARTS))


def test_alphas_move_with_to():
    torch.manual_seed(0)
    n = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2)
    n.to(torch.float64)
    assert all(a.dtype == torch.float64 for a in n.arch_parameters())
    assert n.arch_parameters()[0] is n.alpha_normal  # still the registered ones
    n.to("meta")
    assert all(a.device.type == "meta" for a in n.arch_parameters())


def test_arch_and_weight_parameters_partition_parameters(net):
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    allp = {id(p) for p in net.parameters()}
    assert len(arch) == 2
    assert arch.isdisjoint(weights)
    assert arch | weights == allp
    assert len(net.weight_parameters()) == len(list(net.parameters())) - 2


def test_mixing_weights_are_row_stochastic(net):
    with torch.no_grad():
        net.alpha_normal.copy_(torch.randn_like(net.alpha_normal))
    for w in net.mixing_weights():
        assert w.shape == (14, len(PRIMITIVES_DARTS))
        assert (w >= 0).all()
        assert torch.allclose(w.sum(dim=1), torch.ones(14), atol=1e-6)


def test_all_ops_active(net):
    normal, reduce = net.active_ops()
    assert len(normal) == len(reduce) == 14
    assert all(sorted(ops) == list(range(len(PRIMITIVES_DARTS))) for ops in normal + reduce)


def test_genotype_is_valid_for_random_alphas():
    torch.manual_seed(1)
    n = DartsSupernet(init_channels=4, num_classes=3, layers=2)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            n.alpha_normal.copy_(torch.randn(n.alpha_normal.shape, generator=g))
            n.alpha_reduce.copy_(torch.randn(n.alpha_reduce.shape, generator=g))
            n.alpha_normal[:, PRIMITIVES_DARTS.index("none")] = 100.0   # `none` dominating everywhere
        geno = n.genotype()
        assert genotype_from_dict(geno.to_dict()) == geno
        for cell in (geno.normal, geno.reduce):
            assert len(cell) == 8
            for node in range(4):
                (op_a, in_a), (op_b, in_b) = cell[2 * node], cell[2 * node + 1]
                assert in_a != in_b
                assert 0 <= in_a < node + 2 and 0 <= in_b < node + 2
                assert "none" not in (op_a, op_b)
        assert geno.normal_concat == geno.reduce_concat == [2, 3, 4, 5]


def test_genotype_follows_the_alphas():
    torch.manual_seed(2)
    n = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2)
    k = PRIMITIVES_DARTS.index
    with torch.no_grad():
        n.alpha_normal.zero_()
        n.alpha_normal[0, k("sep_conv_5x5")] = 3.0
        n.alpha_normal[1, k("max_pool_3x3")] = 2.0
        n.alpha_normal[3, k("dil_conv_3x3")] = 3.0
        n.alpha_normal[4, k("skip_connect")] = 2.5
    geno = n.genotype()
    assert geno.normal == [("sep_conv_5x5", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 1), ("skip_connect", 2)]


def test_forward_and_gradients_reach_alphas(net):
    net.train()
    net.zero_grad(set_to_none=True)
    x = torch.rand(2, 3, 8, 8)
    y = torch.tensor([0, 2])
    logits = net(x)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, y).backward()
    for a in net.arch_parameters():
        assert a.grad is not None
        assert a.grad.abs().sum() > 0
    assert net.classifier.weight.grad is not None


def test_auxiliary_head():
    torch.manual_seed(0)
    n = DartsSupernet(init_channels=4, num_classes=3, layers=3, steps=2, auxiliary=True).train()
    logits, aux = n.forward_with_aux(torch.rand(2, 3, 8, 8))
    assert aux is not None and aux.shape == logits.shape == (2, 3)
    n.eval()
    assert n.forward_with_aux(torch.rand(2, 3, 8, 8))[1] is None


def test_freeze_arch_stops_alpha_gradients():
    torch.manual_seed(0)
    n = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2)
    n.freeze_arch()
    assert not any(a.requires_grad for a in n.arch_parameters())
    n(torch.rand(2, 3, 8, 8)).sum().backward()
    assert all(a.grad is None for a in n.arch_parameters())


def test_state_dict_round_trip_restores_alphas_and_genotype():
    torch.manual_seed(3)
    a = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2)
    with torch.no_grad():
        a.alpha_normal.copy_(torch.randn_like(a.alpha_normal))
    torch.manual_seed(4)
    b = DartsSupernet(init_channels=4, num_classes=3, layers=2, steps=2)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.alpha_normal, b.alpha_normal)
    assert a.genotype() == b.genotype()
    x = torch.rand(2, 3, 8, 8)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
