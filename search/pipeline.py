"""Run a mode: its stages in order through the one Searcher, checkpoints, then the artifacts."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from models.genotypes import Genotype, genotype_from_dict
from models.network import Network, count_params_m, set_channels_last
from models.summary import count_madds_m
from search.build import (Components, build_components, build_data, build_eval_transform, build_loaders,
                          build_network, build_searcher, build_supernet, enter_continue_stage, sections_for)
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


def _log_policy(logger: RunLogger, searcher: Searcher, data, epoch: int, every: int) -> None:
    """Policy scalars, its probability matrix, and every `every` epochs a grid of augmented samples."""
    policy = searcher.policy
    logger.scalars({"policy/entropy": float(policy.entropy()),
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
    if "policy_entropy" in record:
        extra += f" policy entropy {record['policy_entropy']:.3f}"
    if searcher.weight_update.hyper is not None:
        extra += f" wd {record['wd']:.2e}"
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
                                         "search_seconds": None, "carry": None, "searcher": None}
    elapsed_before = state["elapsed"]

    def elapsed() -> float:
        return elapsed_before + time.time() - started

    def save(**fields) -> None:
        blob = {"format": CHECKPOINT_FORMAT, "mode": mode.name, "config": config_to_dict(cfg),
                "results": state["results"], "elapsed": elapsed(), "search_seconds": state["search_seconds"]}
        atomic_save({**blob, **fields}, run_dir / "checkpoint.pt")

    seed_everything(cfg.seed)
    cache = DataCache(cfg)
    net, components = None, Components()
    for index, spec in enumerate(mode.stages):
        if index < state["stage_index"]:
            continue
        sec = sections_for(cfg, spec)
        data, loaders = cache.get(spec)
        genotype = genotype_from_dict(state["results"][-1]["genotype"]) if state["results"] else None
        # Building consumes the RNG: seed it per stage so a resumed run builds the same objects.
        torch.manual_seed(derive_seed(cfg.seed, index, 10**6))
        if spec.kind != "continue" or net is None:
            net = set_channels_last(_build_stage_net(cfg, mode, index, data, genotype).to(device), cfg.channels_last)
            # A continue stage carries the search stage's components; rebuilt here only on resume.
            source = mode.stages[index - 1] if spec.kind == "continue" else spec
            components = build_components(source, sections_for(cfg, source), data, device,
                                          replay=state.get("policy_export"))
        searcher = build_searcher(cfg, spec, index, net, data, loaders, device, logger, components)
        if spec.kind == "continue":
            if state.get("carry") is not None:  # resuming at the start of the continue stage
                searcher.load_carry_state(state["carry"])
            net.freeze_arch()
            enter_continue_stage(components, sec)
        start_epoch = 0
        if state.get("searcher") is not None:  # resuming inside this stage
            searcher.load_state_dict(state["searcher"])
            start_epoch = state["epoch"]
        state["carry"] = state["searcher"] = None
        logger.info(f"stage {index + 1}/{len(mode.stages)} ({spec.kind}): "
                    f"{sum(p.numel() for p in net.weight_parameters()) / 1e6:.3f}M weights, "
                    f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test images")

        def finish_stage(epochs: int, history: list) -> None:
            result = {"stage": spec.kind, "epochs": epochs, "history": history}
            if components.policy is not None and spec.augment not in ("none", "replay"):
                state["policy_export"] = components.policy.export()  # what a later stage replays
            if spec.kind == "search":
                result["genotype"] = net.genotype().to_dict()
                state["search_seconds"] = elapsed()
                logger.info(f"search finished after {epochs} epochs; genotype {net.genotype().to_json()}")
            state["results"].append(result)

        def on_epoch_end(s: Searcher, epoch: int, done: bool) -> None:
            _log_epoch(logger, s, s.history[-1])
            if s.policy is not None:
                _log_policy(logger, s, data, epoch, sec.da.log_images_every)
            if done:
                finish_stage(epoch + 1, s.history)
                save(stage_index=index + 1, epoch=0, searcher=None, carry=s.carry_state(),
                     policy_export=state.get("policy_export"))
            else:
                save(stage_index=index, epoch=epoch + 1, searcher=s.state_dict(), carry=None,
                     policy_export=state.get("policy_export"))

        if searcher.loop.epochs > start_epoch:
            searcher.run(start_epoch, on_epoch_end)
        else:
            finish_stage(0, [])

    final = net.derive_model() if mode.stages[-1].kind == "continue" else net
    final = set_channels_last(final, cfg.channels_last)
    return _finish(cfg, mode, final, components, cache.get(mode.stages[-1]), state, device, run_dir, logger,
                   elapsed())


def _finish(cfg: RunConfig, mode: Mode, model: Network, components: Components, data_loaders, state: dict,
            device: torch.device, run_dir: Path, logger: RunLogger, elapsed: float) -> dict:
    """Evaluate the ready model once on val and test, then write every artifact."""
    data, loaders = data_loaders
    model = model.to(device).eval()
    sec = sections_for(cfg, mode.stages[-1])
    quirk = build_eval_transform(sec.dataset, sec.arch, data, device)
    val = evaluate(model, loaders["val"], device, transform=quirk)
    test = evaluate(model, loaders["test"], device, transform=quirk)  # the only use of the test split
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
    policy = components.policy.export() if components.policy is not None else {"type": "none"}
    policy["searched"] = any(s.augment != "none" for s in mode.stages)
    policy["train_augment"] = build_train_augment_description(cfg, mode, data)
    write_json(policy, run_dir / "policy.json")
    hparams = {"learned": components.hyper is not None,
               "trace": [{k: r[k] for k in ("stage", "epoch", "lr", "wd")} for r in history]}
    if components.hyper is not None:
        hparams.update(final=components.hyper.values(), steps=[t for r in history for t in r.get("hyper_trace", [])])
    write_json(hparams, run_dir / "hparams.json")
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
