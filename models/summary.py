"""`python -m models.summary`: parameters and multiply-adds of a genotype's discrete network.

Multiply-adds are counted as `torch.utils.flop_counter` counts them (convolutions and matrix
products; FLOPs / 2). BatchNorm, ReLU, pooling and additions are not counted. The DARTS paper's own
counter also counts some of these, which is why it reports 574M for DARTS_V2 on ImageNet where we
report about 530M.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.genotypes import Genotype, load_genotype
from models.mobilenet import MobileGenotype, MobileNetwork, load_mobile_genotype
from models.network import Network, count_params_m

INPUT_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def count_madds_m(model: torch.nn.Module, input_size: int, in_channels: int = 3) -> float:
    """Multiply-adds (millions) of one forward pass of a single image in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, input_size, input_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2e6


def summarize(genotype: Genotype, dataset: str, init_channels: int, layers: int) -> dict:
    """Parameter count (M, auxiliary head excluded) and multiply-adds (M) for one configuration."""
    stem = "imagenet" if dataset == "imagenet" else "cifar"
    net = Network(genotype, init_channels, NUM_CLASSES[dataset], layers, stem=stem)
    return {
        "dataset": dataset, "init_channels": init_channels, "layers": layers,
        "params_m": round(count_params_m(net), 6),
        "madds_m": round(count_madds_m(net, INPUT_SIZE[dataset]), 3),
        "genotype": genotype.to_dict(),
    }


def summarize_mobile(genotype: MobileGenotype, dataset: str, width: float) -> dict:
    """The same for the MobileNet-like space (the 32-px stem on CIFAR)."""
    stem = "imagenet" if dataset == "imagenet" else "cifar"
    net = MobileNetwork(genotype, NUM_CLASSES[dataset], width=width, stem=stem)
    return {"dataset": dataset, "width": width, "params_m": round(count_params_m(net), 6),
            "madds_m": round(count_madds_m(net, INPUT_SIZE[dataset]), 3), "genotype": genotype.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genotype", required=True, help="DARTS_V1, DARTS_V2, PC_DARTS, MOBILENET_V2, a JSON object "
                        "or a JSON file (a run's genotype.json; {\"space\": \"mobilenet\", ...} for that space)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (MobileNet-like space)")
    parser.add_argument("--dataset", choices=sorted(INPUT_SIZE), default="cifar10")
    parser.add_argument("--init_channels", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        mobile = load_mobile_genotype(args.genotype)
        if mobile is not None:
            result = summarize_mobile(mobile, args.dataset, args.width)
            where = f"width {args.width}"
        else:
            result = summarize(load_genotype(args.genotype), args.dataset, args.init_channels, args.layers)
            where = f"C={args.init_channels}, {args.layers} layers"
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.genotype} on {args.dataset} ({where}): "
              f"{result['params_m']:.3f}M parameters, {result['madds_m']:.1f}M multiply-adds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
