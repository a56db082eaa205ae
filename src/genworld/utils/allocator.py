"""The C allocator's settings for training on CPU: keep freed memory instead of returning it.

glibc's malloc serves blocks above its mmap threshold (128 KiB, raised dynamically up to the
size of the largest block freed) with fresh ``mmap`` pages and gives them back on ``free``; it
also trims the heap's top once more than twice that threshold is free there. A training step
allocates and frees the same large tensors every time (CQL's (2, 7680, 256) critic activations
are 8 MB each), so every step touches fresh pages. ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` and
``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` remove those page faults and shorten the step (either one
alone is slower: setting one turns off the dynamic threshold; measured: docs/notes/history.md, "The
allocator"). The cost: the process keeps up
to 1 GiB of freed heap instead of returning it, and large blocks come from the heap (its
fragmentation can hold more memory than a block's size).

The CLI applies this at start (and in its worker processes); ``GENWORLD_MALLOC=default`` keeps
glibc's defaults. Library users call :func:`keep_freed_memory` themselves. Elsewhere than glibc
(macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "GENWORLD_MALLOC"
"""``default``: leave the C allocator as it is; unset or ``keep``: :func:`keep_freed_memory`."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks below this come from the heap: glibc's largest allowed value on 64-bit (a larger one is
refused), above a CQL or world-model activation at batch 256."""
TRIM_THRESHOLD = 1 << 30
"""Free memory kept at the heap's top before it is returned to the system."""

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module's doc) once per process, unless
    ``GENWORLD_MALLOC=default``. Returns whether they are set (False off glibc)."""
    if "set" in _state:
        return _state["set"]
    setting = os.environ.get(ENV, "keep")
    if setting not in ("keep", "default"):
        from genworld.errors import GenworldError

        raise GenworldError(f"{ENV}={setting!r}: use keep (the default) or default")
    ok = False
    if setting == "keep":
        mallopt = _glibc_mallopt()
        if mallopt is not None:
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
            ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    _state["set"] = ok
    return ok


def is_configured() -> bool:
    """Whether :func:`keep_freed_memory` has changed this process's allocator."""
    return _state.get("set", False)


def _glibc_mallopt():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS: no glibc thresholds
            return None
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
