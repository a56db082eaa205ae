"""Checkpoints: tensors in safetensors, everything else in JSON, atomic, checksummed.

A checkpoint is a folder ``step_<N>/`` with ``tensors.safetensors`` (flattened state dicts,
optimiser states included), ``meta.json`` (non-tensor state, step, RNG states, sha256 of the
tensor file) and is published by an atomic rename of the folder; ``latest`` is found by listing.
Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genworld.errors import GenworldError

SEP = "::"
FORMAT = "genworld-checkpoint-v1"


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into ``{path: tensor}`` and a JSON skeleton with references."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous().clone()
            return {"__tensor__": path}
        if isinstance(obj, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
            return {"__ndarray__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[walk_key(k), walk(v, f"{path}{SEP}{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {
                "__list__": [walk(v, f"{path}{SEP}{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple),
            }
        if isinstance(obj, (int, float, str, bool)) or obj is None:
            return obj
        raise TypeError(f"cannot checkpoint object of type {type(obj).__name__} at {path}")

    def walk_key(k: Any) -> Any:
        return k if isinstance(k, (str, int)) else str(k)

    return tensors, walk(state, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [unflatten_state(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sweep_temp(folder: Path) -> None:
    """Remove ``.tmp-*`` folders that a killed write left behind (one writer per folder)."""
    if folder.exists():
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``folder/step_<step>`` atomically; keep the newest ``keep`` checkpoints. A temp
    folder left by a write that was killed (SIGKILL runs no cleanup) is removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_temp(folder)
    tmp = folder / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        tensors, skeleton = flatten_state(state)
        save_file(tensors, str(tmp / "tensors.safetensors"))
        _fsync(tmp / "tensors.safetensors")
        meta = {
            "format": FORMAT,
            "step": step,
            "state": skeleton,
            "sha256": _sha256(tmp / "tensors.safetensors"),
        }
        meta["meta_sha256"] = _meta_digest(meta)
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        final = folder / f"step_{step:09d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(folder)
    except OSError as err:
        raise GenworldError(
            f"writing checkpoint step {step} into {folder} failed ({err.strerror or err}); the "
            "previous checkpoint is intact — free disk space and rerun to resume"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    candidates = sorted(folder.glob("step_*")) if folder.exists() else []
    return candidates[-1] if candidates else None


LEGACY_KEYS = {"step", "state", "sha256"}
KEYS = {*LEGACY_KEYS, "format", "meta_sha256"}


def _meta_digest(meta: dict) -> str:
    body = {k: meta[k] for k in sorted(meta) if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _check_meta(meta: Any, path: Path) -> None:
    """The metadata must be intact: its own checksum (legacy checkpoints, which carry no format
    tag, have exactly the legacy keys and only the tensor checksum)."""
    keys = set(meta) if isinstance(meta, dict) else set()
    if keys == LEGACY_KEYS:
        return
    if keys != KEYS:
        raise GenworldError(
            f"checkpoint {path} has malformed metadata (keys {sorted(keys)}); delete it to resume "
            "from the previous one"
        )
    if meta["format"] != FORMAT:
        raise GenworldError(
            f"checkpoint {path} has format {meta['format']!r}, this genworld reads {FORMAT!r}; "
            "resume it with the genworld version that wrote it"
        )
    if _meta_digest(meta) != meta["meta_sha256"]:
        raise GenworldError(
            f"checkpoint {path} fails its metadata checksum (corrupt); delete it to resume from "
            "the previous one"
        )


def load_checkpoint(path: Path) -> tuple[int, dict[str, Any]]:
    """Verify (format, checksum) and load one checkpoint; any defect is a GenworldError."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        _check_meta(meta, path)
        tensor_file = path / "tensors.safetensors"
        if _sha256(tensor_file) != meta["sha256"]:
            raise GenworldError(
                f"checkpoint {path} fails its checksum (corrupt or half-written); delete it to "
                "resume from the previous one"
            )
        tensors = load_file(str(tensor_file))
        step, state = int(meta["step"]), unflatten_state(meta["state"], tensors)
    except GenworldError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as err:
        raise GenworldError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); delete it to resume "
            "from the previous one"
        ) from None
    return step, state


def resume_point(folder: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that loads cleanly, or None if there is none.

    A corrupt newer checkpoint (e.g. its disk filled up) is renamed ``corrupt-step_<N>`` (kept
    for inspection, never deleted) with a warning, and the previous one is used. Temp folders of
    killed writes are removed."""
    import sys

    _sweep_temp(folder)
    candidates = sorted(folder.glob("step_*"), reverse=True) if folder.exists() else []
    for path in candidates:
        try:
            return load_checkpoint(path)
        except GenworldError as err:
            aside = path.with_name(f"corrupt-{path.name}")
            os.replace(path, aside)
            print(
                f"genworld: warning: {err}; moved to {aside.name}, using an older one",
                file=sys.stderr,
            )
    return None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
