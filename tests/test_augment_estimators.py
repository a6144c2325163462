"""The split-half signal: high where each choice's rewards repeat, near 0 where they are noise."""
import torch

from augment.estimators import SplitHalfSignal


def _signal(offset_sd: float, steps: int = 400, choices: int = 196, seed: int = 0) -> SplitHalfSignal:
    generator = torch.Generator().manual_seed(seed)
    offsets = offset_sd * torch.randn(choices, generator=generator, dtype=torch.float64)
    signal = SplitHalfSignal()
    for _ in range(steps):
        choice = torch.randint(choices, (32,), generator=generator)
        # a per-step shift and scale that the standardisation must remove
        reward = 5.0 + 3.0 * (offsets[choice] + torch.randn(32, generator=generator, dtype=torch.float64))
        signal.add(choice, reward, choices)
    return signal


def test_repeatable_per_choice_rewards_correlate_and_noise_does_not():
    # 400 steps x 32 samples: about 33 per choice and half, so a mean's noise has sd ~0.17
    assert _signal(offset_sd=0.5).correlation() > 0.7
    noise = [_signal(offset_sd=0.0, seed=s).correlation() for s in range(3)]
    assert all(abs(r) < 0.3 for r in noise), noise


def test_no_correlation_before_enough_choices_and_a_state_round_trip():
    signal = SplitHalfSignal()
    assert signal.correlation() is None
    signal.add(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), 4)
    assert signal.correlation() is None  # nothing in the odd half yet
    full = _signal(offset_sd=0.5, steps=50)
    restored = SplitHalfSignal()
    restored.load_state_dict(full.state_dict())
    assert restored.correlation() == full.correlation() and restored.steps == 50
