"""Pure seed arithmetic: derive independent, reproducible seeds without touching global RNG state."""

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of SplitMix64, a cheap bijective 64-bit mixer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """Combine integers into one seed in [0, 2**63) that changes unpredictably with every part."""
    state = 0
    for part in parts:
        state = _splitmix64(state ^ (int(part) & _MASK64))
    # torch.Generator.manual_seed accepts any 64-bit value, but staying below 2**63 keeps it a valid int64 too.
    return state >> 1


def make_generator(*parts: int) -> torch.Generator:
    """A CPU torch.Generator seeded from mix_seed(*parts)."""
    gen = torch.Generator()
    gen.manual_seed(mix_seed(*parts))
    return gen
