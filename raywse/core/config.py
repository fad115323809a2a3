"""Dataclass configs on the command line and in JSON files.

Every field becomes an option: ``--field-name`` for a top-level field, ``--section.field-name`` for a field of a
nested config (``TrainConfig.encoder.hidden`` is ``--encoder.hidden``). Options the user does not give leave the
base config's value alone, so a preset (a named constructor such as ``ZooConfig.tiny()``) and the defaults shown in
``--help`` stay the single source of truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid (reported as a one-line error by the CLI)."""


def _fields(cls: type):
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def add_config_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one option per field of dataclass ``cls``, recursing into nested dataclass fields."""
    group = parser.add_argument_group(f"{cls.__name__} options" + (f" (--{prefix}...)" if prefix else ""))
    for field, kind in _fields(cls):
        if dataclasses.is_dataclass(kind):
            add_config_args(parser, kind, f"{prefix}{field.name}.")
            continue
        flag = "--" + prefix + field.name.replace("_", "-")
        dest = prefix + field.name
        default = _default(field)
        help_text = field.metadata.get("help", "") + f" (default: {default})"
        if kind is bool or bool in typing.get_args(kind):
            help_text += f"; --{prefix}no-{field.name.replace('_', '-')} to turn off"
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # Optional[X] -> X
        common = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        metavar = {"metavar": field.name.upper()}
        if base is bool:  # --section.flag / --section.no-flag
            group.add_argument(flag, action="store_true", **common)
            negative = "--" + prefix + "no-" + field.name.replace("_", "-")
            group.add_argument(
                negative, action="store_false", dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
        elif typing.get_origin(kind) in (list, tuple):
            (item,) = set(typing.get_args(kind)) - {Ellipsis}
            group.add_argument(flag, type=item, nargs="+", **common, **metavar)
        else:
            group.add_argument(flag, type=base, **common, **metavar)


def config_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with every option the user gave applied."""
    given = vars(args)
    overrides: dict[str, Any] = {}
    for key, value in given.items():
        node = overrides
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    known = {f.name for f in dataclasses.fields(cls)}
    return apply_overrides(base if base is not None else cls(), {k: v for k, v in overrides.items() if k in known})


def apply_overrides(config: Any, values: dict, origin: str = "") -> Any:
    """``config`` with the fields named in ``values`` replaced; nested dicts update nested configs.

    Unknown fields and values the dataclass rejects are a :class:`ConfigError`.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{origin}unknown {type(config).__name__} fields: {', '.join(unknown)}")
    changes = {}
    for name, value in values.items():
        current = getattr(config, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = apply_overrides(current, value, origin)
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[name] = tuple(value)
        else:
            changes[name] = value
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as exc:  # a dataclass's own validation (__post_init__) of a user's value
        raise ConfigError(f"{origin}invalid {type(config).__name__}: {exc}") from exc


def apply_json_overrides(config: Any, path: str | None) -> Any:
    """``config`` with the fields of a JSON file applied (its ``best`` object if it has one, as ``raywse tune``
    writes); nested objects update nested configs."""
    if not path:
        return config
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        values = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    return apply_overrides(config, values.get("best", values), f"{file}: ")
