"""Probe forwards: batch statistics without running-stat updates, no drop path, nothing flipped on the modules."""
import pytest
import torch

from models.batchnorm import BatchNorm2d
from models.genotypes import DARTS_V2
from models.ista import IstaSupernet
from models.network import Network


@pytest.mark.parametrize("channels,channels_last", [(8, True), (16, False)])  # row path, stock path
def test_batchnorm_uses_batch_statistics_and_leaves_running_stats(channels, channels_last):
    torch.manual_seed(0)
    bn = BatchNorm2d(channels).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, channels, 5, 5) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    y = bn(x, probe=True)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, state[k]), k
    expected = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    bn(x)  # a normal forward moves the running statistics
    assert not torch.equal(bn.running_mean, state["running_mean"])
    assert int(bn.num_batches_tracked) == 1


def _buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("build", [
    lambda: Network(DARTS_V2, init_channels=8, num_classes=5, layers=3, auxiliary=True),
    lambda: Network(DARTS_V2, init_channels=8, num_classes=5, layers=3, stem="imagenet"),
    lambda: IstaSupernet(init_channels=4, num_classes=5, layers=3, steps=2, proj_dims=2, single_stage=True,
                         stem="cifar", in_channels=3, mean=[0.5] * 3, std=[0.25] * 3),
], ids=["network", "imagenet_stem", "ista_supernet"])
def test_a_probe_forward_leaves_every_running_statistic_alone(build):
    torch.manual_seed(0)
    net = build().train()
    x = torch.rand(4, 3, 32, 32)
    before = _buffers(net)
    probe_logits, probe_aux = net.forward_with_aux(x, probe=True)
    for k, v in _buffers(net).items():
        assert torch.equal(v, before[k]), k
    logits = net(x)  # the same batch statistics, so the same logits; now the statistics move
    torch.testing.assert_close(probe_logits, logits, rtol=0, atol=0)
    assert any(not torch.equal(v, before[k]) for k, v in _buffers(net).items())
    assert probe_aux is None or probe_aux.shape == (4, 5)


def test_drop_path_is_off_in_a_probe():
    torch.manual_seed(0)
    net = Network(DARTS_V2, init_channels=8, num_classes=5, layers=3).train()
    x = torch.rand(4, 3, 16, 16)
    net.drop_path_prob = 0.0
    clean = net(x, probe=True)
    net.drop_path_prob = 0.7
    torch.manual_seed(1)
    first = net(x, probe=True)
    torch.manual_seed(2)
    second = net(x, probe=True)
    torch.testing.assert_close(first, clean, rtol=0, atol=0)
    torch.testing.assert_close(second, clean, rtol=0, atol=0)
    torch.manual_seed(1)
    assert not torch.allclose(net(x), clean)  # drop path acts in a normal forward
