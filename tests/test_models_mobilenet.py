"""The MobileNet-like space: MobileNetV2 inside it exactly, its genotypes checked, every op runs."""
import pytest
import torch

from models.mobilenet import (LAYER_OPS, MOBILENET_V2, MobileGenotype, MobileNetwork, layer_plan,
                              mobile_genotype_from_dict)
from models.summary import count_madds_m


def test_mobilenet_v2_inside_the_space_has_torchvisions_parameters_and_multiply_adds():
    net = MobileNetwork(MOBILENET_V2, 1000)
    assert sum(p.numel() for p in net.parameters()) == 3_504_872  # torchvision.models.mobilenet_v2()
    assert count_madds_m(net, 224) == pytest.approx(300.8, rel=0.01)
    # the first bottleneck is fixed at expansion 1: no 1x1 expansion conv (depthwise 3x3 first)
    first = net.layers[0].block[0]
    assert first.groups == first.in_channels == 32 and first.kernel_size == (3, 3)
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.mobilenet_v2()
    assert [p.shape for p in net.parameters()] == [p.shape for p in reference.parameters()]


def test_the_plan_has_sixteen_searchable_layers_and_skips_only_where_the_shape_allows():
    searchable = [spec for spec in layer_plan() if spec.searchable]
    assert len(searchable) == 16 == len(MOBILENET_V2.layers)
    assert sum(spec.skip_allowed for spec in searchable) == 10  # 16 minus the first layer of 6 stages
    assert [spec.stride for spec in layer_plan(stem="cifar")][:4] == [1, 1, 1, 2]


@pytest.mark.parametrize("stem, size", [("imagenet", 64), ("cifar", 32)])
def test_every_op_builds_and_runs_in_both_stems(stem, size):
    plan = [spec for spec in layer_plan(width=0.35, stem=stem) if spec.searchable]
    ops = [LAYER_OPS[i % len(LAYER_OPS)] for i in range(len(plan))]
    ops = [op if op != "skip" or spec.skip_allowed else "mb3_e3" for op, spec in zip(ops, plan)]
    net = MobileNetwork(MobileGenotype(ops), 5, width=0.35, stem=stem)
    assert set(ops) == set(LAYER_OPS)
    out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_probe_forward_leaves_the_running_statistics_alone():
    net = MobileNetwork(MOBILENET_V2, 4, width=0.35, stem="cifar").train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(torch.rand(2, 3, 32, 32), probe=True)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)
    net(torch.rand(2, 3, 32, 32))
    assert not all(torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)


def test_genotypes_round_trip_and_bad_ones_are_refused():
    assert mobile_genotype_from_dict(MOBILENET_V2.to_dict(), layer_plan()) == MOBILENET_V2
    with pytest.raises(ValueError, match="searchable layers"):
        mobile_genotype_from_dict({"layers": ["mb3_e6"] * 15}, layer_plan())
    with pytest.raises(ValueError, match="no skip"):
        mobile_genotype_from_dict({"layers": ["skip"] + ["mb3_e6"] * 15}, layer_plan())
    with pytest.raises(ValueError, match="list of ops"):
        mobile_genotype_from_dict({"layers": ["mb9_e9"]})
