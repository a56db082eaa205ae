"""Print the pinned requirements of the peers venv (``make peers``), one per line.

The set is pyproject.toml's core dependencies and ``dev`` extra, with every entry of
``[tool.genworld.peers] requirements`` replacing the one of the same package (gymnasium 1.0.0,
which d3rlpy 2.8.1 pins) or added to the set (d3rlpy). genworld itself is then installed into
that venv without its dependencies, so pip never sees the core set's gymnasium pin.

    python benchmarks/peers_requirements.py > .venv-peers/requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def package(requirement: str) -> str:
    """The normalised package name of a requirement (``gymnasium[mujoco]==1.0.0`` → gymnasium)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def peers_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The core set and ``dev`` extra, with the peers' pins in place of their namesakes."""
    config = tomllib.loads(pyproject.read_text())
    base = [*config["project"]["dependencies"], *config["project"]["optional-dependencies"]["dev"]]
    peers = config["tool"]["genworld"]["peers"]["requirements"]
    replaced = {package(r) for r in peers}
    return [r for r in base if package(r) not in replaced] + peers


if __name__ == "__main__":
    sys.stdout.write("".join(f"{r}\n" for r in peers_requirements()))
