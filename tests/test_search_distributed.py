"""Several processes (gloo on CPU): every rank ends a search with the same state, and that state is the
one a single process reaches with the ranks' batches put together."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config

BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search_state(mode_name: str, batch: int, sets: dict, out: str) -> dict:
    """EPOCHS[mode_name] epochs of stage 0 of `mode_name` (STEPS[mode_name] steps each, validation and the supernet's
    epoch hook included) in this process, as one rank of whatever group it joined, in float64; returns the
    searcher's state."""
    from search.modes import get_mode
    from search.stage import build_stage, check_inputs
    from search.state import RunState
    from utils.config import config_from_dict
    from utils.distributed import setup
    from utils.logging import RunLogger

    torch.set_num_threads(1)
    raw = tiny_config(out, dataset={"batch_size": batch},
                      train={"epochs": EPOCHS[mode_name], "max_steps_per_epoch": STEPS[mode_name]}, **sets)
    cfg, _ = config_from_dict(raw)
    dist, _ = setup("cpu")
    mode = get_mode(mode_name)
    run_data = check_inputs(cfg, mode, dist)
    # In float32 this tiny ReLU network is chaotic: a weight 2e-7 away (rounding) turns a stem output of
    # 4e-7 into -3e-8, and the one gradient path that ReLU opens moves a BatchNorm's gradient by 2%;
    # whether a run meets such a kink is chance. In float64 rounding is 1e-16 and no kink is that close.
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        stage = build_stage(cfg, mode, 0, RunState(), torch.device("cpu"), RunLogger(None, quiet=True), run_data)
        for epoch in range(EPOCHS[mode_name]):
            stage.searcher.train_epoch(epoch)
        return stage.searcher.state_dict()
    finally:
        torch.set_default_dtype(dtype)


def _join(rank: int, world: int, port: int) -> None:
    """torchrun's environment for this spawned process (setup reads it)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))


def _rank(rank: int, world: int, port: int, mode_name: str, sets: dict, out: str) -> None:
    _join(rank, world, port)
    from utils.distributed import teardown
    try:
        torch.save(_search_state(mode_name, BATCH, sets, out), os.path.join(out, f"rank{rank}.pt"))
    finally:
        teardown()


def _tensors(state, prefix=""):
    """Every tensor of a nested state, by path."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{prefix}/{i}")


MODES = {
    # joint ISTA search + pair policy (adversarial) + learned lr / wd: DHA
    "ista_single_doal": {"da": {"objective": "adversarial"}, "hpo": {"every": 1}},  # a hypergradient every step
    # the same with the generalization objective (the validation gradient at the classifier)
    "ista_single_da": {"da": {"objective": "generalization"}},
    # DARTS, unrolled second order (every gradient of the formula averaged)
    "darts": {"train_architecture": {"order": 2}},
}
# DHA with every cell run again in backward, where the synced BatchNorm all-reduces once more
# and DHA with the learned lr judged by the step taken (its validation gradients do not wait a step)
CASES = {**{name: (name, sets) for name, sets in MODES.items()},
         "ista_single_doal recomputed": ("ista_single_doal", {**MODES["ista_single_doal"], "recompute_cells": -1}),
         "ista_single_doal one-step look-ahead": ("ista_single_doal", {**MODES["ista_single_doal"],
                                                                        "hpo": {"every": 1, "lookahead": "step"}})}
# Two epochs where an epoch's end changes the search (ISTA's recovery and freezing); DARTS' second-order
# step is the slow one (every BatchNorm of its four passes all-reduces), its epoch end only reads alpha,
# and its one step already runs every term of the formula.
EPOCHS = {"ista_single_doal": 2, "ista_single_da": 2, "darts": 1}
STEPS = {"ista_single_doal": 2, "ista_single_da": 2, "darts": 1}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_hold_the_same_state_as_one_with_the_doubled_batch(case, tmp_path, torch_threads):
    out = str(tmp_path)
    mode_name, sets = CASES[case]
    mp.spawn(_rank, args=(2, _free_port(), mode_name, sets, out), nprocs=2, join=True)
    ranks = [dict(_tensors(torch.load(tmp_path / f"rank{r}.pt", weights_only=False))) for r in range(2)]
    single = dict(_tensors(_search_state(mode_name, 2 * BATCH, sets, out)))
    assert ranks[0].keys() == ranks[1].keys() == single.keys()
    moved = 0
    for path, t in single.items():
        # Bitwise between the ranks: each step averages the same numbers on both.
        assert torch.equal(ranks[0][path], ranks[1][path]), path
        if not t.is_floating_point():
            assert torch.equal(ranks[0][path], t), path
            continue
        # Against one process: the same sums in another order (a mean of two half-batch means, batch
        # statistics all-reduced in two parts) differ by float64 rounding, ~1e-16 of a tensor's scale per
        # operation, which these steps carry to ~1e-13 of it (measured); bounded on the tensor's scale,
        # since an element near zero differs by more of itself. One amplifier: Adam divides by
        # sqrt(v) + 1e-8, so a gradient that is zero in exact arithmetic (a policy pair not drawn: its
        # score-function terms sum the mean-free advantages) steps by lr * (its rounding residue) / 1e-8;
        # the policy's theta ends ~1e-10 of its scale apart (measured). A missing average is 1e-3 or more.
        scale = t.abs().max().item()
        gap = (ranks[0][path] - t).abs().max().item()
        assert gap <= 1e-8 * scale + 1e-15, f"{path}: {gap:.3g} apart at scale {scale:.3g}"
        moved += scale > 0
    assert moved > 10


def _primitives(rank: int, port: int, out: str) -> None:
    _join(rank, 2, port)
    from utils.distributed import setup, summed, teardown
    dist, device = setup("cpu")
    results = {"device": device, "main": dist.main}
    part = torch.arange(3.0) + 10 * rank
    results["gather"] = dist.gather(part)
    results["shard"] = dist.shard(torch.arange(6.0))
    results["average"] = dist.average([torch.full((2,), float(rank)), None, torch.tensor([2.0 * rank], dtype=torch.float64)])
    results["any"] = (dist.any(rank == 1), dist.any(False))
    x = torch.tensor([1.0 + rank], requires_grad=True)
    (summed(x) * (rank + 1)).sum().backward()  # d/dx_r of sum_r' (r' + 1) (x_0 + x_1) = 1 + 2
    results["summed_grad"] = x.grad
    dist.check_same([torch.ones(3)], "ones")
    try:
        dist.check_same([torch.tensor([float(rank)])], "ranks")
        results["check_same"] = "passed"
    except RuntimeError as exc:
        results["check_same"] = str(exc)
    results["broadcast"] = dist.broadcast(f"from {rank}")
    torch.save(results, os.path.join(out, f"prim{rank}.pt"))
    teardown()


def test_the_collectives_average_gather_split_and_check(tmp_path):
    mp.spawn(_primitives, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"prim{r}.pt", weights_only=False) for r in range(2))
    assert r0["main"] and not r1["main"] and r0["device"] == "cpu"
    for r in (r0, r1):
        assert torch.equal(r["gather"], torch.tensor([0.0, 1, 2, 10, 11, 12]))  # in rank order
        assert torch.equal(r["average"][0], torch.full((2,), 0.5)) and r["average"][1] is None
        assert r["average"][2].dtype == torch.float64 and r["average"][2].item() == 1.0
        assert r["any"] == (True, False)
        assert r["summed_grad"].item() == 3.0
        assert r["check_same"] == "the processes hold different ranks: 1 values differ"
        assert r["broadcast"] == "from 0"
    assert torch.equal(r0["shard"], torch.tensor([0.0, 1, 2])) and torch.equal(r1["shard"], torch.tensor([3.0, 4, 5]))


def test_a_validation_split_smaller_than_the_global_batch_is_one_line_before_any_collective(tmp_path):
    from search.modes import get_mode
    from search.stage import check_inputs
    from utils.config import config_from_dict
    from utils.distributed import Distributed
    from utils.errors import UserError
    cfg, _ = config_from_dict(tiny_config(str(tmp_path), dataset={"batch_size": 24}))  # 64 val images < 24 x 4
    with pytest.raises(UserError, match=r"validation split has 64 images.*batch_size=24 x 4 processes"):
        check_inputs(cfg, get_mode("ista_single_doal"), Distributed(rank=1, world=4))
    assert not any(tmp_path.iterdir())  # nothing written
