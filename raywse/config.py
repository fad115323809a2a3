"""Dataclass configs on the command line: every field becomes ``--field-name`` with the dataclass default."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one option per field of dataclass ``cls`` (bools become ``--flag/--no-flag``)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = _default(field)
        kind = hints[field.name]
        help_text = field.metadata.get("help", "") + f" (default: {default})"
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # Optional[X] -> X
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) in (list, tuple):
            (item,) = set(typing.get_args(kind)) - {Ellipsis}
            group.add_argument(flag, type=item, nargs="+", default=default, help=help_text)
        else:
            group.add_argument(flag, type=base, default=default, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any):
    """Build ``cls`` from parsed arguments (fields missing from ``args`` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(_default(f), tuple) and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a dataclass's own validation (__post_init__) of a user's value
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


class ConfigError(ValueError):
    """A configuration value is invalid (reported as a one-line error by the CLI)."""


def apply_json_overrides(config, path: str | None):
    """Return ``config`` with the fields named in a JSON file replaced (the file's ``best`` object if it has one,
    as written by ``raywse tune``). Unknown keys are a :class:`ConfigError`."""
    if not path:
        return config
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        values = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    values = values.get("best", values)
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{file}: unknown {type(config).__name__} fields: {', '.join(unknown)}")
    return dataclasses.replace(config, **values)
