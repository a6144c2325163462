"""Behaviour of utils/config.py: shipped configs, strict keys and types, value rules, legacy keys,
`--set` overrides, tune_* inheritance, file errors and the dict round trip."""

import json
from pathlib import Path

import pytest

from utils.config import config_from_dict, config_to_dict, load_config, parse_override
from utils.config_sections import INHERITS, LEGACY_KEYS, RunConfig
from utils.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(REPO.glob("conf/**/*.json"))


def raises(raw: dict, *needles: str, overrides: list[str] = ()) -> str:
    """config_from_dict must fail with a one-line ConfigError containing every needle."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --- shipped configs -------------------------------------------------------------------------------

def test_shipped_configs_exist() -> None:
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED}
    expected = {"conf/darts/cifar10_darts.json"} | {
        f"conf/ista/{d}_ista{s}.json"
        for d in ("cifar10", "cifar100", "flowers102", "sport8", "mit67", "imagenet") for s in ("", "_single")}
    assert expected <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shipped_config_loads(path: Path) -> None:
    cfg, notices = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert all(isinstance(n, str) for n in notices)
    # The file's dataset section is what the run uses (no silent fallback to defaults).
    raw = json.loads(path.read_text())
    for key, value in raw.get("dataset", {}).items():
        if hasattr(cfg.dataset, key):
            assert getattr(cfg.dataset, key) == value, key


def test_shipped_paper_values() -> None:
    single, _ = load_config(REPO / "conf/ista/cifar100_ista_single.json")
    assert (single.train_architecture.init_channels, single.train_architecture.layers) == (36, 20)
    assert single.dataset.val_ratio == 0.02 and single.dataset.batch_size == 96
    assert single.train_architecture.param_limit == 3.7 and single.hpo.restart is False
    assert single.hpo.lookahead == "step" and config_from_dict({})[0].hpo.lookahead == "expected"
    two, _ = load_config(REPO / "conf/ista/cifar100_ista.json")
    assert (two.train_architecture.init_channels, two.train_architecture.layers) == (16, 8)
    assert (two.tune_architecture.init_channels, two.tune_architecture.layers) == (36, 20)
    assert two.tune.epochs == 600 and two.tune_dataset.cutout_size == 16 and two.train_architecture.alpha_lr == 6e-4
    darts, _ = load_config(REPO / "conf/darts/cifar10_darts.json")
    assert darts.seed == 233 and darts.train_architecture.order == 2 and darts.dataset.val_ratio == 0.5
    flowers, _ = load_config(REPO / "conf/ista/flowers102_ista_single.json")
    assert flowers.train_architecture.input_size == 224 and flowers.train_architecture.param_limit == 6.0


def test_flowers_single_lacks_keys_and_gets_defaults() -> None:
    path = REPO / "conf/ista/flowers102_ista_single.json"
    raw = json.loads(path.read_text())
    # Like DHA's own file (the point: DHA's README command must work with it).
    assert "magnitude" not in raw["da"] and "magnitude_tune" not in raw["da"]
    assert "aug_choice" not in raw["dataset"] and "restart" not in raw["hpo"]
    cfg, _ = load_config(path)
    assert cfg.da.magnitude == 1.0 and cfg.da.magnitude_tune == 10.0
    assert cfg.dataset.aug_choice == 14 and cfg.hpo.restart is False
    assert cfg.dataset.name == "flowers102" and cfg.dataset.num_class == 102


# --- unknown keys ----------------------------------------------------------------------------------

def test_unknown_key_names_path_and_suggests() -> None:
    raises({"dataset": {"batchsize": 32}}, "dataset.batchsize", "dataset.batch_size")


def test_unknown_nested_key_in_tune_section() -> None:
    raises({"tune_architecture": {"init_channel": 36}}, "tune_architecture.init_channel",
           "tune_architecture.init_channels")


def test_unknown_section_suggests_closest() -> None:
    raises({"datasets": {"name": "cifar10"}}, "'datasets'", "'dataset'")


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    message = raises({"hpo": {"zzzzzz": 1}}, "hpo.zzzzzz")
    assert "valid keys" in message and "learning_low" in message


def test_legacy_key_of_another_section_is_unknown() -> None:
    # `gpu` is legacy only at top level; inside `train` it is an error.
    assert "gpu" in LEGACY_KEYS[RunConfig]
    raises({"train": {"gpu": "0"}}, "train.gpu")


# --- wrong types -----------------------------------------------------------------------------------

@pytest.mark.parametrize("section,key,value", [
    ("dataset", "batch_size", "32"),  # string for int
    ("dataset", "batch_size", 32.5),  # float for int
    ("train", "epochs", 10.0),  # float (even integral) for int
    ("dataset", "download", "yes"),  # string for bool
    ("dataset", "flip", 1),  # number for bool
    ("da", "continue_with_policy", "false"),  # string for bool
    ("dataset", "mean", 0.5),  # number for list
    ("train", "w_lr", True),  # bool for float
    ("train", "w_lr", "0.1"),  # string for float
    ("dataset", "batch_size", None),  # null for a non-optional field
])
def test_wrong_type_names_key(section: str, key: str, value: object) -> None:
    raises({section: {key: value}}, f"'{section}.{key}'")


def test_wrong_item_type_in_list_names_index() -> None:
    raises({"dataset": {"mean": [0.5, "x", 0.5]}}, "dataset.mean[1]")


def test_int_accepted_for_float_and_null_for_optional() -> None:
    cfg, _ = config_from_dict({"train": {"w_lr": 1}, "dataset": {"cutout_size": None, "num_class": None}})
    assert cfg.train.w_lr == 1.0 and isinstance(cfg.train.w_lr, float)
    assert cfg.dataset.cutout_size is None and cfg.dataset.num_class is None


# --- bad values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,key", [
    ({"train": {"w_lr": -0.1}}, "train.w_lr"),
    ({"tune": {"w_lr": 0}}, "tune.w_lr"),
    ({"dataset": {"val_ratio": 0}}, "dataset.val_ratio"),
    ({"dataset": {"val_ratio": 1}}, "dataset.val_ratio"),
    ({"dataset": {"val_ratio": 1.5}}, "dataset.val_ratio"),
    ({"tune_dataset": {"val_ratio": 0.0}}, "tune_dataset.val_ratio"),
    ({"train_architecture": {"init_channels": 15}}, "train_architecture.init_channels"),
    ({"tune_architecture": {"init_channels": 0}}, "tune_architecture.init_channels"),
    ({"hpo": {"learning_low": 0.05, "learning_up": 0.05}}, "hpo.learning_low"),
    ({"hpo": {"learning_low": 0.1, "learning_up": 0.05}}, "hpo.learning_up"),
    ({"hpo_tune": {"learning_low": -1e-3}}, "hpo_tune.learning_low"),
    ({"hpo": {"lookahead": "horizon"}}, "hpo.lookahead"),
    ({"dataset": {"batch_size": 0}}, "dataset.batch_size"),
    ({"train_architecture": {"order": 3}}, "train_architecture.order"),
    ({"train_architecture": {"stem": "resnet"}}, "train_architecture.stem"),
    ({"da": {"temperature": 0}}, "da.temperature"),
    ({"dataset": {"mean": [0.5, 0.5]}}, "dataset.mean"),
    ({"recompute_cells": -2}, "recompute_cells"),
])
def test_bad_value_names_key(raw: dict, key: str) -> None:
    raises(raw, key)


def test_boundary_values_accepted() -> None:
    cfg, _ = config_from_dict({"dataset": {"val_ratio": 0.02}, "hpo": {"learning_low": 0, "learning_up": 0.8},
                               "train_architecture": {"init_channels": 2}})
    assert cfg.hpo.learning_low == 0.0 and cfg.train_architecture.init_channels == 2


def test_config_error_is_user_error() -> None:
    with pytest.raises(UserError):
        config_from_dict({"train": {"w_lr": -1}})


# --- legacy keys -----------------------------------------------------------------------------------

def test_legacy_and_comment_keys_accepted_with_notices() -> None:
    raw = {"gpu": "0", "cudnn_enabled": True, "-Comment": "x",
           "dataset": {"real_val": False, "root_cloud": "/cache", "batch_size": 32},
           "train": {"w_nesterov": True, "print_freq": 50},
           "train_architecture": {"input_channels": 3, "-help-": "h"},
           "hpo": {"help": "no hpo"}}
    cfg, notices = config_from_dict(raw)
    assert cfg.dataset.batch_size == 32
    joined = " | ".join(notices)
    for key in ("gpu", "cudnn_enabled", "-Comment", "dataset.real_val", "dataset.root_cloud", "train.w_nesterov",
                "train.print_freq", "train_architecture.input_channels", "train_architecture.-help-", "hpo.help"):
        assert any(n == key or n.startswith(key + " ") for n in notices), f"{key} not in {joined}"
    assert any("val_in_train" in n for n in notices if n.startswith("dataset.real_val"))  # the hint
    assert notices == sorted(set(notices))


def test_no_notices_for_clean_config() -> None:
    assert config_from_dict({"dataset": {"name": "fake"}})[1] == []


# --- --set overrides -------------------------------------------------------------------------------

def test_overrides_change_values_and_parse_json() -> None:
    raw = {"dataset": {"name": "cifar10", "batch_size": 64}, "train": {"w_lr": 0.025}}
    cfg, _ = config_from_dict(raw, ["dataset.batch_size=32", "dataset.name=fake", "train.w_lr=0.1",
                                    "dataset.download=true", "dataset.cutout_size=null",
                                    "dataset.mean=[0.5, 0.5, 0.5]"])
    assert cfg.dataset.batch_size == 32 and isinstance(cfg.dataset.batch_size, int)
    assert cfg.dataset.name == "fake"
    assert cfg.train.w_lr == 0.1
    assert cfg.dataset.download is True and cfg.dataset.cutout_size is None
    assert cfg.dataset.mean == [0.5, 0.5, 0.5]
    assert raw == {"dataset": {"name": "cifar10", "batch_size": 64}, "train": {"w_lr": 0.025}}  # input untouched


def test_override_adds_missing_key_and_section() -> None:
    cfg, _ = config_from_dict({"dataset": {"name": "fake"}}, ["hpo.restart=true", "seed=7"])
    assert cfg.hpo.restart is True and cfg.seed == 7


def test_override_last_wins_and_value_may_contain_equals() -> None:
    cfg, _ = config_from_dict({}, ["save_name=a", "save_name=b=c"])
    assert cfg.save_name == "b=c"


def test_override_without_equals_is_error() -> None:
    raises({}, "dataset.batch_size", overrides=["dataset.batch_size"])


def test_override_unknown_key_and_bad_type_are_errors() -> None:
    raises({}, "dataset.batchsize", "dataset.batch_size", overrides=["dataset.batchsize=3"])
    raises({}, "dataset.batch_size", overrides=["dataset.batch_size=abc"])
    raises({}, "dataset.val_ratio", overrides=["dataset.val_ratio=2"])


def test_override_through_a_value_is_error() -> None:
    raises({"dataset": {"batch_size": 64}}, "batch_size", overrides=["dataset.batch_size.x=1"])


def test_parse_override() -> None:
    assert parse_override("a.b=1e-3") == (["a", "b"], 0.001)
    assert parse_override("a=x y") == (["a"], "x y")
    assert parse_override('a="1"') == (["a"], "1")


def test_override_numeric_text_for_string_field() -> None:
    cfg, _ = config_from_dict({}, ["save_name=2024"])
    assert cfg.save_name == "2024"


def test_override_of_parent_reaches_tune_section() -> None:
    cfg, _ = config_from_dict({"dataset": {"name": "cifar10"}}, ["dataset.name=fake"])
    assert cfg.tune_dataset.name == "fake"


# --- inheritance -----------------------------------------------------------------------------------

PARENT_VALUES = {
    "dataset": ("batch_size", 32, "cutout_size", 16),
    "train": ("w_lr", 0.1, "epochs", 7),
    "train_architecture": ("init_channels", 20, "layers", 5),
    "hpo": ("h_lr", 3e-8, "learning_up", 0.07),
    "da": ("d_lr", 0.01, "temperature", 3.0),
}


@pytest.mark.parametrize("child", sorted(INHERITS))
def test_tune_section_inherits_and_overrides(child: str) -> None:
    parent = INHERITS[child]
    k1, v1, k2, v2 = PARENT_VALUES[parent]
    cfg, _ = config_from_dict({parent: {k1: v1, k2: v2}})
    assert getattr(getattr(cfg, child), k1) == v1 and getattr(getattr(cfg, child), k2) == v2
    own = {"batch_size": 96, "w_lr": 0.025, "init_channels": 36, "h_lr": 2e-7, "d_lr": 0.05}[k1]
    cfg, _ = config_from_dict({parent: {k1: v1, k2: v2}, child: {k1: own}})
    assert getattr(getattr(cfg, child), k1) == own  # the tune section's own key wins
    assert getattr(getattr(cfg, child), k2) == v2  # the rest still comes from the parent
    assert getattr(getattr(cfg, parent), k1) == v1  # the parent is untouched


def test_tune_section_error_names_tune_path() -> None:
    raises({"tune": {"w_lr": -1}}, "tune.w_lr")
    # An error in the parent is reported for the parent first.
    raises({"train": {"w_lr": -1}}, "train.w_lr")


@pytest.mark.parametrize("section,value", [("dataset", 5), ("hpo", [1, 2]), ("tune", "x")])
def test_non_object_section_is_config_error(section: str, value: object) -> None:
    raises({section: value}, f"'{section}'", "section")


# --- files -----------------------------------------------------------------------------------------

def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"dataset": {"name": "fake",}\n\n}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "JSON" in str(info.value) and "\n" not in str(info.value)


def test_load_non_object_json(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one JSON object"):
        load_config(path)


def test_load_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": {"name": "fake", "batch_size": 8}}))
    cfg, _ = load_config(path, ["dataset.batch_size=4"])
    assert cfg.dataset.name == "fake" and cfg.dataset.batch_size == 4


# --- round trip ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_config_to_dict_round_trip(path: Path) -> None:
    cfg, _ = load_config(path)
    data = config_to_dict(cfg)
    assert json.loads(json.dumps(data)) == data  # JSON-safe
    again, notices = config_from_dict(data)
    assert again == cfg and notices == []


def test_round_trip_of_defaults() -> None:
    cfg = RunConfig()
    assert config_from_dict(config_to_dict(cfg))[0] == cfg
