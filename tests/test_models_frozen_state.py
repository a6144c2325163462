"""frozen_state: batch statistics without running-stat updates, no drop path, per thread only."""
import threading

import pytest
import torch

from models.batchnorm import BatchNorm2d
from models.frozen_state import frozen_state, state_frozen
from models.genotypes import DARTS_V2
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
    with frozen_state():
        assert state_frozen()
        y = bn(x)
    assert not state_frozen()
    for k, v in bn.state_dict().items():
        assert torch.equal(v, state[k]), k
    expected = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    bn(x)  # outside the block the running statistics move again
    assert not torch.equal(bn.running_mean, state["running_mean"])
    assert int(bn.num_batches_tracked) == 1


def test_drop_path_is_off_inside():
    torch.manual_seed(0)
    net = Network(DARTS_V2, init_channels=8, num_classes=5, layers=3).train()
    x = torch.rand(4, 3, 16, 16)
    with frozen_state():
        net.drop_path_prob = 0.0
        clean = net(x)
        net.drop_path_prob = 0.7
        torch.manual_seed(1)
        first = net(x)
        torch.manual_seed(2)
        second = net(x)
    torch.testing.assert_close(first, clean, rtol=0, atol=0)
    torch.testing.assert_close(second, clean, rtol=0, atol=0)
    torch.manual_seed(1)
    assert not torch.allclose(net(x), clean)  # drop path acts again outside the block


def test_the_switch_is_per_thread():
    bn = BatchNorm2d(8).train()
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def hold_frozen():
        with frozen_state():
            seen["helper"] = state_frozen()
            inside.set()
            done.wait(5)

    helper = threading.Thread(target=hold_frozen)
    helper.start()
    assert inside.wait(5)
    seen["main"] = state_frozen()
    bn(torch.randn(4, 8, 3, 3))  # the main thread trains normally meanwhile
    done.set()
    helper.join(5)
    assert seen == {"helper": True, "main": False}
    assert int(bn.num_batches_tracked) == 1
