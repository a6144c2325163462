"""A seeded fuzz of configs and command lines: every case ends in a dry run that passes or in one
line on stderr with exit 2; never a traceback, never a file written."""
import dataclasses
import json
import random
import typing

import search_darts
from search.modes import MODES
from tests.conftest import tiny_config
from utils.config_sections import RunConfig

CASES = 320
RUNNABLE = sorted(MODES)
# Values a hurried user or a broken script writes. Sizes stay small when valid, so that a passing
# dry run is cheap; `download` is never set (a network fetch is not a unit test's business).
NASTY = [None, True, False, 0, 1, -1, 2, 3, 0.5, -0.5, 1e-12, 1e308, float("nan"), float("inf"), -float("inf"),
         2**31, 2**64, int("9" * 30), "", "x", "../x", "a/b", "..", "DARTS_V2", "none", "\n", [], [0.5], [1, 2, 3],
         [float("nan")], {}, {"a": 1}, [[[]]]]
SKIPPED_KEYS = {"dataset.download", "tune_dataset.download"}


def _keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(RunConfig):
        tp = typing.get_type_hints(RunConfig)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(tp) if f"{f.name}.{g.name}" not in SKIPPED_KEYS]
        else:
            keys.append(f.name)
    return keys + ["bogus", "dataset.bogus", "train.w_lrr"]


def _near_default(rng: random.Random, key: str):
    """A value of the key's own type near its default (these reach deeper than type errors)."""
    section, _, name = key.rpartition(".")
    default = getattr(getattr(RunConfig(), section) if section else RunConfig(), name, None)
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        scaled = default * rng.choice((0, 0.5, 2, 3, -1))
        return type(default)(scaled)
    return rng.choice(NASTY)


def _set(config: dict, key: str, value) -> None:
    *sections, last = key.split(".")
    node = config
    for part in sections:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[last] = value


def _case(rng: random.Random, keys: list[str], conf_dir, index: int) -> list[str]:
    config = tiny_config("runs", train_architecture={"steps": 2}, tune_architecture={"genotype": "DARTS_V2"})
    overrides = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        key = rng.choice(keys)
        value = _near_default(rng, key) if rng.random() < 0.5 else rng.choice(NASTY)
        if rng.random() < 0.5:
            _set(config, key, value)
        else:
            overrides += ["--set", f"{key}={json.dumps(value)}" if rng.random() < 0.8 else f"{key}={value}"]
    path = conf_dir / f"{index}.json"
    path.write_text(json.dumps(config))
    mode = rng.choice(RUNNABLE) if rng.random() < 0.9 else rng.choice(["nope", "", "DARTS"])
    argv = ["--conf_path", str(path), "--Running", mode, "--dry_run", "--device", "cpu", *overrides]
    roll = rng.random()
    if roll < 0.05:
        argv = [a for a in argv if a != "--dry_run"] + ["--resume", "missing_run"]
    elif roll < 0.1:
        argv.append(rng.choice(["--bogus", "--device=tpu", "--set", "--Running"]))
    return argv


def test_generated_configs_and_command_lines_fail_cleanly_or_dry_run(tmp_path, monkeypatch, capsys):
    conf_dir, work = tmp_path / "confs", tmp_path / "work"
    conf_dir.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)  # relative save_root / dataset roots would land here
    rng, keys = random.Random(20261202), _keys()
    outcomes = {0: 0, 2: 0}
    for index in range(CASES):
        argv = _case(rng, keys, conf_dir, index)
        code = search_darts.main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
        else:
            assert "dry run ok" in out, (argv, out)
        assert not any(work.iterdir()), (argv, sorted(work.rglob("*")))
        outcomes[code] += 1
    assert outcomes[0] >= 10 and outcomes[2] >= 200, outcomes  # both ends are exercised
