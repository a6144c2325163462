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
from utils.signals import StopSignals, Terminated

# What a resumed run may change with --set: how it reports and runs, never what it computes.
RESUMABLE_KEYS = {"progress", "log_every", "report", "cudnn_benchmark", "dataset.workers", "tune_dataset.workers",
                  "dataset.pin", "tune_dataset.pin"}


def _flat(config: dict) -> dict:
    return {f"{k}.{sub}" if isinstance(v, dict) else k: subv
            for k, v in config.items() for sub, subv in (v.items() if isinstance(v, dict) else [(None, v)])}


def check_resume_overrides(saved: dict, cfg) -> None:
    """Refuse a resume whose overrides change the network, the data or the results, naming the keys."""
    from utils.config import config_from_dict, config_to_dict
    before, after = _flat(config_to_dict(config_from_dict(saved)[0])), _flat(config_to_dict(cfg))
    refused = sorted(k for k in after if after[k] != before.get(k) and k not in RESUMABLE_KEYS)
    if refused:
        raise UserError(f"--resume cannot change {', '.join(refused)}: the checkpoint was made with other values "
                        f"(a resume may change only {', '.join(sorted(RESUMABLE_KEYS))})")


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


def claim_run_dir(cfg, mode_name: str) -> Path:
    """Create save_root/<dataset>_<mode>[_<save_name>][_<n>]: a folder no other run has (mkdir is
    atomic, so two runs started together never share one); an unusable save_root is one line."""
    base = f"{cfg.dataset.name}_{mode_name}" + (f"_{cfg.save_name}" if cfg.save_name else "")
    root = Path(cfg.save_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10**6):
            path = root / (base if n == 1 else f"{base}_{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:  # never overwrite an earlier run
                continue
    except OSError as exc:
        raise UserError(f"cannot create the run folder under save_root '{root}': {exc.strerror or exc}") from None
    raise UserError(f"save_root '{root}' already holds a million runs named {base}")


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, run; returns the exit code (2 for bad input)."""
    from utils.distributed import teardown
    try:
        return _main(argv)
    except UserError as exc:
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the input held
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a run folder exists: nothing to resume
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        teardown()


def _load(args: argparse.Namespace):
    """(config, mode, state, notices): from the config file, or from the checkpoint with --resume."""
    from search.modes import get_mode
    from search.state import read_checkpoint
    from utils.config import config_from_dict, load_config

    if args.resume:
        if args.conf_path:
            raise UserError("--conf_path is not read with --resume: the run's config is in its checkpoint "
                            "(change what may change with --set)")
        saved_mode, saved_config, state = read_checkpoint(Path(args.resume) / "checkpoint.pt")
        if args.mode and args.mode != saved_mode:
            raise UserError(f"{args.resume} is a '{saved_mode}' run, not '{args.mode}'")
        cfg, notices = config_from_dict(saved_config, args.overrides)
        check_resume_overrides(saved_config, cfg)
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
    import torch

    from search.stage import check_inputs
    from utils.device import resolve_device
    from utils.distributed import setup

    cfg, mode, state, notices = _load(args)
    dist, device_name = setup(args.device)  # one process, or this one of a torchrun launch
    device = resolve_device(device_name, cfg.cudnn_benchmark, cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    if state is not None and state.finished:
        print(f"{args.resume} is finished; nothing to do (ready model: {Path(args.resume) / 'model.pt2'})")
        return 0
    run_data = check_inputs(cfg, mode, dist)  # before anything is written; the run reuses the data
    note = (f"note: ignoring keys of the original DHA configs that this tool does not use: {', '.join(notices)}"
            if notices else "")
    if args.dry_run:
        return _dry_run(cfg, mode, device, run_data, note)

    from search.pipeline import run_mode

    run_dir, logger = _open_run_dir(args, cfg, mode, state, dist)
    logger.info(f"{'resuming' if state else 'starting'} {mode.name} on {device} in {run_dir}")
    if note:  # after every check: an error is always one line
        print(note, file=sys.stderr)
        logger.info(note)
    try:
        with StopSignals().installed() as signals:
            metrics = run_mode(cfg, mode, device, run_dir, logger, run_data, state, signals)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if dist.main:
            print(f"{what}; the last checkpoint is kept: continue with  python search_darts.py --resume {run_dir}",
                  file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        logger.close()
    if dist.main:
        print(f"done: test top-1 {metrics['test_top1']:.4f}; ready model: {run_dir / 'model.pt2'}")
        print(f"run directory: {run_dir}")
    return 0


def _open_run_dir(args: argparse.Namespace, cfg, mode, state, dist):
    """(run folder, logger): the main process claims (or tidies, on resume) the folder and writes its
    config.json; the others learn where it is and log nothing. A failure is every process's UserError."""
    import json

    from search.state import tidy_for_resume
    from utils.checkpoint import atomic_write_text
    from utils.config import config_to_dict
    from utils.logging import RunLogger

    outcome = None
    if dist.main:
        try:
            run_dir = Path(args.resume) if args.resume else claim_run_dir(cfg, mode.name)
            try:
                if state is not None:
                    tidy_for_resume(run_dir, state)
                logger = RunLogger(run_dir)
                atomic_write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n", run_dir / "config.json")
            except OSError as exc:
                raise UserError(f"cannot write in the run folder '{run_dir}': {exc.strerror or exc}") from None
            outcome = ("ok", str(run_dir))
        except UserError as exc:
            outcome = ("error", str(exc))
    status, value = dist.broadcast(outcome)
    if status == "error":
        raise UserError(value)
    return Path(value), (logger if dist.main else RunLogger(None, quiet=True))


def _dry_run(cfg, mode, device, run_data, note: str) -> int:
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
    if note:
        print(note, file=sys.stderr)
    print("dry run ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
