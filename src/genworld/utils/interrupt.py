"""Stop at a safe point: Ctrl-C or SIGTERM asks a loop to stop after its current step."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopRequest:
    """Set by the first SIGINT / SIGTERM while :func:`deferred_interrupt` is active."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT or SIGTERM only sets ``requested``: the loop finishes
    its step (no half-applied update), writes a checkpoint and raises. A second signal raises
    ``KeyboardInterrupt`` at once. Outside the main thread (where Python cannot install
    handlers) the signals keep their usual behaviour."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
