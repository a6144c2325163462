"""Run a mode: its stages in order through the one Searcher, checkpoints, then the artifacts."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from models.amp import set_amp
from models.network import count_params_m, set_channels_last
from models.summary import count_madds_m
from search.data import RunData, build_eval_transform, build_train_augment
from search.evaluate import evaluate
from search.export import export_model, write_json
from search.modes import Augment, Kind, Mode
from search.searcher import Paused, Searcher
from search.stage import Stage, build_stage, resume_stage
from search.state import RunState, save_checkpoint
from utils.config import config_to_dict
from utils.config_sections import RunConfig
from utils.logging import RunLogger
from utils.seeding import seed_everything
from utils.signals import StopSignals, Terminated


def _log_policy(logger: RunLogger, searcher: Searcher, data, epoch: int, every: int) -> None:
    """Policy scalars, its probability matrix, and every `every` epochs a grid of augmented samples."""
    policy = searcher.policy
    signal = searcher.history[-1].get("policy_signal")  # the epoch record's, computed once
    logger.scalars({"policy/entropy": float(policy.entropy()),
                    **({"policy/reward_split_half_r": signal} if signal is not None else {}),
                    **{f"policy/op/{k}": v for k, v in policy.op_probabilities().items()}}, epoch)
    matrix = policy.matrix_image()
    if matrix is not None:
        logger.image("policy/matrix", matrix, epoch)
    if every and epoch % every == 0:
        from torchvision.utils import make_grid
        n = min(16, len(data.train))
        x = torch.stack([data.train[i][0] for i in range(n)]).to(searcher.device).float() / 255
        with torch.no_grad():
            augmented, _ = policy(searcher.train_augment.pre(x))
        logger.image("policy/samples", make_grid(augmented.float().clamp(0, 1).cpu(), nrow=8), epoch)


def _log_epoch(logger: RunLogger, searcher: Searcher, record: dict) -> None:
    stage = record["stage"]
    net = searcher.net
    extra = ""
    if searcher.loop.searching:
        genotype = net.genotype()
        skips = genotype.skips()
        extra = f" skip={skips}"
        if "frozen_nodes" in record:
            extra += f" frozen={record['frozen_nodes']} accepted={record['accepted']}"
        logger.scalars({f"{stage}/skip_connections": skips}, record["epoch"])
        logger.text(f"{stage}/genotype", genotype.to_json(), record["epoch"])
        logger.scalars({f"arch/{name}/{k}": float(v) for name, t in net.arch_summary().items()
                        for k, v in enumerate(t.flatten().tolist())}, record["epoch"])
    logger.scalars({f"{stage}/train_loss": record["train_loss"], f"{stage}/train_top1": record["train_top1"],
                    f"{stage}/val_loss": record["val_loss"], f"{stage}/val_top1": record["val_top1"],
                    f"{stage}/lr": record["lr"], f"{stage}/wd": record["wd"]}, record["epoch"])
    if "policy_entropy" in record:
        extra += f" policy entropy {record['policy_entropy']:.3f}"
    if "policy_signal" in record:  # near 0: the per-pair rewards the policy follows do not repeat
        extra += f" (reward split-half r {record['policy_signal']:+.2f})"
    if searcher.weight_update.hyper is not None:
        extra += f" wd {record['wd']:.2e}"
    logger.record(**record)
    logger.info(f"{stage} epoch {record['epoch'] + 1}/{searcher.loop.epochs}: train loss {record['train_loss']:.4f} "
                f"top1 {record['train_top1']:.4f} | val loss {record['val_loss']:.4f} top1 {record['val_top1']:.4f} "
                f"| lr {record['lr']:.5f} ({record['seconds']:.1f}s){extra}")


def _checkpoint(cfg: RunConfig, mode: Mode, state: RunState, run_dir: Path, main: bool) -> None:
    """checkpoint.pt, written by the main process only (every rank holds the same state)."""
    if main:
        save_checkpoint(run_dir / "checkpoint.pt", mode.name, config_to_dict(cfg), state)


class Clock:
    """Seconds of this run, earlier sessions included."""

    def __init__(self, before: float):
        self.before, self.started = before, time.time()

    def __call__(self) -> float:
        return self.before + time.time() - self.started


def run_mode(cfg: RunConfig, mode: Mode, device: torch.device, run_dir: Path, logger: RunLogger,
             run_data: RunData, state: RunState | None = None, signals: StopSignals | None = None) -> dict:
    """All stages of `mode` from where `state` (a checkpoint's, or None for a new run) stands, then the
    artifacts. With `signals`, a signal during training stops after the current step with a checkpoint."""
    state = state or RunState()
    clock = Clock(state.elapsed)
    seed_everything(cfg.seed)
    stage = None
    for index in range(state.stage_index, len(mode.stages)):
        stage = build_stage(cfg, mode, index, state, device, logger, run_data)
        start_epoch = resume_stage(stage, state)
        state.carry = state.searcher = None
        logger.info(f"stage {index + 1}/{len(mode.stages)} ({stage.spec.kind.value}): "
                    f"{sum(p.numel() for p in stage.net.weight_parameters()) / 1e6:.3f}M weights, "
                    f"{len(stage.data.train)} train / {len(stage.data.val)} val / {len(stage.data.test)} test images")
        if stage.searcher.loop.epochs > start_epoch:
            _train_stage(cfg, mode, stage, state, clock, run_dir, logger, start_epoch, signals)
        else:
            _finish_stage(stage, state, clock, 0, [], logger)
            state.carry = stage.searcher.carry_state()
    if stage is None:  # interrupted after the last stage, during the artifacts: its carry is the model
        stage = build_stage(cfg, mode, len(mode.stages) - 1, state, device, logger, run_data)
        stage.searcher.load_carry_state(state.carry)
    final = stage.net.derive_model() if stage.spec.kind is Kind.CONTINUE else stage.net
    final = set_amp(set_channels_last(final, cfg.channels_last), "off")  # the ready model runs in float32
    final.recompute_cells = 0  # and stores what its backward needs, if a user trains it on
    metrics = _finish(cfg, mode, final, stage, state, device, run_dir, logger,
                      clock())
    state.finished = True
    _checkpoint(cfg, mode, state, run_dir, run_data.dist.main)
    return metrics


def _train_stage(cfg: RunConfig, mode: Mode, stage: Stage, state: RunState, clock: Clock, run_dir: Path,
                 logger: RunLogger, start_epoch: int, signals: StopSignals | None) -> None:
    """The stage's epochs from `start_epoch`; a signal meanwhile stops it after the current step (a
    mid-epoch checkpoint) or after the current epoch's checkpoint, then raises the signal's exception."""
    def on_epoch_end(searcher: Searcher, epoch: int, done: bool) -> None:
        _end_epoch(cfg, mode, stage, state, clock, run_dir, logger, epoch, done)
    if signals is None:
        stage.searcher.run(start_epoch, on_epoch_end)
        return
    dist = stage.searcher.dist
    with signals.deferred():
        try:
            # every rank stops after the same step: a signal that reached one process stops all
            stage.searcher.run(start_epoch, on_epoch_end, should_pause=lambda: dist.any(signals.requested()))
        except Paused as paused:
            if paused.mid_epoch:
                _save_paused(cfg, mode, stage, state, clock, run_dir, logger)
            signals.raise_pending()
            raise Terminated() from None  # another process's signal stopped this one
    if dist.any(signals.requested()):  # one that came after the last check: the last epoch's checkpoint holds all
        signals.raise_pending()
        raise Terminated()


def _save_paused(cfg: RunConfig, mode: Mode, stage: Stage, state: RunState, clock: Clock, run_dir: Path,
                 logger: RunLogger) -> None:
    """Checkpoint a stage paused inside an epoch: the resume continues with its next step."""
    searcher = stage.searcher
    position = searcher.position
    state.stage_index, state.epoch, state.searcher = stage.index, position["epoch"], searcher.state_dict()
    state.elapsed = clock()
    _checkpoint(cfg, mode, state, run_dir, stage.searcher.dist.main)
    searcher.weight_update.finish_pending()  # a background pass hands its threads back
    logger.info(f"stopped after step {position['batch']} of {stage.spec.kind.value} epoch {position['epoch'] + 1}; "
                "the checkpoint holds this position")


def _end_epoch(cfg: RunConfig, mode: Mode, stage: Stage, state: RunState, clock: Clock, run_dir: Path,
               logger: RunLogger, epoch: int, done: bool) -> None:
    """Log the epoch; at the stage's end record its result; checkpoint either way."""
    searcher = stage.searcher
    _log_epoch(logger, searcher, searcher.history[-1])
    if searcher.policy is not None:
        _log_policy(logger, searcher, stage.data, epoch, stage.sections.da.log_images_every)
    if done:
        _finish_stage(stage, state, clock, epoch + 1, searcher.history, logger)
        state.stage_index, state.epoch, state.searcher = stage.index + 1, 0, None
        state.carry = searcher.carry_state()
    else:
        state.stage_index, state.epoch, state.searcher = stage.index, epoch + 1, searcher.state_dict()
    state.elapsed = clock()
    _checkpoint(cfg, mode, state, run_dir, stage.searcher.dist.main)


def _finish_stage(stage: Stage, state: RunState, clock: Clock, epochs: int, history: list,
                  logger: RunLogger) -> None:
    """Record a finished stage: its epochs, history, genotype (search) and searched policy."""
    result = {"stage": stage.spec.kind.value, "epochs": epochs, "history": history}
    if stage.searcher.policy is not None and stage.spec.augment not in (Augment.NONE, Augment.REPLAY):
        state.policy_export = stage.searcher.policy.export()  # what a later stage replays
    if stage.spec.kind is Kind.SEARCH:
        genotype = stage.net.genotype()
        result["genotype"] = genotype.to_dict()
        state.search_seconds = clock()
        logger.info(f"search finished after {epochs} epochs; genotype {genotype.to_json()}")
    state.results.append(result)


def _finish(cfg: RunConfig, mode: Mode, model: torch.nn.Module, stage: Stage, state: RunState,
            device: torch.device, run_dir: Path, logger: RunLogger, elapsed: float) -> dict:
    """Evaluate the ready model once on val and test, then write every artifact."""
    data, loaders, sec = stage.data, stage.loaders, stage.sections
    model = model.to(device).eval()
    quirk = build_eval_transform(sec.dataset, sec.arch, data, device)
    dist = stage.searcher.dist
    val = evaluate(model, loaders["val"], device, transform=quirk, dist=dist)
    test = evaluate(model, loaders["test"], device, transform=quirk, dist=dist)  # the only use of the test split
    genotype = model.genotype
    madds = count_madds_m(model, data.image_size, data.channels)
    metrics = {"mode": mode.name, "dataset": sec.dataset.name, "val_top1": val["top1"], "val_loss": val["loss"],
               "test_top1": test["top1"], "test_loss": test["loss"], "test_images": test["count"],
               "params_m": count_params_m(model), "madds_m": madds,
               "search_epochs": next((r["epochs"] for r in state.results if r["stage"] == Kind.SEARCH.value), 0),
               "search_seconds": state.search_seconds, "total_seconds": elapsed,
               "skipped_steps": sum(r["history"][-1].get("skipped_steps", 0) for r in state.results if r["history"]),
               "genotype": genotype.to_dict(), "status": "complete"}
    if not dist.main:  # the main process writes every file
        return metrics
    write_json(genotype.to_dict(), run_dir / "genotype.json")
    policy = stage.searcher.policy
    if policy is not None:
        policy = policy.export()
    elif state.policy_export is not None:  # a continued training without the searched policy
        policy = {**state.policy_export, "applied_in_continued_training": False}
    else:
        policy = {"type": "none"}
    policy["searched"] = any(s.augment is not Augment.NONE for s in mode.stages)
    policy["train_augment"] = build_train_augment(sec.dataset, sec.arch, data).describe()
    write_json(policy, run_dir / "policy.json")
    write_json(_hparams(stage, state.history()), run_dir / "hparams.json")
    export_model(model, run_dir, (data.channels, data.image_size, data.image_size))
    write_json(metrics, run_dir / "metrics.json")
    if cfg.report:
        _report(run_dir, logger)
    logger.info(f"test top-1 {test['top1']:.4f} (val {val['top1']:.4f}), {metrics['params_m']:.3f}M params, "
                f"{madds:.1f}M multiply-adds")
    return metrics


def _hparams(stage: Stage, history: list[dict]) -> dict:
    """hparams.json: lr / wd per epoch and, where they were learned, per logged step and at the end."""
    hyper = stage.searcher.weight_update.hyper
    hparams = {"learned": hyper is not None,
               "trace": [{k: r[k] for k in ("stage", "epoch", "lr", "wd")} for r in history]}
    if hyper is not None:
        last = history[-1]["epoch"] if history else 0
        hparams.update(final=stage.searcher.weight_update.values(last), final_peak=hyper.values(), steps=[t for r in history for t in r.get("hyper_trace", [])])
    return hparams


def _report(run_dir: Path, logger: RunLogger) -> None:
    """The figures (search/report.py) into run_dir/figures and TensorBoard; they come after every
    artifact, so a failure here costs the figures only, and says so."""
    try:
        import matplotlib.image

        from search.report import write_report
        written, notes = write_report(run_dir)
        for path in written:
            image = torch.from_numpy(matplotlib.image.imread(path)[..., :3].copy()).permute(2, 0, 1)
            logger.image(f"report/{path.stem}", image, 0)
        logger.info(f"figures: {len(written)} in {run_dir / 'figures'}" + "".join(f"; {n}" for n in notes))
    except Exception as exc:  # noqa: BLE001 - the run's results are complete; only the figures are lost
        logger.info(f"figures not written: {type(exc).__name__}: {exc}")
