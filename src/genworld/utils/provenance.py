"""Where a result came from: the code (genworld version, git commit, uncommitted changes), the
command line, the machine (CPU, threads, torch, device) and when. Every result and report
carries it (``provenance()``), so a number can be traced to the code and machine that made it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]


CODE_ENV = "GENWORLD_CODE_VERSION"
"""The launching process's :func:`code_version` (JSON), inherited by its worker processes."""


def pin_code_version() -> None:
    """Read the code version now, at launch: a long run's results name the code it started
    with, not whatever the checkout holds when it ends; its worker processes inherit it through
    the environment."""
    os.environ[CODE_ENV] = json.dumps(code_version())


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"genworld": version, "commit": sha or None, "dirty": bool or None}``: the commit of the
    checkout genworld runs from (None when it is not a git checkout, e.g. an installed wheel);
    dirty = tracked files differ from that commit. In a process whose parent pinned it
    (:func:`pin_code_version`): the parent's."""
    from genworld import __version__

    if pinned := os.environ.get(CODE_ENV):
        return json.loads(pinned)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=PACKAGE_DIR,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"genworld": __version__, "commit": commit, "dirty": bool(status) if commit else None}


@functools.cache
def machine() -> dict[str, Any]:
    """The CPU model, its logical cores, the OS, Python and torch versions, and the GPU if any."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance() -> dict[str, Any]:
    """The code, command line, machine and time of this run (JSON-ready); torch's thread count
    and matmul precision as they are now."""
    import torch

    return {
        **code_version(),
        "command": " ".join(["genworld" if k == 0 else a for k, a in enumerate(sys.argv)])
        if sys.argv and Path(sys.argv[0]).name in ("genworld", "__main__.py")
        else " ".join(sys.argv),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def record_provenance(out: Path) -> None:
    """``out/provenance.json``: the code that has just finished the run in ``out`` (callers
    skip it for a run that was finished before), so a record of its logs names its code."""
    from genworld.utils.io import atomic_write_json

    atomic_write_json(Path(out) / "provenance.json", provenance())


def runs_provenance(folders: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each run's recorded code (``{name: {"commit", "dirty"}}``, from
    :func:`record_provenance`; ``{}`` for a run finished by code that kept none)."""
    made: dict[str, dict[str, Any]] = {}
    for name, folder in folders.items():
        path = Path(folder) / "provenance.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        made[name] = {k: record[k] for k in ("commit", "dirty") if k in record}
    return made


def provenance_line(record: dict[str, Any]) -> str:
    """One Markdown line naming a ``provenance()`` record's code and machine."""
    commit = record.get("commit")
    code = (
        f"commit {commit[:10]}{' + uncommitted changes' if record.get('dirty') else ''}"
        if commit
        else "commit unknown (not a git checkout)"
    )
    m = record.get("machine", {})
    return (
        f"**Code**: genworld {record.get('genworld')}, {code}; **machine**: {m.get('cpu')} "
        f"({m.get('logical_cores')} logical cores), torch {m.get('torch')}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; `{record.get('command')}`."
    )


def cells_code(results: list[dict[str, Any]]) -> dict[str, int]:
    """How many of ``results`` (records carrying a ``provenance``) each code version made:
    ``{"<commit 10>[+dirty]": count}``; records made before provenance was kept count as
    ``"unrecorded"``."""
    counts: dict[str, int] = {}
    for result in results:
        record = result.get("provenance") or {}
        commit = record.get("commit")
        key = (commit[:10] + ("+dirty" if record.get("dirty") else "")) if commit else "unrecorded"
        counts[key] = counts.get(key, 0) + 1
    return counts


def cells_code_line(results: list[dict[str, Any]], noun: str = "cell") -> str:
    """One Markdown line: which code made the cells (several versions are named, not hidden);
    ``noun`` names the units (``run`` for a study of training runs)."""
    counts = cells_code(results)
    if not counts:
        return f"**Code**: no {noun} has finished yet."
    parts = [f"{commit} ({n} {noun}{'s' if n != 1 else ''})" for commit, n in counts.items()]
    many = len(counts) > 1
    return f"**Code**: {noun}s made by {'commits ' if many else 'commit '}{', '.join(parts)}" + (
        " — more than one code version: compare with care." if many else "."
    )
