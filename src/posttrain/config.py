"""Configs are dataclasses, loadable from YAML plus ``--key value`` overrides (TRL's CLI style).

Every command owns one dataclass. Fields carry their help text and bounds in ``metadata``::

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate.", "gt": 0})

:func:`load_config` merges (in order) the dataclass defaults, a YAML file, a mapping (a pipeline
stage's ``config:``) and command-line overrides, then checks every key and value *before* any
model is loaded: unknown keys (with a did-you-mean), wrong types and out-of-range values raise
:class:`ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar

import yaml

from posttrain.errors import ConfigError

C = TypeVar("C")

# metadata keys understood by the checker: numeric bounds and allowed values
_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"), "le": (lambda v, b: v <= b, "<=")}


def config_field(default: Any = dataclasses.MISSING, help: str = "", **checks: Any) -> Any:
    """A dataclass field with help text and checks (``ge``, ``gt``, ``le``)."""
    kwargs: dict[str, Any] = {"metadata": {"help": help, **checks}}
    if isinstance(default, (list, dict)):
        kwargs["default_factory"] = lambda d=default: type(d)(d)
    else:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(argv: Sequence[str]) -> dict[str, str | bool]:
    """``["--lr", "1e-4", "--use_peft", "--x=3"]`` -> ``{"lr": "1e-4", "use_peft": True, "x": "3"}``.

    Values stay strings here; :func:`load_config` converts them by the field's declared type.
    """
    overrides: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument '{token}' (overrides look like --key value)")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            overrides[key] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            overrides[key] = argv[i + 1]
            i += 1
        else:
            overrides[key] = True  # a bare flag: --use_peft
        i += 1
    return overrides


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build and validate a ``cls`` config from a YAML file, a mapping and CLI overrides."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    merged: dict[str, Any] = {}
    sources = [(str(path), read_yaml(path) if path else {}), ("config", dict(values or {})), ("command line", dict(overrides or {}))]
    for source, mapping in sources:
        for key, value in mapping.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown config key '{key}' in {source}{hint}")
            merged[key] = _coerce(key, value, hints[key], from_string=source == "command line", source=source)
            _check_bounds(key, merged[key], fields[key].metadata)
    try:
        config = cls(**merged)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {cls.__name__}: {err}") from None
    return config


def config_hash(config: Any) -> str:
    """A short stable fingerprint of a config's values (for the pipeline manifest)."""
    payload = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def describe_fields(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` per field, for ``--help`` and the docs."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


# ---------------------------------------------------------------------------------------------
# type conversion and checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, from_string: bool, source: str) -> Any:
    """Convert ``value`` to the field type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    fail = ConfigError(f"config key '{key}' in {source}: expected {_type_name(tp)}, got {value!r}")

    if origin in (typing.Union, types.UnionType):
        if value is None or (from_string and value in ("None", "null")):
            if type(None) in args:
                return None
            raise fail
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg, from_string, source)
            except ConfigError:
                continue
        raise fail
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' in {source}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return False
        raise fail
    if tp in (int, float):
        if isinstance(value, bool):  # bool is an int subclass, but never a number here
            raise fail
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):  # the command line, or YAML 1.1 reading "1e-4" as a string
            try:
                return tp(value)
            except ValueError:
                raise fail from None
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not from_string:
            return str(value)
        raise fail
    if origin in (list, dict) or tp in (list, dict):
        container = origin or tp
        if isinstance(value, str) and from_string:
            try:
                value = yaml.safe_load(value) if value.strip()[:1] in "[{" else value.split(",")
            except yaml.YAMLError:
                raise fail from None
        if not isinstance(value, container):
            raise fail
        if container is list and args:  # list[int] etc.: convert every element
            return [_coerce(f"{key}[{i}]", item, args[0], from_string, source) for i, item in enumerate(value)]
        return value
    return value


def _check_bounds(key: str, value: Any, metadata: Mapping[str, Any]) -> None:
    if value is None or isinstance(value, bool):
        return
    for name, (ok, symbol) in _BOUNDS.items():
        if name in metadata and not ok(value, metadata[name]):
            raise ConfigError(f"config key '{key}' must be {symbol} {metadata[name]}, got {value}")
