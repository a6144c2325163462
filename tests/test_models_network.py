"""The discrete network: shapes, auxiliary head, parameter counts, save/load, op_scale."""
import os

import pytest
import torch

from models.genotypes import DARTS_V2, PC_DARTS
from models.network import Network, count_params_m, load_model, network_params_m, save_model_state


def _net(**kw):
    torch.manual_seed(0)
    args = dict(genotype=DARTS_V2, init_channels=8, num_classes=5, layers=3)
    args.update(kw)
    return Network(**args)


def test_cifar_stem_forward_shape():
    net = _net()
    x = torch.rand(2, 3, 16, 16)
    out = net(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_imagenet_stem_accepts_non_224_inputs():
    net = _net(stem="imagenet", genotype=PC_DARTS).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_in_channels_is_respected():
    net = _net(in_channels=1, mean=(0.5,), std=(0.25,)).eval()
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 5)


def test_aux_logits_only_in_train_mode_with_auxiliary():
    x = torch.rand(2, 3, 16, 16)
    net = _net(auxiliary=True)
    net.train()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (2, 5) and aux is not None and aux.shape == (2, 5)
    net.eval()
    logits, aux = net.forward_with_aux(x)
    assert aux is None
    plain = _net(auxiliary=False).train()
    assert plain.forward_with_aux(x)[1] is None
    assert plain.aux_head is None


def test_count_params_excludes_aux_head():
    with_aux, without = _net(auxiliary=True), _net(auxiliary=False)
    aux_n = sum(p.numel() for p in with_aux.aux_head.parameters())
    assert aux_n > 0
    assert count_params_m(with_aux) == pytest.approx(count_params_m(without))
    assert count_params_m(with_aux, exclude_aux=False) == pytest.approx(count_params_m(without) + aux_n / 1e6)
    total = sum(p.numel() for p in without.parameters())
    assert count_params_m(without) == pytest.approx(total / 1e6)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_network_params_m_on_meta_matches_real_instance(stem):
    real = _net(stem=stem, genotype=PC_DARTS, layers=4)
    meta = network_params_m(PC_DARTS, 8, 5, 4, stem=stem)
    assert meta == pytest.approx(count_params_m(real), rel=0, abs=1e-12)
    assert meta > 0


def test_weight_and_arch_parameters():
    net = _net()
    assert net.arch_parameters() == []
    assert len(net.weight_parameters()) == len(list(net.parameters()))


def _train_a_bit(net, x):
    """One SGD step and a few train-mode forwards so BN running stats and weights are not at init."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    loss = net(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        net(x)


def test_save_and_load_round_trip(tmp_path):
    net = _net(auxiliary=True, num_classes=4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    x = torch.rand(3, 3, 16, 16)
    _train_a_bit(net, x)
    net.cells[0].op_scale.mul_(0.5)
    path = tmp_path / "sub" / "model.pt"
    save_model_state(net, path)
    assert path.is_file()
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.genotype == net.genotype
    assert loaded.kwargs == net.kwargs
    net.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert torch.equal(loaded.cells[0].op_scale, net.cells[0].op_scale)
    assert [n for n in os.listdir(path.parent)] == ["model.pt"]


def test_op_scale_scales_outputs():
    net = _net().eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        base = net(x)
        assert "op_scale" in dict(net.cells[0].named_buffers())
        for cell in net.cells:
            cell.op_scale.zero_()
        zeroed = net(x)
    assert not torch.allclose(base, zeroed)
    # with all ops scaled to zero every cell outputs zeros: logits are just the classifier bias
    assert torch.allclose(zeroed, net.classifier.bias.expand_as(zeroed), atol=1e-6)


def test_op_scale_of_one_op_changes_only_through_that_op():
    """Scaling one op of the last cell changes only the node that op feeds."""
    net = _net().eval()
    x = torch.rand(2, 3, 16, 16)
    feats = {}
    net.cells[-1].register_forward_hook(lambda m, i, o: feats.__setitem__("out", o))
    with torch.no_grad():
        net(x)
        base = feats["out"].clone()
        net.cells[-1].op_scale[7] = 3.0   # last op of the last node (DARTS_V2: dil_conv_3x3 from node 0)
        net(x)
    c = base.shape[1] // 4
    changed = (feats["out"] - base).abs().amax(dim=(0, 2, 3))
    # only the last node's channels (the last quarter of the concat) change
    assert changed[: 3 * c].max() == 0
    assert changed[3 * c:].min() > 0


def test_drop_path_only_in_training():
    net = _net().eval()
    net.drop_path_prob = 0.5
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)   # samples dropped at random


def test_plain_call_in_train_mode_skips_the_auxiliary_head():
    # Validation passes in training mode (hypergradient, DARTS architecture step) only need the logits.
    net = _net(auxiliary=True).train()
    before = {k: v.clone() for k, v in net.aux_head.state_dict().items()}
    logits = net(torch.rand(2, 3, 16, 16))
    assert logits.shape == (2, 5)
    assert all(torch.equal(before[k], v) for k, v in net.aux_head.state_dict().items())  # BN stats untouched
    net.forward_with_aux(torch.rand(2, 3, 16, 16))
    assert not all(torch.equal(before[k], v) for k, v in net.aux_head.state_dict().items())
