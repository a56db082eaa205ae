"""Atomic file writes: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared results
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure as a PNG, written atomically, and the figure closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def field_defaults(cfg: Any) -> dict[str, Any]:
    """The declared defaults of a (nested) config dataclass, JSON-normalised; fields without a
    default are left out. Nested configs give their own fields' defaults."""
    from dataclasses import MISSING, fields, is_dataclass

    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = field_defaults(value)
        elif f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out))


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted names of the fields that differ. A field the saved config lacks (added by a newer
    genworld) counts as equal when the current value is that field's default."""
    diff = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if key not in saved:
            if not (key in defaults and defaults[key] == current[key]):
                diff.append(name)
        elif key not in current:
            diff.append(name)
        elif isinstance(saved[key], dict) and isinstance(current[key], dict):
            sub = defaults.get(key) if isinstance(defaults.get(key), dict) else {}
            diff += config_differences(saved[key], current[key], sub, f"{name}.")
        elif saved[key] != current[key]:
            diff.append(name)
    return diff


RUNTIME_FIELDS = ("threads",)
"""Top-level config fields that change speed only, never results: not part of the resume check."""


def check_or_write_config(
    out: Path,
    cfg: Any,
    *,
    ignore: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    removed: tuple[str, ...] = (),
) -> None:
    """First run: write the config dataclass ``cfg`` (minus the ``ignore`` fields, plus ``extra``
    named config dataclasses) to ``out/config.json``. Rerun: it must be the same config (resume),
    else a GenworldError names the differing fields. A run saved by an older genworld resumes
    when the only fields added since hold their declared defaults. ``RUNTIME_FIELDS`` (thread
    counts) are always ignored: how fast a run goes never stops it resuming. ``removed``: dotted
    names of fields that no longer exist (and never changed results); a saved run that has them
    still resumes."""
    from dataclasses import asdict

    from genworld.errors import GenworldError

    ignore = (*ignore, *RUNTIME_FIELDS)
    current = {k: v for k, v in asdict(cfg).items() if k not in ignore}
    defaults = field_defaults(cfg)
    for name, sub in (extra or {}).items():
        current[name], defaults[name] = asdict(sub), field_defaults(sub)
    current = json.loads(json.dumps(current))

    path = Path(out) / "config.json"
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GenworldError(
            f"cannot create the run folder {out} ({err.strerror or err}); choose a writable --out"
        ) from None
    if path.exists():
        from genworld.config import without_fields

        saved = {k: v for k, v in json.loads(path.read_text()).items() if k not in ignore}
        saved = without_fields(saved, removed)
        diff = config_differences(saved, current, defaults)
        if diff:
            raise GenworldError(
                f"{out} holds a run with a different config ({', '.join(diff)}); use another --out "
                "or the same settings to resume"
            )
    else:
        try:
            atomic_write_json(path, current)
        except OSError as err:
            raise GenworldError(
                f"cannot write the run folder {out} ({err.strerror or err}); choose a writable "
                "--out (and check free disk space)"
            ) from None


def tensorboard_writer(out: Path, step: int = 0):
    """A TensorBoard SummaryWriter under ``out/tb``, or None if tensorboard is not installed.

    A resumed run (``step > 0``) opens a new event file (one per run segment, TensorBoard's
    way) that purges events logged after ``step`` by the killed segment, so no step appears
    twice."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(out) / "tb"), purge_step=step or None)


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (a killed run resumes from that checkpoint and redoes
    them), atomically."""
    path = Path(path)
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = [line for line in lines if json.loads(line)["step"] <= step]
        if len(keep) != len(lines):
            atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on ``path`` (created if missing) for the ``with`` block:
    processes that share an artefact (a world model several cells use) take turns building
    it. Without ``fcntl`` (Windows) it does not lock."""
    with claim(path, wait=True):
        yield


@contextlib.contextmanager
def claim(path: Path, *, wait: bool):
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the ``with`` block; yields
    True when held. With ``wait=False`` it yields False at once (holding nothing) if another
    process holds it. The lock dies with its process, even a killed one, so a claim is never
    stale. It works across machines where the file system supports ``flock`` (local, NFSv4).
    Without ``fcntl`` (Windows) nothing is locked and it yields True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere we run
        yield True
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
