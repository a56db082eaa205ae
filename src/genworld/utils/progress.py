"""Progress bars (rich) that can be switched off for tests and non-interactive logs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_LIVE: list = []
"""The rich Progress of the bar open in this process, if any (rich shows one at a time)."""


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich progress bar with rate and ETA when enabled. A bar opened
    inside another (a table cell's updates inside the table's cells) is a line under it,
    removed when it closes: a long cell shows its own progress, not only ``0/1``."""
    if not enabled:
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
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        _LIVE.append(progress)
        try:
            yield lambda n: progress.advance(task, n)
        finally:
            _LIVE.pop()
