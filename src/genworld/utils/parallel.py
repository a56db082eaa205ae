"""Independent jobs side by side in spawned processes (table cells, unseen-task experts/cells)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def process_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int,
    advance: Callable[[int], Any] | None = None,
) -> list:
    """``[fn(*job) for job in jobs]`` in job order: in this process when ``workers == 1``, else in
    ``workers`` spawned processes with one torch thread each (two 1-thread processes on 2 cores
    each run at full speed) and the parent's ``--matmul-precision``. ``advance(1)`` after each
    finished job. ``fn`` and the jobs must pickle (module-level function, plain arguments)."""
    if workers == 1:
        results = []
        for job in jobs:
            results.append(fn(*job))
            if advance is not None:
                advance(1)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    results: list = [None] * len(jobs)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=prepare_worker)
    try:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if advance is not None:
                advance(1)
    except BaseException:
        stop_pool(pool)  # Ctrl-C or a failed job: do not wait for the jobs still running
        raise
    pool.shutdown()
    return results


def stop_pool(pool) -> None:
    """Terminate a ``ProcessPoolExecutor``'s workers and drop its queued jobs, without waiting
    for the running ones (resumable jobs continue from their checkpoints when rerun)."""
    processes = getattr(pool, "_processes", None) or {}  # (private: no public way to stop them)
    for process in list(processes.values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def prepare_worker() -> None:
    """A worker process's settings (pool initializer; Ray tasks call it themselves): one torch
    thread, and the parent's allocator and matmul precision, inherited through the environment."""
    import torch

    from genworld.utils.allocator import keep_freed_memory
    from genworld.utils.device import set_matmul_precision

    torch.set_num_threads(1)
    keep_freed_memory()  # GENWORLD_MALLOC, inherited from the parent like the precision
    set_matmul_precision()  # the parent's --matmul-precision, through the environment
