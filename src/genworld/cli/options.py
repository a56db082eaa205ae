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


def add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    defaults: Any = None,
    prefix: str = "",
) -> None:
    """One option per field of ``cls`` (recursing into nested configs; ``--a_b`` also answers to
    ``--a-b``), except ``skip`` (dotted names) and option strings the parser already has
    (hand-written aliases such as ``--setting``). An option overrides only when given: the config's default, or the scale's
    preset, applies otherwise. ``defaults``: the instance whose values ``--help`` shows
    (default: ``cls()``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    shown_cfg = defaults if defaults is not None else _default(cls)
    title = f"{cls.__name__} ({prefix[:-1]})" if prefix else f"{cls.__name__} fields"
    group = parser.add_argument_group(title)
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        kind = hints[f.name]
        default = getattr(shown_cfg, f.name) if shown_cfg is not None else MISSING
        if name in skip:
            continue
        if is_dataclass(kind):
            shown_sub = None if default is MISSING else default
            add_config_options(parser, kind, skip=skip, defaults=shown_sub, prefix=f"{name}.")
            continue
        options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        if any(option in parser._option_string_actions for option in options):
            continue
        shown = "required" if default is MISSING else _show(default)
        help_text = f"{docs.get(f.name, '')} (default: {shown})".strip()
        group.add_argument(
            *options,
            dest=PREFIX + name,
            metavar=_metavar(kind),
            default=argparse.SUPPRESS,
            nargs="?" if kind is bool else None,
            const="true" if kind is bool else None,
            help=help_text.replace("%", "%%"),
        )
        parser.set_defaults(**{f"{PREFIX}{name}{TYPE}": kind})
    if "--print-config" not in parser._option_string_actions:
        parser.add_argument(
            "--print-config",
            action="store_true",
            help="print the resolved config (defaults, scale preset, options) as JSON and exit",
        )


TYPE = ":type"
"""Suffix of the namespace attribute that holds a generated option's field type."""


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The generated options given on the command line, as a nested dict of typed values."""
    values = vars(args)
    out: dict[str, Any] = {}
    for key, text in values.items():
        if not key.startswith(PREFIX) or key.endswith(TYPE):
            continue
        name = key[len(PREFIX) :]
        value = parse_value(text, values[key + TYPE], name)
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
