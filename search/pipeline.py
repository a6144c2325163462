"""Run a mode: its stages in order through the one Searcher, checkpoints, then the artifacts."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from models.genotypes import Genotype, genotype_from_dict
from models.network import Network, count_params_m
from models.summary import count_madds_m
from search.build import (build_data, build_loaders, build_network, build_searcher, build_supernet,
                          sections_for)
from search.evaluate import evaluate
from search.export import export_model, write_json
from search.modes import Mode
from search.searcher import Searcher
from utils.checkpoint import atomic_save
from utils.config import RunConfig, config_to_dict
from utils.logging import RunLogger
from utils.seeding import derive_seed, seed_everything

CHECKPOINT_FORMAT = 1


class DataCache:
    """Builds each distinct (dataset, input size) once per run."""

    def __init__(self, cfg: RunConfig):
        self.cfg, self._data = cfg, {}

    def get(self, spec) -> tuple:
        sec = sections_for(self.cfg, spec)
        key = (repr(sec.dataset), sec.arch.input_size)
        if key not in self._data:
            data = build_data(sec.dataset, sec.arch, self.cfg.seed)
            self._data[key] = (data, build_loaders(data, sec.dataset, self.cfg.seed))
        return self._data[key]


def _log_epoch(logger: RunLogger, searcher: Searcher, record: dict) -> None:
    stage = record["stage"]
    net = searcher.net
    extra = ""
    if searcher.loop.searching:
        genotype = net.genotype()
        skips = genotype.count("skip_connect")
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
    logger.record(**record)
    logger.info(f"{stage} epoch {record['epoch'] + 1}/{searcher.loop.epochs}: train loss {record['train_loss']:.4f} "
                f"top1 {record['train_top1']:.4f} | val loss {record['val_loss']:.4f} top1 {record['val_top1']:.4f} "
                f"| lr {record['lr']:.5f} ({record['seconds']:.1f}s){extra}")


def _build_stage_net(cfg: RunConfig, mode: Mode, index: int, data, genotype: Genotype | None) -> torch.nn.Module:
    """The network a stage trains (fresh weights; a checkpoint or the previous stage fills them)."""
    spec = mode.stages[index]
    sec = sections_for(cfg, spec)
    if spec.kind == "search":
        size_arch = sections_for(cfg, mode.stages[-1]).arch if mode.stages[-1].kind == "retrain" else sec.arch
        return build_supernet(spec.space, sec.arch, data, size_arch)
    if spec.kind == "continue":
        search = mode.stages[index - 1]
        return build_supernet(search.space, sections_for(cfg, search).arch, data, sec.arch)
    return build_network(genotype, sec.arch, data)


def run_mode(cfg: RunConfig, mode: Mode, device: torch.device, run_dir: Path, logger: RunLogger,
             resume: dict | None = None) -> dict:
    """All stages of `mode`, then export. `resume` is a checkpoint dict written by this function."""
    started = time.time()
    state = dict(resume) if resume else {"stage_index": 0, "epoch": 0, "results": [], "elapsed": 0.0,
                                         "search_seconds": None, "net": None, "searcher": None}
    elapsed_before = state["elapsed"]

    def elapsed() -> float:
        return elapsed_before + time.time() - started

    def save(**fields) -> None:
        blob = {"format": CHECKPOINT_FORMAT, "mode": mode.name, "config": config_to_dict(cfg),
                "results": state["results"], "elapsed": elapsed(), "search_seconds": state["search_seconds"]}
        atomic_save({**blob, **fields}, run_dir / "checkpoint.pt")

    seed_everything(cfg.seed)
    cache = DataCache(cfg)
    net = None
    for index, spec in enumerate(mode.stages):
        if index < state["stage_index"]:
            continue
        data, loaders = cache.get(spec)
        genotype = genotype_from_dict(state["results"][-1]["genotype"]) if state["results"] else None
        # Building consumes the RNG: seed it per stage so a resumed run builds the same objects.
        torch.manual_seed(derive_seed(cfg.seed, index, 10**6))
        if net is None or spec.kind != "continue":
            net = _build_stage_net(cfg, mode, index, data, genotype).to(device)
            if spec.kind == "continue" and state.get("net") is not None:  # resuming at its start
                net.load_state_dict(state["net"])
        if spec.kind == "continue":
            net.freeze_arch()
        searcher = build_searcher(cfg, spec, index, net, data, loaders, device, logger)
        start_epoch = 0
        if state.get("searcher") is not None:  # resuming inside this stage
            searcher.load_state_dict(state["searcher"])
            start_epoch = state["epoch"]
        state["net"] = state["searcher"] = None
        logger.info(f"stage {index + 1}/{len(mode.stages)} ({spec.kind}): "
                    f"{sum(p.numel() for p in net.weight_parameters()) / 1e6:.3f}M weights, "
                    f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test images")

        def finish_stage(epochs: int, history: list) -> None:
            result = {"stage": spec.kind, "epochs": epochs, "history": history}
            if spec.kind == "search":
                result["genotype"] = net.genotype().to_dict()
                state["search_seconds"] = elapsed()
                logger.info(f"search finished after {epochs} epochs; genotype {net.genotype().to_json()}")
            state["results"].append(result)

        def on_epoch_end(s: Searcher, epoch: int, done: bool) -> None:
            _log_epoch(logger, s, s.history[-1])
            if done:
                finish_stage(epoch + 1, s.history)
                save(stage_index=index + 1, epoch=0, searcher=None, net=s.net.state_dict())
            else:
                save(stage_index=index, epoch=epoch + 1, searcher=s.state_dict(), net=None)

        if searcher.loop.epochs > start_epoch:
            searcher.run(start_epoch, on_epoch_end)
        else:
            finish_stage(0, [])

    final = net.derive_model() if mode.stages[-1].kind == "continue" else net
    return _finish(cfg, mode, final, cache.get(mode.stages[-1]), state, device, run_dir, logger, elapsed())


def _finish(cfg: RunConfig, mode: Mode, model: Network, data_loaders, state: dict, device: torch.device,
            run_dir: Path, logger: RunLogger, elapsed: float) -> dict:
    """Evaluate the ready model once on val and test, then write every artifact."""
    data, loaders = data_loaders
    model = model.to(device).eval()
    val = evaluate(model, loaders["val"], device)
    test = evaluate(model, loaders["test"], device)  # the only use of the test split
    genotype = model.genotype
    image_shape = (data.channels, data.image_size, data.image_size)
    madds = count_madds_m(model, data.image_size, data.channels)
    history = [r for result in state["results"] for r in result["history"]]
    metrics = {"mode": mode.name, "dataset": data_name(cfg, mode), "val_top1": val["top1"], "val_loss": val["loss"],
               "test_top1": test["top1"], "test_loss": test["loss"], "test_images": test["count"],
               "params_m": count_params_m(model), "madds_m": madds,
               "search_epochs": state["results"][0]["epochs"] if state["results"] else 0,
               "search_seconds": state["search_seconds"], "total_seconds": elapsed,
               "genotype": genotype.to_dict()}
    write_json(genotype.to_dict(), run_dir / "genotype.json")
    write_json({"type": "fixed", "searched": False,
                "train_augment": build_train_augment_description(cfg, mode, data)}, run_dir / "policy.json")
    write_json({"learned": False, "trace": [{k: r[k] for k in ("stage", "epoch", "lr", "wd")} for r in history]},
               run_dir / "hparams.json")
    export_model(model, run_dir, image_shape)
    metrics["total_seconds"] = elapsed
    write_json(metrics, run_dir / "metrics.json")
    logger.info(f"test top-1 {test['top1']:.4f} (val {val['top1']:.4f}), {metrics['params_m']:.3f}M params, "
                f"{madds:.1f}M multiply-adds")
    return metrics


def data_name(cfg: RunConfig, mode: Mode) -> str:
    """Dataset of the final stage."""
    return sections_for(cfg, mode.stages[-1]).dataset.name


def build_train_augment_description(cfg: RunConfig, mode: Mode, data) -> dict:
    """The fixed augmentation the final stage trained with."""
    from search.build import build_train_augment
    sec = sections_for(cfg, mode.stages[-1])
    return build_train_augment(sec.dataset, sec.arch, data).describe()
