"""Joint search of architecture, augmentation policy and hyper-parameters in one training run.

    python search_darts.py --conf_path conf/demo/digits.json --Running ista_single_nor

The run folder save_root/<dataset>_<mode>[_<save_name>]/ ends with a ready model (model.pt2),
its genotype, metrics and TensorBoard logs. Bad input exits with code 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UserError(f"{message} (see --help)")


def make_parser() -> argparse.ArgumentParser:
    """The CLI flags (modes listed in the epilog)."""
    from search.modes import modes_help
    parser = _Parser(prog="search_darts.py", description=__doc__.split("\n")[0], allow_abbrev=False,
                     epilog="modes (--Running):\n" + modes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf_path", help="JSON config (DHA key schema); optional with --resume")
    parser.add_argument("--Running", "--running", dest="mode", help="the mode to run (listed below)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (JSON value, else a string); repeatable")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint.pt")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--dry_run", action="store_true",
                        help="validate the config, build data and model, run one forward pass, print a summary, exit")
    return parser


def _run_dir(cfg, mode_name: str) -> Path:
    base = f"{cfg.dataset.name}_{mode_name}" + (f"_{cfg.save_name}" if cfg.save_name else "")
    path = Path(cfg.save_root) / base
    n = 2
    while path.exists():  # never overwrite an earlier run
        path = Path(cfg.save_root) / f"{base}_{n}"
        n += 1
    return path


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, run; returns the exit code (2 for bad input)."""
    try:
        return _main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


def _load(args: argparse.Namespace):
    """(config, mode, state, notices): from the config file, or from the checkpoint with --resume."""
    from search.modes import get_mode
    from search.state import read_checkpoint
    from utils.config import config_from_dict, load_config

    if args.resume:
        saved_mode, saved_config, state = read_checkpoint(Path(args.resume) / "checkpoint.pt")
        if args.mode and args.mode != saved_mode:
            raise UserError(f"{args.resume} is a '{saved_mode}' run, not '{args.mode}'")
        cfg, notices = config_from_dict(saved_config, args.overrides)
        return cfg, get_mode(saved_mode), state, notices
    if not args.conf_path:
        raise UserError("--conf_path is required (or --resume RUN_DIR)")
    if not args.mode:
        raise UserError("--Running MODE is required; see --help for the modes")
    mode = get_mode(args.mode)  # an unknown mode fails before the config is even read
    cfg, notices = load_config(args.conf_path, args.overrides)
    return cfg, mode, None, notices


def _main(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    import json

    import torch

    from search.stage import check_inputs
    from utils.config import config_to_dict
    from utils.device import resolve_device

    cfg, mode, state, notices = _load(args)
    if notices:
        print(f"note: ignoring keys of the original DHA configs that this tool does not use: {', '.join(notices)}",
              file=sys.stderr)
    device = resolve_device(args.device, cfg.cudnn_benchmark, cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    run_data = check_inputs(cfg, mode)  # before anything is written; the run reuses the data
    if args.dry_run:
        return _dry_run(cfg, mode, device, run_data)

    from search.pipeline import run_mode
    from utils.checkpoint import atomic_write_text
    from utils.logging import RunLogger

    run_dir = Path(args.resume) if args.resume else _run_dir(cfg, mode.name)
    logger = RunLogger(run_dir)
    atomic_write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n", run_dir / "config.json")
    logger.info(f"{'resuming' if state else 'starting'} {mode.name} on {device} in {run_dir}")
    try:
        metrics = run_mode(cfg, mode, device, run_dir, logger, run_data, state)
    finally:
        logger.close()
    print(f"done: test top-1 {metrics['test_top1']:.4f}; ready model: {run_dir / 'model.pt2'}")
    print(f"run directory: {run_dir}")
    return 0


def _dry_run(cfg, mode, device, run_data) -> int:
    import torch

    from search.stage import build_stage, describe_mode
    from search.state import RunState
    from utils.logging import RunLogger

    for line in run_data.summary():
        print(line)
    stage = build_stage(cfg, mode, 0, RunState(), device, RunLogger(None, quiet=True), run_data)
    net, data = stage.net.eval(), stage.data
    x = torch.stack([data.train[i][0] for i in range(min(2, len(data.train)))]).to(device).float() / 255
    with torch.no_grad():
        logits = net(x)
    weights = sum(p.numel() for p in net.weight_parameters())
    arch = sum(p.numel() for p in net.arch_parameters())
    print(f"model: {type(net).__name__}, {weights / 1e6:.3f}M weights, {arch} architecture parameters; "
          f"forward {tuple(x.shape)} -> {tuple(logits.shape)}")
    for line in describe_mode(mode, cfg):
        print(line)
    print("dry run ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
