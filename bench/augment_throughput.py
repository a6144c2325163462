"""Augmentation throughput on CPU: our batched per-sample engine vs torchvision's per-image TrivialAugmentWide.

    python bench/augment_throughput.py DATA_DIR [--batch 256] [--repeats 7]

DATA_DIR is an ImageFolder tree of CIFAR-size images (e.g. /work/shared/data/cifar10-subset/train).
(a) DHA's pair policy on a float batch: `apply_per_sample` twice (two ops per image), random ops from
    DHA_OPS[14], random magnitudes; once without autograd (DHA: no gradient through the images) and once
    recording the graph to m (Faster-AA style; forward only).
(b) `transforms.v2.TrivialAugmentWide` called image by image on uint8 tensors, the standard loader path.
Measurements are interleaved, after a warm-up; the median over the repeats is reported.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torchvision import datasets  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from augment.apply import apply_per_sample, random_signs  # noqa: E402
from augment.ops import DHA_OPS, OPS  # noqa: E402

SIZE = 32


def load_images(root: Path, count: int) -> torch.Tensor:
    """Up to `count` images spread over the folder (every class), as uint8 [N, 3, 32, 32]; tiled to `count`."""
    folder = datasets.ImageFolder(str(root))
    n = min(count, len(folder))
    picks = torch.linspace(0, len(folder) - 1, n).round().long().tolist()  # spread over the classes
    images = []
    for i in picks:
        img = folder.loader(folder.samples[i][0]).convert("RGB")
        t = v2.functional.pil_to_tensor(img)
        if t.shape[1:] != (SIZE, SIZE):
            t = v2.functional.center_crop(v2.functional.resize(t, [SIZE], antialias=True), [SIZE, SIZE])
        images.append(t)
    batch = torch.stack(images)
    return batch.repeat((count + n - 1) // n, 1, 1, 1)[:count]


def batched_pair_policy(u8: torch.Tensor, names: tuple[str, ...], signed: torch.Tensor,
                        generator: torch.Generator, grad: bool) -> torch.Tensor:
    """Two rounds of per-sample ops with random op choices and magnitudes, as DHA's pair policy applies them."""
    x = u8.float() / 255.0
    for _ in range(2):
        b = x.shape[0]
        op_index = torch.randint(0, len(names), (b,), generator=generator)
        m = torch.rand(b, generator=generator)
        m = torch.where(signed[op_index], m * random_signs(b, generator), m).requires_grad_(grad)
        x = apply_per_sample(x, op_index, m, names)
    return x


def per_image_trivial_augment(u8: torch.Tensor, aug: v2.TrivialAugmentWide) -> torch.Tensor:
    """TrivialAugmentWide image by image (a Python loop), stacked back into a batch."""
    return torch.stack([aug(img) for img in u8])


def timed(fn: Callable[[], torch.Tensor]) -> float:
    """Seconds for one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table; exit code 2 when DATA_DIR is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: data directory {args.data_dir} does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    torch.manual_seed(0)

    u8 = load_images(args.data_dir, args.batch)
    names = DHA_OPS[14]
    signed = torch.tensor([OPS[n].signed for n in names])
    gen = torch.Generator().manual_seed(0)
    trivial = v2.TrivialAugmentWide()

    def batched() -> torch.Tensor:
        with torch.no_grad():
            return batched_pair_policy(u8, names, signed, gen, grad=False)

    from augment.pair_policy import PairPolicy
    policy = PairPolicy(names, temperature=2.0, magnitude=10.0).train()

    def pair_policy() -> torch.Tensor:
        with torch.no_grad():  # the policy object itself: Gumbel matrix, per-sample pairs, two ops each
            return policy(u8.float().div(255), gen)[0]

    methods: dict[str, Callable[[], torch.Tensor]] = {
        "PairPolicy forward (DHA, batched)": pair_policy,
        "batched apply_per_sample x2 (DHA 14 ops)": batched,
        "  same, autograd graph to m (forward)": lambda: batched_pair_policy(u8, names, signed, gen, grad=True),
        "per-image TrivialAugmentWide (v2)": lambda: per_image_trivial_augment(u8, trivial),
    }
    for fn in methods.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(max(args.repeats, 1)):
        for name, fn in methods.items():  # interleaved, so background load hits every method alike
            times[name].append(timed(fn))

    n = u8.shape[0]
    print(f"{n} images of {tuple(u8.shape[1:])}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {max(args.repeats, 1)} repeats")
    print(f"{'method':<44}{'images/s':>12}{'ms/batch':>12}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, sec in medians.items():
        print(f"{name:<44}{n / sec:>12.0f}{1000 * sec:>12.2f}")
    speedup = medians["per-image TrivialAugmentWide (v2)"] / medians["PairPolicy forward (DHA, batched)"]
    print(f"batched policy is {speedup:.1f}x faster than per-image TrivialAugmentWide")
    return 0


if __name__ == "__main__":
    sys.exit(main())
