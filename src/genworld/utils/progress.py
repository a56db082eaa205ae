"""Progress bars (rich) that can be switched off for tests and non-interactive logs. A worker
process's bars (a table cell's updates in a process pool) are shown as lines under its parent's
bar: the worker writes them to a folder the parent reads (:func:`worker_bars`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_LIVE: list = []
"""The rich Progress of the bar open in this process, if any (rich shows one at a time)."""

CHANNEL = "GENWORLD_PROGRESS_DIR"
"""Environment variable a parent showing a bar sets for the workers it starts: the folder their
bars go to (one JSON file per worker process)."""


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich progress bar with rate and ETA when enabled. A bar opened
    inside another (a table cell's updates inside the table's cells) is a line under it,
    removed when it closes: a long cell shows its own progress, not only ``0/1``. In a worker
    whose parent shows a bar, every bar goes to the parent, whatever ``enabled`` says."""
    channel = _worker_channel()
    if channel is not None and not _LIVE:
        bars = _FileBars(channel / f"{os.getpid()}.json")
        try:
            with _root(bars, description, total) as advance:
                yield advance
        finally:
            bars.close()
        return
    if not (enabled or channel is not None):
        yield lambda n: None
        return
    if _LIVE:
        outer = _LIVE[-1]
        task = outer.add_task(f"  {description}", total=total)
        try:
            yield lambda n: outer.advance(task, n)
        finally:
            outer.remove_task(task)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with (
        Progress(*columns, transient=False) as progress,
        _root(progress, description, total) as advance,
    ):
        yield advance


@contextlib.contextmanager
def _root(bars, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """``bars``' first bar, with ``bars`` where the bars opened inside it go."""
    task = bars.add_task(description, total=total)
    _LIVE.append(bars)
    try:
        yield lambda n: bars.advance(task, n)
    finally:
        _LIVE.pop()


def _worker_channel() -> Path | None:
    """The parent's bar folder, in a worker process whose parent shows a bar; else None."""
    import multiprocessing

    channel = os.environ.get(CHANNEL)
    if channel and multiprocessing.parent_process() is not None:
        return Path(channel)
    return None


class _FileBars:
    """A worker's bars, with the part of rich's Progress interface nested bars use, written as
    JSON (at most twice a second, atomically) for the parent to show."""

    def __init__(self, path: Path):
        self.path = path
        self.tasks: dict[int, list] = {}
        self.written = 0.0

    def add_task(self, description: str, total: int) -> int:
        task = max(self.tasks, default=-1) + 1
        self.tasks[task] = [description, 0, total]
        self._write(force=True)
        return task

    def advance(self, task: int, n: int) -> None:
        self.tasks[task][1] += n
        self._write()

    def remove_task(self, task: int) -> None:
        self.tasks.pop(task, None)
        self._write(force=True)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, force: bool = False) -> None:
        from genworld.utils.io import atomic_write_json

        if force or time.monotonic() - self.written >= 0.5:
            self.written = time.monotonic()
            bars = [
                {"description": d, "completed": c, "total": t} for d, c, t in self.tasks.values()
            ]
            with contextlib.suppress(OSError):  # a bar is never worth failing a job for
                atomic_write_json(self.path, bars)


@contextlib.contextmanager
def worker_bars() -> Iterator[Callable[[], None]]:
    """While open, the worker processes started here send their bars to this process; yields
    ``poll()``, which shows them as lines under this process's bar (nothing when no bar shows)."""
    if not _LIVE or isinstance(_LIVE[-1], _FileBars):
        yield lambda: None
        return
    outer = _LIVE[-1]
    folder = Path(tempfile.mkdtemp(prefix="genworld-progress-"))
    previous = os.environ.get(CHANNEL)
    os.environ[CHANNEL] = str(folder)
    shown: dict[tuple[str, int], int] = {}

    def poll() -> None:
        seen = set()
        for path in sorted(folder.glob("*.json")):
            try:
                bars = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for i, bar in enumerate(bars):
                key = (path.name, i)
                seen.add(key)
                if key not in shown:
                    shown[key] = outer.add_task("", total=bar["total"])
                outer.update(
                    shown[key],
                    description=f"  {bar['description']}",
                    completed=bar["completed"],
                    total=bar["total"],
                )
        for key in set(shown) - seen:
            outer.remove_task(shown.pop(key))

    try:
        yield poll
    finally:
        if previous is None:
            os.environ.pop(CHANNEL, None)
        else:
            os.environ[CHANNEL] = previous
        for task in shown.values():
            outer.remove_task(task)
        shutil.rmtree(folder, ignore_errors=True)
