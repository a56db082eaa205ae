"""Every config dataclass documents every field: ``--help`` is generated from the docstrings."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import genworld
from genworld.config import field_docs


def test_every_config_field_has_a_docstring():
    missing = []
    for info in pkgutil.walk_packages(genworld.__path__, "genworld."):
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            if not (
                inspect.isclass(cls)
                and dataclasses.is_dataclass(cls)
                and name.endswith("Config")
                and cls.__module__ == module.__name__
            ):
                continue
            docs = field_docs(cls)
            missing += [
                f"{module.__name__}.{name}.{f.name}"
                for f in dataclasses.fields(cls)
                if f.name not in docs
            ]
    assert not missing, f"config fields without a docstring: {', '.join(missing)}"
