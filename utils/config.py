"""Loading the run configuration: strict JSON into the dataclasses of utils/config_sections.py,
`--set` overrides.

Unknown keys are errors (with the closest valid key suggested); keys the original DHA configs carry
but nothing reads are accepted and reported once (`LEGACY_KEYS`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path
from typing import Any

from utils.config_rules import validate
from utils.config_sections import INHERITS, LEGACY_HINTS, LEGACY_KEYS, RunConfig
from utils.errors import ConfigError


def _is_comment(key: str) -> bool:
    return key.startswith("-") or key in ("help", "-help-")


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON for an error message, shortened (errors stay one readable line)."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, notices: list[str]) -> Any:
    """Check `value` against the annotation `tp`; returns the converted value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], path, notices)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}' must be a section (a JSON object), got {_show(value)}")
        return _build(tp, value, path + ".", notices)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}' must be a list, got {_show(value)}")
        return [_convert(v, item, f"{path}[{i}]", notices) for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        # `--set save_name=2024` parses as a number; text fields take it as text.
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }[tp]
    if not ok:
        raise ConfigError(f"config key '{path}' must be {_type_name(tp)}, got {_show(value)}")
    if tp is str:
        return str(value)
    if tp is bool:
        return value
    if tp is int:
        if not -2**31 <= value < 2**31:
            raise ConfigError(f"config key '{path}' must lie between -2**31 and 2**31 - 1, got a "
                              f"{len(str(abs(value)))}-digit integer")
        return value
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not math.isfinite(number):
        raise ConfigError(f"config key '{path}' must be a finite number, got {number}")
    return number


def _build(cls: type, data: dict, prefix: str, notices: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key in hints:
            kwargs[key] = _convert(value, hints[key], prefix + key, notices)
        elif key in LEGACY_KEYS.get(cls, set()) or _is_comment(key):
            hint = LEGACY_HINTS.get(key)
            notices.append(prefix + key + (f" ({hint})" if hint else ""))
        else:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            suggestion = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggestion}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], value); the value is JSON, else a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except (ValueError, RecursionError) as exc:  # a number of more than 4300 digits, or nesting too deep
        raise ConfigError(f"--set {key.strip()}: the value cannot be read ({_reason(exc)})") from None
    return key.strip().split("."), value


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number with more than 4300 digits" if "digits" in str(exc) else str(exc).split("\n")[0]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Write `--set` values into the raw config dict (creating missing sections and keys)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
        node[path[-1]] = value
    return raw


def config_from_dict(raw: dict, overrides: list[str] = ()) -> tuple[RunConfig, list[str]]:
    """Build and validate a RunConfig from a raw dict; returns it and the ignored legacy keys."""
    raw = apply_overrides(json.loads(json.dumps(raw)), list(overrides))  # on a deep copy
    for name in [f.name for f in dataclasses.fields(RunConfig)]:
        if name in raw and dataclasses.is_dataclass(typing.get_type_hints(RunConfig)[name]) \
                and not isinstance(raw[name], dict):
            raise ConfigError(f"config key '{name}' must be a section (a JSON object), got {_show(raw[name])}")
    inherited: set[str] = set()
    for child, parent in INHERITS.items():
        inherited |= {f"{child}.{k}" for k in raw.get(parent, {}) if k not in raw.get(child, {})}
        raw[child] = {**raw.get(parent, {}), **raw.get(child, {})}
    notices: list[str] = []
    cfg = _build(RunConfig, raw, "", notices)
    validate(cfg)
    # A legacy key copied into a tune_* section is reported once, under its own section.
    return cfg, sorted({n for n in notices if n.split(" ")[0] not in inherited})


def load_config(path: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, list[str]]:
    """Read a JSON config file and apply `--set` overrides; errors are ConfigError (one line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder; give the path of a JSON file")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a leading byte-order mark is fine
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({_reason(exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold one JSON object")
    return config_from_dict(raw, overrides)


def config_to_dict(cfg: RunConfig) -> dict:
    """The resolved config as a JSON-safe dict (written to the run folder)."""
    return dataclasses.asdict(cfg)
