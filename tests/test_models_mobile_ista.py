"""Single-stage ISTA on the MobileNet-like space: one op per layer, z learns, the derived net matches."""
import torch

from models.mobile_ista import IstaMobileSupernet
from models.mobilenet import LAYER_OPS


def _net(**kw):
    torch.manual_seed(0)
    return IstaMobileSupernet(4, width=0.35, stem="cifar", **kw)


def test_each_layer_runs_its_support_op_with_weight_one_and_z_gets_the_gradient():
    net = _net().train()
    weights = net.layer_weights()
    assert torch.equal(weights.detach(), torch.ones(16))
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in net.z)
    for layer, column in enumerate(net._host_support):  # the support is an allowed op
        assert net.allowed[layer, net.ops_of[layer][column]]


def test_reference_mixing_uses_the_raw_ista_weights():
    weights = _net(mixing="reference").layer_weights()
    assert weights.abs().max() < 0.1  # O(|z|) = O(1e-3) at the start, as DHA's


def test_the_derived_network_computes_what_the_supernet_computes():
    net = _net().eval()
    x = torch.rand(2, 3, 32, 32)
    derived = net.derive_model().eval()
    assert derived.genotype.layers == [LAYER_OPS[net.ops_of[i][s]] for i, s in enumerate(net._host_support)]
    assert torch.allclose(net(x), derived(x), atol=1e-5)


def test_codes_move_and_layers_freeze_only_when_they_stop_moving():
    net = _net(dist_limit=1e-9)
    with torch.no_grad():
        net.z[0].add_(1.0)
    info = net.on_epoch_end(0)
    assert info["node_code_change"]["layer0"] > 0 and not net.frozen.any()  # never after the first epoch
    info = net.on_epoch_end(1)
    assert net.frozen.all() and net.should_stop()  # nothing moved in between
    assert all(not z.requires_grad for z in net.z)


def test_a_candidate_over_the_parameter_limit_is_rejected_and_changes_nothing():
    net = _net(param_limit=0.001, dist_limit=1.0)
    before = [getattr(net, f"code_{i}").clone() for i in range(16)]
    with torch.no_grad():
        for z in net.z:
            z.add_(torch.randn_like(z))
    info = net.on_epoch_end(1)
    assert not info["accepted"] and info["candidate_params_m"] > 0.001 and not net.frozen.any()
    assert all(torch.equal(b, getattr(net, f"code_{i}")) for i, b in enumerate(before))
    assert _net(param_limit=100.0).on_epoch_end(1)["accepted"]
