"""Progress bars (rich) that can be switched off for tests; where the output is not a terminal
(a background job's log), timestamped lines with counts and time left instead. A worker
process's bars (a table cell's updates in a process pool) are shown as lines under its parent's
bar: the worker writes them to a folder the parent reads (:func:`worker_bars`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_LIVE: list = []
"""The rich Progress of the bar open in this process, if any (rich shows one at a time)."""

CHANNEL = "GENWORLD_PROGRESS_DIR"
"""Environment variable a parent showing a bar sets for the workers it starts: the folder their
bars go to (one JSON file per worker process)."""


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, done: int = 0, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich progress bar with rate and ETA when enabled. The bar starts
    at ``done`` (the work a resumed job finished before): its rate and time left count only the
    work done since it opened. A bar opened inside another (a table cell's updates inside the
    table's cells) is a line under it, removed when it closes: a long cell shows its own
    progress, not only ``0/1``. In a worker whose parent shows a bar, every bar goes to the
    parent, whatever ``enabled`` says."""
    channel = _worker_channel()
    if channel is not None and not _LIVE:
        bars = _FileBars(channel / f"{os.getpid()}.json")
        try:
            with _root(bars, description, total, done) as advance:
                yield advance
        finally:
            bars.close()
        return
    if not (enabled or channel is not None):
        yield lambda n: None
        return
    if _LIVE:
        outer = _LIVE[-1]
        task = outer.add_task(f"  {description}", total=total, completed=done)
        try:
            yield lambda n: outer.advance(task, n)
        finally:
            outer.remove_task(task)
        return
    if not _interactive():  # a log file or a pipe: plain lines, not a live display
        with _root(_LineBars(), description, total, done) as advance:
            yield advance
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
        _root(progress, description, total, done) as advance,
    ):
        yield advance


@contextlib.contextmanager
def _root(bars, description: str, total: int, done: int) -> Iterator[Callable[[int], None]]:
    """``bars``' first bar, with ``bars`` where the bars opened inside it go."""
    task = bars.add_task(description, total=total, completed=done)
    _LIVE.append(bars)
    try:
        yield lambda n: bars.advance(task, n)
    finally:
        _LIVE.pop()


def _interactive() -> bool:
    """Whether a live display can show (a terminal or a notebook); else bars are lines."""
    from rich.console import Console

    console = Console()
    return console.is_terminal or console.is_jupyter


@dataclass
class _LineTask:
    id: int
    description: str
    completed: int
    total: int
    started: float
    initial: int = 0
    """Its count when it opened (or was first mirrored): the rate counts the work after it."""
    printed: float = -math.inf
    ended: bool = False
    """Its completing line is printed (a mirrored worker bar is updated until it closes)."""


class _LineBars:
    """Bars as timestamped lines on stderr, for a job whose output goes to a log: a bar's line
    when it opens, at most every ``ROOT_EVERY`` seconds (the outermost bar) or ``NESTED_EVERY``
    (the bars inside it) as it advances, and when it completes; each with its count, elapsed
    time and remaining time at the rate so far. The part of rich's Progress interface the
    bars use, with ``tasks``."""

    ROOT_EVERY = 30.0
    NESTED_EVERY = 300.0

    def __init__(self):
        self._tasks: dict[int, _LineTask] = {}
        self._next = 0

    @property
    def tasks(self) -> list[_LineTask]:
        return list(self._tasks.values())

    def add_task(self, description: str, total: int, completed: int = 0) -> int:
        task = _LineTask(self._next, description, completed, total, time.monotonic(), completed)
        self._tasks[task.id], self._next = task, self._next + 1
        self._show(task, force=bool(description))
        return task.id

    def advance(self, task: int, n: int) -> None:
        self._tasks[task].completed += n
        self._show(self._tasks[task])

    def update(self, task: int, *, description=None, completed=None, total=None) -> None:
        line = self._tasks[task]
        fresh = description is not None and description != line.description
        if description is not None:
            line.description = description
        if completed is not None:
            line.completed = completed
        if total is not None:
            line.total = total
        self._show(line, force=fresh)

    def remove_task(self, task: int) -> None:
        self._tasks.pop(task, None)

    def _show(self, task: _LineTask, force: bool = False) -> None:
        import sys

        now = time.monotonic()
        every = self.ROOT_EVERY if task.id == min(self._tasks) else self.NESTED_EVERY
        done = task.completed >= task.total
        if not task.description or task.ended:
            return
        if not (force or done or now - task.printed >= every):
            return
        task.printed, task.ended = now, done
        elapsed = now - task.started
        made = task.completed - task.initial
        left = elapsed / made * (task.total - task.completed) if made > 0 else None
        share = f" ({task.completed / task.total:.0%})" if task.total else ""
        remaining = "" if left is None or done else f", {_clock(left)} left"
        print(
            f"[{time.strftime('%H:%M:%S')}] {task.description} {task.completed}/{task.total}"
            f"{share}, {_clock(elapsed)} elapsed{remaining}",
            file=sys.stderr,
            flush=True,
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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

    def add_task(self, description: str, total: int, completed: int = 0) -> int:
        task = max(self.tasks, default=-1) + 1
        self.tasks[task] = [description, completed, total]
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
                if key not in shown:  # its count so far is where its rate starts
                    shown[key] = outer.add_task("", total=bar["total"], completed=bar["completed"])
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
