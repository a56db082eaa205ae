"""Configs: frozen dataclasses with a docstring under every field. This module is the one way to
build one from its defaults, a scale preset and overrides, and to read one back from JSON.

A preset or override is a nested dict of field values (``{"mbpo": {"beta": 0.5}}``); unknown
names are an error that lists the valid ones. Nothing changes a config after it is built.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields, is_dataclass, replace
from typing import Any, TypeVar

from genworld.errors import GenworldError

C = TypeVar("C")

SCALE_NAMES = ("tiny", "mini", "full")
"""tiny: seconds, for tests; mini: the protocol that runs on a 2-core CPU; full: the paper's."""


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, recursing into dicts present in both (neither is changed)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply(cfg: C, values: dict[str, Any], where: str = "") -> C:
    """A copy of the config ``cfg`` with ``values`` set (nested dicts set nested configs; lists
    become tuples where the field holds a tuple)."""
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(values) - known)
    if unknown:
        name = where or type(cfg).__name__
        raise GenworldError(
            f"{name} has no field(s) {', '.join(unknown)}: valid are {', '.join(sorted(known))}"
        )
    changes = {}
    for key, value in values.items():
        check_field(key, value)
        current = getattr(cfg, key)
        if isinstance(value, dict) and is_dataclass(current):
            changes[key] = apply(current, value, f"{where or type(cfg).__name__}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return replace(cfg, **changes)


MAX_INT = 2**63 - 1
"""The largest whole number an option takes (what torch and numpy hold): more is a typo."""

MAX_SEED = 2**31 - 1
"""The largest seed (numpy, torch and Gymnasium all take it, and seeds derived from it)."""

MAX_SEEDS = 1_000
"""The most seeds a study runs: more is a typo, not a study."""


def check_seed(seed: Any, name: str = "--seed") -> None:
    """A seed is a whole number in [0, ``MAX_SEED``]; else a one-line GenworldError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise GenworldError(f"{name} must be a whole number from 0 to {MAX_SEED:,}; got {seed}")


MAX_PROCESSES = 1_024
"""The most threads or worker processes a config may ask for: more is a typo."""


def check_field(name: str, value: Any) -> None:
    """The fields every config shares by name, checked wherever a config is built: ``seed``
    (:func:`check_seed`), ``seeds`` (1 to ``MAX_SEEDS``), ``threads`` and ``workers`` (1 to
    ``MAX_PROCESSES``)."""
    if name == "seed":
        check_seed(value)
        return
    limit = {"seeds": MAX_SEEDS, "threads": MAX_PROCESSES, "workers": MAX_PROCESSES}.get(name)
    if limit and isinstance(value, int) and not 0 < value <= limit:
        raise GenworldError(f"--{name} must be from 1 to {limit:,}; got {value}")


def check_scale(scale: str) -> None:
    if scale not in SCALE_NAMES:
        raise GenworldError(f"--scale {scale!r} is unknown: choose {', '.join(SCALE_NAMES)}")


def resolve(cls: type[C], preset: dict[str, Any], overrides: dict[str, Any] | None = None) -> C:
    """``cls()`` with ``preset`` then ``overrides`` applied (top-level None values mean "keep"),
    validated when the class has ``validate()``."""
    top = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = apply(cls(), merge(preset, top))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def without_fields(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of a config's JSON dict without the dotted field ``names`` (those present)."""
    values = json.loads(json.dumps(data))
    for name in names:
        *parents, leaf = name.split(".")
        holder = values
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.pop(leaf, None)
    return values


def from_dict(cls: type[C], data: dict[str, Any], *, dropped: tuple[str, ...] = ()) -> C:
    """The config a JSON dict describes (as written by :func:`dataclasses.asdict`); ``dropped``:
    dotted names of fields that no longer exist, ignored when present."""
    values = without_fields(data, dropped)
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    base = cls(**{name: values.pop(name) for name in required if name in values})
    return apply(base, values)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), one line."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def parse_value(text: str, kind: Any, name: str) -> Any:
    """A command-line string as a value of the field type ``kind`` (int, float, str, bool,
    ``tuple[X, ...]`` as a comma list, ``X | None`` with ``none``, dict as JSON)."""
    import types
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    try:
        if origin in (typing.Union, types.UnionType):
            if text.lower() == "none" and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return parse_value(text, inner[0], name)
        if origin is tuple:
            item = args[0] if args else str
            return tuple(parse_value(x.strip(), item, name) for x in text.split(",") if x.strip())
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind in (dict, typing.Any) or origin is dict:
            return json.loads(text)
        value = kind(text)
        if kind is int and name.split(".")[-1] == "seed":
            check_seed(value, f"--{name}")  # the seed's own range, whatever the size
        if kind is int and abs(value) > MAX_INT:
            raise GenworldError(f"--{name} {text}: too large (at most {MAX_INT:,})")
        return value
    except (ValueError, TypeError, json.JSONDecodeError):
        raise GenworldError(
            f"--{name} {text!r}: expected {getattr(kind, '__name__', str(kind))}"
        ) from None
