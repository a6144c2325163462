"""amp: bf16 autocast inside the network forward; it tracks float32 training; the ready model is float32."""
import json

import pytest
import torch

import search_darts
from conftest import DEVICES
from models.amp import set_amp
from models.darts import DartsSupernet
from models.genotypes import DARTS_V2
from models.network import Network


def _train(amp: str, device: str, steps: int = 30) -> list[float]:
    torch.manual_seed(0)
    net = set_amp(Network(DARTS_V2, init_channels=8, num_classes=3, layers=3), amp).to(device)
    y = torch.arange(48) % 3
    x = 0.5 * torch.rand(48, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[torch.arange(48), y] += 0.5  # the class is the brightest channel
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_training_tracks_float32_on_a_tiny_problem(device):
    full, half = _train("off", device), _train("bf16", device)
    assert full != half  # bf16 really ran
    assert full[-1] < 0.5 * full[0] and half[-1] < 0.5 * half[0]  # both learn
    # bf16 keeps 8 mantissa bits: per step the losses agree to a few percent of the starting loss
    assert max(abs(a - b) for a, b in zip(full, half)) < 0.1 * full[0]


def test_under_bf16_the_cells_compute_in_bfloat16_and_the_logits_leave_as_float32():
    net = set_amp(DartsSupernet(init_channels=4, num_classes=3, layers=3, steps=2), "bf16")
    seen = []
    net.cells[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    logits = net(torch.rand(2, 3, 8, 8))
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert net.mixing_weights()[0].dtype == torch.float32
    with pytest.raises(ValueError, match="amp"):
        set_amp(net, "fp8")


@pytest.mark.real_export
@pytest.mark.parametrize("device", DEVICES)
def test_a_bf16_run_ends_with_a_float32_ready_model(write_config, tmp_path, device):
    conf = write_config(amp="bf16")
    assert search_darts.main(["--conf_path", str(conf), "--Running", "ista_single_doal", "--device", device]) == 0
    run_dir = tmp_path / "runs" / "fake_ista_single_doal"
    out = torch.export.load(run_dir / "model.pt2").module()(torch.rand(2, 3, 8, 8))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert json.loads((run_dir / "config.json").read_text())["amp"] == "bf16"
