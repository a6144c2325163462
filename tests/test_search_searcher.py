"""The Searcher with a fake model, fake data and recording strategies: phase order, epochs, state."""
import pytest
import torch
from torch import nn

from hpo.schedule import CosineSchedule
from hpo.weight_update import WeightUpdate
from search.arch_step import ArchStep
from search.guard import NonFiniteError
from search.policy_step import PolicyStep
from search.searcher import LoopConfig, Paused, Searcher
from utils.logging import RunLogger


class FakeNet(nn.Module):
    """A linear classifier with the supernet hooks; it records its forwards and its backward."""

    def __init__(self, calls: list, stop_after: int | None = None):
        super().__init__()
        self.calls, self.stop_after, self.epochs_ended = calls, stop_after, 0
        self.linear = nn.Linear(12, 3)
        self.drop_path_prob = 0.0

    def forward_with_aux(self, x, with_aux=True, probe=False):
        self.calls.append("forward")
        logits = self.linear(x.flatten(1))
        if logits.requires_grad:
            logits.register_hook(lambda g: self.calls.append("backward"))
        return logits, None

    def forward(self, x, probe=False):
        return self.forward_with_aux(x, probe=probe)[0]

    def weight_parameters(self):
        return list(self.parameters())

    def arch_parameters(self):
        return []

    def on_epoch_start(self, epoch):
        self.calls.append(f"epoch_start {epoch}")

    def on_epoch_end(self, epoch):
        self.calls.append(f"epoch_end {epoch}")
        self.epochs_ended += 1
        return {}

    def should_stop(self):
        return self.stop_after is not None and self.epochs_ended >= self.stop_after


class Recording:
    """Mixin: record each hook's name, then do what the real strategy does."""

    def __init__(self, calls: list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = calls


class RecordingArchStep(Recording, ArchStep):
    def before_weights(self, *args):
        self.calls.append("arch.before_weights")

    def after_backward(self):
        self.calls.append("arch.after_backward")


class RecordingPolicyStep(Recording, PolicyStep):
    def augment(self, x):
        self.calls.append("policy.augment")
        return x, {"seen": x.shape[0]}

    def update(self, outcome, info):
        loss = outcome.per_sample_loss
        assert not loss.requires_grad and not outcome.logits.requires_grad and info == {"seen": loss.shape[0]}
        self.calls.append("policy.update")


class RecordingWeightUpdate(Recording, WeightUpdate):
    def step(self, step, val_batch):
        self.calls.append("weights.step")
        super().step(step, val_batch)

    def finish_pending(self):
        self.calls.append("weights.finish_pending")


class RecordingAugment(nn.Module):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def pre(self, x):
        self.calls.append("pre")
        return x

    def post(self, x):
        self.calls.append("post")
        return x


class Batches:
    """A loader of `n` uint8 batches of 4 images (3 x 2 x 2), fixed by the epoch."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def iterate(self, start=0):
        g = torch.Generator().manual_seed(self.epoch)
        for i in range(self.n):
            batch = torch.randint(0, 256, (4, 3, 2, 2), generator=g, dtype=torch.uint8), torch.randint(0, 3, (4,), generator=g)
            if i >= start:
                yield batch

    def __iter__(self):
        return self.iterate(0)


class Stream:
    def __init__(self):
        self.batches = Batches(1)

    def reset(self, key):
        pass

    def __next__(self):
        return next(iter(self.batches))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _searcher(calls, epochs=2, steps=3, stop_after=None, searching=True):
    torch.manual_seed(0)
    net = FakeNet(calls, stop_after)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    loop = LoopConfig(stage="search", stage_index=0, epochs=epochs, seed=0, log_every=10**6, searching=searching)
    return Searcher(net, RecordingWeightUpdate(calls, opt, CosineSchedule(0.1, 0.0, epochs, 0.0)),
                    RecordingArchStep(calls), RecordingPolicyStep(calls), RecordingAugment(calls), Batches(steps),
                    Stream(), Batches(1), torch.device("cpu"), loop, RunLogger(None, quiet=True))


STEP_ORDER = ["pre", "policy.augment", "post", "arch.before_weights", "forward", "policy.update", "backward",
              "weights.finish_pending", "arch.after_backward", "weights.step"]


def test_every_phase_runs_once_per_step_in_order():
    calls = []
    searcher = _searcher(calls)
    x, y = next(iter(searcher.train_loader))
    stats = searcher.train_step(x, y)
    assert calls == STEP_ORDER
    assert stats.shape == (3,) and stats[2] == 4 and 0 <= stats[1] <= 4


def test_an_epoch_is_its_steps_then_evaluation_and_a_record():
    calls = []
    searcher = _searcher(calls, epochs=2, steps=3)
    before = [p.detach().clone() for p in searcher.net.parameters()]
    record = searcher.train_epoch(0)
    assert calls[0] == "epoch_start 0"
    steps = [c for c in calls if c == "weights.step"]
    assert len(steps) == 3 and calls.count("forward") == 3 + 1  # three steps, one validation batch
    assert calls[-2:] == ["forward", "epoch_end 0"]  # validated before the hook may switch ops
    assert record["epoch"] == 0 and record["lr"] == 0.1 and 0 <= record["val_top1"] <= 1
    assert all(not torch.equal(a, b) for a, b in zip(before, searcher.net.parameters()))


def test_run_stops_when_the_supernet_says_so_and_reports_each_epoch():
    ended = []
    searcher = _searcher([], epochs=5, steps=1, stop_after=2)
    record = searcher.run(0, lambda s, epoch, done: ended.append((epoch, done)))
    assert ended == [(0, False), (1, True)] and record["stopped_early"]
    assert len(searcher.history) == 2


def test_a_stage_that_does_not_search_ignores_the_supernet_hooks():
    calls, ended = [], []
    searcher = _searcher(calls, epochs=3, steps=1, stop_after=1, searching=False)
    searcher.run(0, lambda s, epoch, done: ended.append(done))
    assert ended == [False, False, True] and not any(c.startswith("epoch_start") for c in calls)


def test_state_dict_round_trip_continues_identically():
    straight = _searcher([], epochs=3, steps=2)
    straight.run(0, lambda *a: None)

    first = _searcher([], epochs=3, steps=2)
    first.train_epoch(0)
    state = first.state_dict()
    resumed = _searcher([], epochs=3, steps=2)
    resumed.load_state_dict(state)
    assert resumed.step == 2 and resumed.history == first.history
    resumed.run(1, lambda *a: None)
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]


def test_a_pause_mid_epoch_holds_the_position_and_continues_identically():
    straight = _searcher([], epochs=2, steps=3)
    straight.run(0, lambda *a: None)

    first = _searcher([], epochs=2, steps=3)
    asked = []

    def after_the_fifth_step():
        asked.append(1)
        return len(asked) == 5
    with pytest.raises(Paused) as paused:
        first.run(0, lambda *a: None, should_pause=after_the_fifth_step)
    # asked after each step and after each epoch: the fifth ask follows the second step of epoch 2
    assert paused.value.mid_epoch and (first.position["epoch"], first.position["batch"]) == (1, 2)
    torch.manual_seed(123)  # whatever runs between the pause and the resume
    resumed = _searcher([], epochs=2, steps=3)
    resumed.load_state_dict(first.state_dict())
    resumed.run(1, lambda *a: None)
    assert resumed.step == straight.step == 6 and resumed.position is None
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]


def test_a_stop_asked_for_at_an_epoch_end_pauses_after_its_callback():
    searcher, ended = _searcher([], epochs=3, steps=2), []
    with pytest.raises(Paused) as paused:
        searcher.run(0, lambda s, epoch, done: ended.append(epoch), should_pause=lambda: bool(ended))
    assert not paused.value.mid_epoch and ended == [0] and searcher.position is None


def _poison(searcher, where):
    """Make the next step's loss ("loss") or weight gradient ("grad") non-finite."""
    linear = searcher.net.linear
    if where == "loss":
        handle = linear.register_forward_hook(lambda m, i, out: out * float("nan"))
    else:
        handle = linear.weight.register_hook(lambda g: g * float("inf"))
    return handle


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_a_non_finite_step_is_skipped_and_counted(where):
    calls = []
    searcher = _searcher(calls, steps=1)
    x, y = next(iter(searcher.train_loader))
    before = [p.detach().clone() for p in searcher.net.parameters()]
    handle = _poison(searcher, where)
    stats = searcher.train_step(x, y)
    handle.remove()
    assert stats.tolist() == [0.0, 0.0, 0.0] and searcher.guard.total == 1 and searcher.guard.in_row == 1
    assert "weights.step" not in calls and "arch.after_backward" not in calls
    assert ("policy.update" in calls) == (where == "grad")  # a non-finite loss teaches the policy nothing
    assert all(torch.equal(a, b) for a, b in zip(before, searcher.net.parameters()))
    searcher.train_step(x, y)  # a finite step resets the run of skips
    assert searcher.guard.in_row == 0 and searcher.guard.total == 1


def test_patience_steps_in_a_row_stop_the_stage_with_one_line():
    searcher = _searcher([], steps=5)
    searcher.guard.patience = 3
    handle = _poison(searcher, "loss")
    with pytest.raises(NonFiniteError, match="3 steps in a row had a non-finite loss"):
        searcher.train_epoch(0)
    handle.remove()
    assert searcher.guard.total == 3


def test_each_epoch_tells_the_network_its_share_of_the_global_batch():
    from utils.distributed import Distributed
    searcher = _searcher([])
    searcher.dist = Distributed(rank=1, world=2)  # no collective runs before the first step
    searcher.loop.drop_path_max = 0.3
    searcher.start_epoch(1)
    assert searcher.net.drop_path_shard == (1, 2) and searcher.net.drop_path_prob == pytest.approx(0.15)
