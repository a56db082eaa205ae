"""Atomic file writes: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
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


def disk_full(err: BaseException) -> str:
    """The one-line message for an error caused by a full disk (or quota) anywhere in its
    chain of causes (h5py reports it inside another error), or '' for any other error."""
    import errno

    seen: BaseException | None = err
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        full = isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "No space left on device" in str(seen) or "errno = 28," in str(seen):
            where = getattr(seen, "filename", None)
            return (
                f"no space left on device{f' writing {where}' if where else ''}: free disk "
                "space, or point --out / MINARI_DATASETS_PATH at another disk, and rerun "
                "(finished steps and datasets are kept)"
            )
        seen = seen.__cause__ or seen.__context__
    return ""


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
    """What a saved config that lacks a field means for it: the field's declared default, or
    its ``metadata["absent"]`` where the field was added with a default that changes results
    (a run saved before it ran as ``absent``). JSON-normalised; fields without a default are
    left out. Nested configs give their own fields'."""
    from dataclasses import MISSING, fields, is_dataclass

    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = field_defaults(value)
        elif "absent" in f.metadata:
            out[f.name] = f.metadata["absent"]
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
    extendable: tuple[str, ...] = (),
) -> None:
    """First run: write the config dataclass ``cfg`` (minus the ``ignore`` fields, plus ``extra``
    named config dataclasses) to ``out/config.json``. Rerun: it must be the same config (resume),
    else a GenworldError names the differing fields. A run saved by an older genworld resumes
    when the only fields added since hold their declared defaults. ``RUNTIME_FIELDS`` (thread
    counts) are always ignored: how fast a run goes never stops it resuming. ``removed``: dotted
    names of fields that no longer exist (and never changed results); a saved run that has them
    still resumes. ``extendable``: fields a rerun may change (a step budget taken further); the
    saved config then takes the new values.

    Nothing is written before ``cfg``'s device is found to exist here (callers validate the
    rest before calling), so a refused command never blocks its corrected rerun; a folder whose run has no
    finished step yet (no checkpoint, no result: :func:`has_progress`) is taken over by another
    config. A folder that holds files but no config.json (another program's output) is refused,
    never overwritten."""

    from genworld.errors import GenworldError

    _check_runnable(cfg)
    current, defaults = _config_dict(cfg, ignore, extra)

    out = Path(out)
    path = out / "config.json"
    if not path.exists() and (files := _foreign_files(out)):
        raise GenworldError(
            f"{out} holds files but no genworld config.json ({', '.join(files[:3])}): not a "
            "genworld run folder; choose a new or empty --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GenworldError(
            f"cannot create the run folder {out} ({err.strerror or err}); choose a writable --out"
        ) from None
    if path.exists():
        diff = saved_config_differences(out, cfg, ignore=ignore, extra=extra, removed=removed)
        if not diff:
            _record_command(out, cfg)
            return
        if set(diff) <= set(extendable):
            atomic_write_json(path, current)  # the run goes on under the new budget
            _record_command(out, cfg)
            return
        if has_progress(out):
            kind = run_kind(json.loads(path.read_text()))
            raise GenworldError(
                f"{out} holds a run{f' of `{kind}`' if kind else ''} with a different config "
                f"({', '.join(diff)}); use another --out or the same settings to resume"
            )
        print(
            f"genworld: {out} held a run of another config ({', '.join(diff)}) with no finished "
            "step: starting it again with this one",
            file=sys.stderr,
        )
    try:
        atomic_write_json(path, current)
    except OSError as err:
        raise GenworldError(
            f"cannot write the run folder {out} ({err.strerror or err}); choose a writable "
            "--out (and check free disk space)"
        ) from None
    _record_command(out, cfg)


COMMAND_FILE = ".command.json"
"""The whole config of the last command started in a run folder, the fields config.json leaves
out (what a study may add later: methods, seeds, workers) included: what ``genworld status``
plans the folder's cells from."""


def _record_command(out: Path, cfg: Any) -> None:
    """Write ``cfg`` whole to ``COMMAND_FILE`` (a value JSON cannot hold, as its text: the record
    must never stop a command that config.json let through)."""
    from dataclasses import asdict

    text = json.dumps(asdict(cfg), indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(out / COMMAND_FILE, text.encode())


def _check_runnable(cfg: Any) -> None:
    """``cfg``'s ``device`` field resolved: ``--device cuda`` on a machine without CUDA is
    refused here, before a run folder is made (callers validate the rest first)."""
    if isinstance(getattr(cfg, "device", None), str):
        from genworld.utils.device import resolve_device

        resolve_device(cfg.device)


BOOKKEEPING = ("config.json", "metrics.jsonl")
"""Files a run writes before its first finished step (with locks, claims and TensorBoard
events): a folder holding only these has no progress to lose."""


def _bookkeeping(relative: Path) -> bool:
    name = relative.name
    return (
        name in BOOKKEEPING
        or name.startswith(".")
        or name.endswith((".claim", ".lock"))
        or "tb" in relative.parts[:-1]
    )


def has_progress(out: Path) -> bool:
    """Whether the run in ``out`` has finished a step: any file under it but its config, logs,
    locks and TensorBoard events (a checkpoint, a result, a report, a snapshot)."""
    out = Path(out)
    return any(
        path.is_file() and not _bookkeeping(path.relative_to(out)) for path in out.rglob("*")
    )


def _foreign_files(out: Path) -> list[str]:
    """The files at the top of an existing ``out`` (hidden ones aside): a folder with files
    and no config.json is not a genworld run's. config.json itself never counts: another run
    starting on the same ``out`` may write it between our look and this listing."""
    if not out.is_dir():
        return []
    return sorted(
        p.name
        for p in out.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != "config.json"
    )


def _config_dict(
    cfg: Any, ignore: tuple[str, ...], extra: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``cfg`` (plus ``extra`` named sub-configs) as config.json holds it, minus ``ignore`` and
    ``RUNTIME_FIELDS``, and its fields' declared defaults."""
    from dataclasses import asdict

    ignore = (*ignore, *RUNTIME_FIELDS)
    current = {k: v for k, v in asdict(cfg).items() if k not in ignore}
    defaults = field_defaults(cfg)
    for name, sub in (extra or {}).items():
        current[name], defaults[name] = asdict(sub), field_defaults(sub)
    return json.loads(json.dumps(current)), defaults


def saved_config_differences(
    out: Path,
    cfg: Any,
    *,
    ignore: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    removed: tuple[str, ...] = (),
) -> list[str]:
    """The fields in which ``out/config.json`` differs from ``cfg`` as
    :func:`check_or_write_config` compares them (nothing is written)."""
    from genworld.config import without_fields

    current, defaults = _config_dict(cfg, ignore, extra)
    ignore = (*ignore, *RUNTIME_FIELDS)
    saved = json.loads((Path(out) / "config.json").read_text())
    saved = without_fields({k: v for k, v in saved.items() if k not in ignore}, removed)
    return list(config_differences(saved, current, defaults))


def check_run_config(out: Path, cfg: Any, *, ignore: tuple[str, ...] = ()) -> None:
    """A finished run a report reads (perhaps copied in from another folder) was run with
    ``cfg``; else one line naming the fields that differ."""
    from genworld.errors import GenworldError

    if not (Path(out) / "config.json").exists():
        raise GenworldError(f"{out} has an evaluation log but no config.json: copy both")
    if diff := saved_config_differences(out, cfg, ignore=ignore):
        raise GenworldError(
            f"{out} was run with other settings ({', '.join(diff)}): it does not belong to this "
            "study; move it out"
        )


def check_report_folder(out: Path, cfg: Any, *, ignore: tuple[str, ...] = ()) -> None:
    """``--report-only``'s check, which writes nothing: ``out`` holds a run of ``cfg`` (its
    config.json, compared as :func:`check_or_write_config` does, ``ignore`` aside), else one
    line saying what to do."""
    from genworld.errors import GenworldError

    if not (Path(out) / "config.json").exists():
        raise GenworldError(
            f"{out} holds no run (no config.json): start it without --report-only first"
        )
    if diff := saved_config_differences(out, cfg, ignore=ignore):
        raise GenworldError(
            f"{out} holds a run with a different config ({', '.join(diff)}); give the settings "
            "it was run with"
        )


@contextlib.contextmanager
def claim_folder(out: Path, command: str, cfg: Any = None, *, shared: bool = False):
    """Hold ``out`` for this process for the ``with`` block (:func:`claim` on ``out/.claim``, the
    lock table cells take): a second process on the same folder is refused at once, in one
    line, instead of training the same things beside the first. ``shared``: for a study whose
    processes split its cells through claims of their own, any number of them hold it together,
    and only a command that wants the folder alone is refused. ``cfg``'s device is checked
    first, so a command that cannot run leaves no folder behind; a folder this call created is
    removed again when the block fails before writing anything but its config (held alone)."""
    from genworld.errors import GenworldError

    if cfg is not None:
        _check_runnable(cfg)
    out = Path(out)
    fresh = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GenworldError(
            f"cannot create the run folder {out} ({err.strerror or err}); choose a writable --out"
        ) from None
    with claim(out / ".claim", wait=False, shared=shared) as held:
        if not held:
            raise GenworldError(
                f"another `{command}` is running in {out}; wait for it to finish (rerun then to "
                "resume) or use another --out"
            )
        try:
            yield
        except BaseException:
            if fresh and not shared:  # held alone: no other process can be using it
                _remove_if_unused(out)
            raise


_BOOKKEEPING = frozenset({".claim", "config.json", COMMAND_FILE})


def _remove_if_unused(out: Path) -> None:
    """Remove ``out`` when it holds nothing but a claim file, a config and empty folders: what
    a command refused before its first result leaves."""
    files = [p for p in out.rglob("*") if not p.is_dir()]
    if any(p.parent != out or p.name not in _BOOKKEEPING for p in files):
        return
    shutil.rmtree(out, ignore_errors=True)


RUN_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("genworld scenarios", ("study", "train_scenarios")),
    ("genworld run", ("qualities", "policy_updates")),
    ("genworld table (or ablate / sweep beta)", ("algos", "budget")),
    ("genworld unseen", ("family", "small_steps")),
    ("genworld train world-model", ("model", "holdout_fraction")),
    ("genworld data train-policy", ("env", "learning_starts")),
    ("genworld train agnostic-iql", ("datasets", "log_every", "agent")),
    ("genworld train agnostic-ppo", ("total_timesteps", "ppo")),
    ("genworld train agnostic-transfer", ("pretrain", "finetune_steps")),
    ("genworld train agnostic-ablations", ("datasets", "variants", "last_k")),
    ("genworld finetune", ("world_model", "variant", "wpt")),
    ("genworld wpt-study", ("world_model", "last_k")),
)
"""Each command's output folder, recognised by fields its config.json keeps (not the ones a
study leaves out of its resume check, such as methods and seeds) and the kinds above it lack."""


def run_kind(config: dict[str, Any]) -> str | None:
    """The command (``genworld run``, …) whose config.json ``config`` is; None if unknown."""
    for command, keys in RUN_KINDS:
        if all(key in config for key in keys):
            return command
    return None


def read_run_config(folder: Path, command: str | tuple[str, ...], fix: str) -> dict[str, Any]:
    """``folder/config.json``, which ``command`` (a ``RUN_KINDS`` name, or any of several) must
    have written; else a GenworldError saying what the folder is (missing, empty, another
    command's) and ``fix``."""
    from genworld.errors import GenworldError

    commands = (command,) if isinstance(command, str) else command
    names = [f"`{c}`" for c in commands]
    wanted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    folder = Path(folder)
    if not folder.is_dir():
        raise GenworldError(f"{folder} does not exist; {fix}")
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise GenworldError(
            f"{folder} holds no config.json: not a {wanted} folder; {fix}"
        ) from None
    except (OSError, ValueError) as err:
        raise GenworldError(f"{path} is unreadable ({err}); {fix}") from None
    kind = run_kind(config) if isinstance(config, dict) else None
    if kind not in commands:
        made_by = f"a `{kind}` folder" if kind else "not a genworld run folder"
        raise GenworldError(f"{folder} is {made_by}, not a {wanted} one; {fix}")
    return config


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


def last_logged(logs: list[Path], prefix: str) -> dict[str, Any]:
    """The ``prefix`` metrics (prefix dropped) of the last record that has them in the first of
    ``logs`` (JSONL files, in order of preference) that exists; {} when none does or none has
    them."""
    for log in logs:
        if log.exists():
            for line in reversed(log.read_text().splitlines()):
                record = json.loads(line) if line.strip() else {}
                found = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
                if found:
                    return found
            return {}
    return {}


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


def claim_held(path: Path) -> bool:
    """Whether another process holds the :func:`claim` on ``path`` now (False when the file does
    not exist). It asks with a shared lock taken and dropped at once: a process claiming the
    same path in that instant finds it held and, like any claim refused with ``wait=False``,
    comes back to it later."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere we run
        return False
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def claim_file(folder: Path) -> Path:
    """The lock that claims ``folder`` (:func:`claim`): ``<name>.claim`` beside it, so that it
    exists before the folder does and ``genworld status`` finds whoever holds it."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".claim")


def claimed_result(
    folder: Path, result_file: str, work: Callable[[], dict | None], *, wait: bool
) -> dict | None:
    """A study's cell in ``folder``, run by one process at a time: its finished result (the
    JSON ``result_file``), or ``work()``'s, run while holding the cell's :func:`claim` (a lock
    next to the folder). While another process holds it: None at once (``wait=False``), or,
    once that process lets it go, the result it wrote (if it died first, ``work()`` here)."""
    folder = Path(folder)
    done = folder / result_file
    if done.exists():
        return json.loads(done.read_text())
    with claim(claim_file(folder), wait=wait) as held:
        if not held:
            return None
        if done.exists():  # finished by the process that held it
            return json.loads(done.read_text())
        return work()


@contextlib.contextmanager
def claim(path: Path, *, wait: bool, shared: bool = False):
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the ``with`` block; yields
    True when held. With ``wait=False`` it yields False at once (holding nothing) if another
    process holds it. ``shared``: a lock several processes hold together, refused only while
    one holds it exclusively (and refusing an exclusive claim meanwhile). The lock dies with
    its process, even a killed one, so a claim is never stale. It works across machines where
    the file system supports ``flock`` (local, NFSv4). Without ``fcntl`` (Windows) nothing is
    locked and it yields True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere we run
        yield True
        return
    with open(path, "a") as handle:
        try:
            kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(handle, kind if wait else kind | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
