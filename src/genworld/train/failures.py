"""A study's cell that fails is recorded and skipped, so one diverging cell does not stop the
cells after it: :func:`guarded` runs a cell and, when it raises, :func:`cell_failure` writes
``error.json`` in the cell's folder (removed when a rerun finishes the cell) and returns a record
that takes the result's place; :func:`raise_failures` ends the command in one line once the
report of the finished cells is written."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from genworld.errors import GenworldError
from genworld.utils.io import atomic_write_json

FAILURE_FILE = "error.json"
"""A failed cell's error, in its folder until a rerun finishes the cell."""


def cell_failure(folder: Path, name: str, err: Exception, study: str) -> dict:
    """Record why the cell ``name`` failed (``error.json``: the error in one line and its
    traceback), say so on stderr, and return the record (``failed`` True) in place of a
    result."""
    first = (str(err).strip().splitlines() or [""])[0][:300]
    record = {
        "failed": True,
        "folder": name,
        "error": f"{type(err).__name__}: {first}" if first else type(err).__name__,
        "traceback": traceback.format_exc(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / FAILURE_FILE, record)
    print(
        f"genworld: warning: cell {name} failed ({record['error']}); {study} goes on without "
        "it, and a rerun retries it",
        file=sys.stderr,
        flush=True,
    )
    return record


def split_failures(results: list[dict | None]) -> tuple[list[dict], list[dict]]:
    """``(finished results, failure records)``; a None (a cell still in another process's
    hands, :func:`~genworld.utils.parallel.finish_held`) is in neither."""
    ran = [r for r in results if r is not None]
    return [r for r in ran if not r.get("failed")], [r for r in ran if r.get("failed")]


def raise_failures(failed: list[dict], planned: int) -> None:
    """One line naming the first failure and how many there were (nothing when none)."""
    if failed:
        raise GenworldError(
            f"{len(failed)} of {planned} cells failed (first: {failed[0]['folder']}: "
            f"{failed[0]['error']}); each cell's error and traceback are in its folder's "
            f"{FAILURE_FILE}; rerun the same command to retry them"
        )


def guarded(folder: Path, name: str, study: str, work: Callable[[], dict | None]) -> dict | None:
    """``work()``'s result, its cell's old ``error.json`` removed; or, when it raises, the
    failure's record (:func:`cell_failure`: the study goes on, a rerun retries the cell). None
    (``work`` put the cell off until later) passes through."""
    try:
        result = work()
    except Exception as err:
        return cell_failure(folder, name, err, study)
    if result is not None:
        (folder / FAILURE_FILE).unlink(missing_ok=True)
    return result
