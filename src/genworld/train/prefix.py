"""Training prefixes shared between runs.

Some runs are the same for their first N steps: the same data, seed and every setting those
steps read. CMT's prompt-tuning variants (``cmt``, ``cmt-no-pt``, ``cmt-beta=…``) all pretrain
for ``pretrain_updates`` updates before they differ. The first of them to reach step N leaves
its checkpoint and logs in the prefix's folder; the others start from there instead of making
the same N steps again. The checkpoint holds the trainer, the sampling generator and torch's RNG,
so a run started from a prefix continues exactly as if it had made those steps itself (tested
in ``tests/test_prefix.py``).

An agent offers a prefix with ``shared_prefix() -> (steps, settings) | None``: the settings are
everything its first ``steps`` read. The runner adds what else they read (data, seed, budget,
evaluation) and :func:`prefix_of` turns the lot into a folder under the study's ``prefixes/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genworld.utils.io import atomic_write_json, claim, claim_file, truncate_jsonl

RECORD = "prefix.json"
"""Written in a run's folder when it started from a prefix: which one, and its steps."""


@dataclass(frozen=True)
class Prefix:
    """The first ``steps`` steps of every run that names this prefix."""

    steps: int
    """The steps the runs share."""
    folder: Path
    """Its checkpoint (``checkpoints/step_<steps>``) and logs, once a run has made them."""


def prefix_of(agent: Any, root: Path, **context: Any) -> Prefix | None:
    """``agent``'s shared prefix, in ``root/<digest>`` where the digest is of its settings,
    this process's float32 matmul precision and ``context`` (what else its first steps read:
    data, seed, budget, evaluation, device; JSON-able); None when the agent shares none."""
    import torch

    offer = getattr(agent, "shared_prefix", None)
    shared = offer() if offer is not None else None
    if shared is None:
        return None
    steps, settings = shared
    precision = torch.get_float32_matmul_precision()
    key = {"steps": steps, "settings": settings, "matmul_precision": precision, **context}
    key = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Prefix(steps, Path(root) / digest)


def _checkpoint(prefix: Prefix) -> Path:
    return prefix.folder / "checkpoints" / f"step_{prefix.steps:09d}"


def _has_own_checkpoint(out: Path) -> bool:
    """Whether the run in ``out`` has a checkpoint of its own (it resumes from it)."""
    return any((out / "checkpoints").glob("step_*"))


@contextlib.contextmanager
def making(prefix: Prefix | None, out: Path, *, wait: bool) -> Iterator[bool]:
    """The right to make ``prefix``'s steps, held for the ``with`` block, so that two processes
    never make one prefix side by side (two workers of a table each taking one of CMT's
    variants of the same seed). Yields True at once when there is nothing to make: no prefix,
    or a prefix already made. Else True once this process holds the prefix's claim (a lock
    beside its folder that dies with the process), and False at once when another process
    holds it (``wait=False``: the caller does other work first); ``wait=True`` waits for that
    process to let it go. A run in ``out`` that resumes from its own checkpoint goes on either
    way, holding the claim when it is free."""
    if prefix is None or _checkpoint(prefix).is_dir():
        yield True
        return
    own = _has_own_checkpoint(out)
    with claim(claim_file(prefix.folder), wait=wait and not own) as held:
        yield held or own


def start_from_prefix(prefix: Prefix, out: Path, logs: tuple[str, ...]) -> bool:
    """Copy the prefix's checkpoint and logs into ``out`` when ``out`` has no checkpoint of its
    own and the prefix is there; returns whether it did (and then writes ``prefix.json``)."""
    source = _checkpoint(prefix)
    if _has_own_checkpoint(out) or not source.is_dir():
        return False
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for log in logs:
        if (prefix.folder / log).exists():
            shutil.copyfile(prefix.folder / log, out / log)
    temp = out / "checkpoints" / f".tmp-prefix-{os.getpid()}"
    shutil.copytree(source, temp)
    os.replace(temp, out / "checkpoints" / source.name)
    atomic_write_json(out / RECORD, {"steps": prefix.steps, "from": str(prefix.folder)})
    return True


def inherited(out: Path, step: int) -> bool:
    """Whether ``out``'s checkpoint at ``step`` is a prefix another run made (the time its
    steps took is that run's)."""
    record = out / RECORD
    return record.exists() and json.loads(record.read_text())["steps"] == step


def keep_prefix(prefix: Prefix, out: Path, logs: tuple[str, ...]) -> None:
    """Leave ``out``'s checkpoint at ``prefix.steps`` and its logs (records up to that step)
    as the prefix, atomically; a prefix another run left first stays."""
    if _checkpoint(prefix).is_dir():
        return
    temp = prefix.folder.with_name(f".tmp-{prefix.folder.name}-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    name = _checkpoint(prefix).name
    shutil.copytree(out / "checkpoints" / name, temp / "checkpoints" / name)
    for log in logs:
        if (out / log).exists():
            shutil.copyfile(out / log, temp / log)
            truncate_jsonl(temp / log, prefix.steps)
    try:
        os.rename(temp, prefix.folder)
    except OSError:  # another run left it first
        shutil.rmtree(temp, ignore_errors=True)
