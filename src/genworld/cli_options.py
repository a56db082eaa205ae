"""Command-line options generated from config dataclasses: one ``--dotted.name`` per field
(nested configs included), with the field's docstring and default as its help."""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from typing import Any

from genworld.config import field_docs, parse_value

PREFIX = "cfg:"
"""Namespace attributes that hold generated options start with this (then the dotted name)."""


def add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One option per field of ``cls`` (recursing into nested configs); an option string the
    parser already has (a hand-written alias such as ``--envs``) is left to it. An option only
    overrides when given: the config's own default (or the scale's preset) applies otherwise."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    default_cfg = _default(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields" if not prefix else None)
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        kind = hints[f.name]
        default = getattr(default_cfg, f.name) if default_cfg is not None else MISSING
        if is_dataclass(kind):
            add_config_options(parser, kind, f"{name}.")
            continue
        option = f"--{name}"
        if option in parser._option_string_actions:
            continue
        shown = "required" if default is MISSING else _show(default)
        help_text = f"{docs.get(f.name, '')} (default: {shown})".strip()
        group.add_argument(
            option,
            dest=PREFIX + name,
            metavar=_metavar(kind),
            default=argparse.SUPPRESS,
            nargs="?" if kind is bool else None,
            const="true" if kind is bool else None,
            help=help_text.replace("%", "%%"),
        )
        parser.set_defaults(**{f"{PREFIX}{name}:type": kind})


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The generated options given on the command line, as a nested dict of typed values."""
    values = vars(args)
    out: dict[str, Any] = {}
    for key, text in values.items():
        if not key.startswith(PREFIX) or key.endswith(":type"):
            continue
        name = key[len(PREFIX) :]
        value = parse_value(text, values[f"{key}:type"], name)
        *parents, leaf = name.split(".")
        holder = out
        for part in parents:
            holder = holder.setdefault(part, {})
        holder[leaf] = value
    return out


def print_config(cfg: Any) -> None:
    """The resolved config as JSON (what ``config.json`` of the run will hold)."""
    print(json.dumps(asdict(cfg), indent=2, default=str))


def _default(cls: type) -> Any:
    try:
        return cls()
    except TypeError:  # a config with required fields (BehaviourConfig.env)
        return None


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "empty"
    return str(value)


def _metavar(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return "A,B,..."
    if kind is bool:
        return "BOOL"
    return getattr(kind, "__name__", "VALUE").upper()
