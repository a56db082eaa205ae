"""Independent jobs side by side in spawned processes (table cells, unseen-task experts/cells),
whose workers die with their parent (even a SIGKILLed one)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def process_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int,
    advance: Callable[[int], Any] | None = None,
    threads: int = 1,
) -> list:
    """``[fn(*job) for job in jobs]`` in job order: in this process when ``workers == 1``, else in
    ``workers`` spawned processes, each job with ``threads`` torch threads (two 1-thread
    processes on 2 cores each run at full speed; two 2-thread ones stall each other) and the
    parent's ``--matmul-precision``. ``advance(1)`` after each finished job. ``fn`` and the jobs
    must pickle (module-level function, plain arguments)."""
    if workers == 1:
        from genworld.utils.device import torch_threads

        results = []
        with torch_threads(threads):
            for job in jobs:
                results.append(fn(*job))
                if advance is not None:
                    advance(1)
        return results
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from genworld.utils.progress import worker_bars

    context = multiprocessing.get_context("spawn")
    results: list = [None] * len(jobs)
    with worker_bars() as show_workers:  # each job's own bars, under the caller's
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=prepare_worker, initargs=(threads,)
        )
        try:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            pending = set(futures)
            while pending:  # polled: Ctrl-C lands in a sleep, never inside a futures' lock
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    results[futures[future]] = future.result()
                    if advance is not None:
                        advance(1)
                show_workers()
                if pending:
                    time.sleep(0.2)
        except BaseException:
            stop_pool(pool)  # Ctrl-C or a failed job: do not wait for the jobs still running
            raise
        pool.shutdown()
    return results


def finished(paths: Sequence[Path]) -> dict[int, Any]:
    """The jobs a resumed run finished before: ``{i: the JSON at paths[i]}`` for each result
    file that exists."""
    return {i: json.loads(path.read_text()) for i, path in enumerate(paths) if path.exists()}


def map_unfinished(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    done: dict[int, Any],
    workers: int,
    advance: Callable[[int], Any] | None = None,
    threads: int = 1,
) -> list:
    """:func:`process_map` over the jobs not in ``done`` (:func:`finished`); the others' results
    are ``done``'s. ``advance(1)`` per job run here, so a progress bar that opened at the
    finished count (``progress_bar(done=…)``) times only the work still to do."""
    rest = [i for i in range(len(jobs)) if i not in done]
    return rejoin(done, process_map(fn, [jobs[i] for i in rest], workers, advance, threads))


def finish_held(
    results: list,
    retry: Callable[[int, bool], Any],
    wait: bool,
    study: str,
    show_progress: bool = False,
) -> list:
    """The results of the cells other processes sharing the study held, or that start from
    something one of them was making (None in ``results``): ``retry(i, wait)`` for each, which
    waits for that process (``wait``: the report then covers the whole study) or takes what it
    has let go since (``wait`` False: ``--wait_for_others false``). Returns ``results``, in
    their order, with None where a cell is still in another process's hands."""
    held = [i for i, result in enumerate(results) if result is None]
    if held and show_progress:
        then = (
            "waiting for them (Ctrl-C is safe: rerun to resume)"
            if wait
            else "leaving them to those processes (--wait_for_others false)"
        )
        print(
            f"{study}: {len(held)} cell(s) are run by other processes sharing its folder, or "
            f"start from something one of them is making; {then}",
            flush=True,
        )
    for i in held:
        results[i] = retry(i, wait)
    return results


def rejoin(done: dict[int, Any], fresh: Sequence[Any]) -> list:
    """Every job's result in job order: ``done``'s, and ``fresh`` (the results of the jobs not
    in ``done``, in their order) in the gaps."""
    ran = iter(fresh)
    return [done[i] if i in done else next(ran) for i in range(len(done) + len(fresh))]


def stop_pool(pool) -> None:
    """Terminate a ``ProcessPoolExecutor``'s workers and drop its queued jobs, without waiting
    for the running ones (resumable jobs continue from their checkpoints when rerun)."""
    processes = getattr(pool, "_processes", None) or {}  # (private: no public way to stop them)
    for process in list(processes.values()):
        process.terminate()
    queue = getattr(pool, "_call_queue", None)
    if queue is not None:  # a job still queued for a killed worker must not hold up our exit
        queue.cancel_join_thread()
    pool.shutdown(wait=False, cancel_futures=True)


def prepare_worker(threads: int = 1) -> None:
    """A worker process's settings (pool initializer; Ray tasks call it themselves): ``threads``
    torch threads, and the parent's allocator and matmul precision, inherited through the
    environment; it ends when its parent does."""
    import torch

    from genworld.utils.allocator import keep_freed_memory
    from genworld.utils.device import set_matmul_precision

    die_with_parent()
    torch.set_num_threads(threads)
    keep_freed_memory()  # GENWORLD_MALLOC, inherited from the parent like the precision
    set_matmul_precision()  # the parent's --matmul-precision, through the environment


PR_SET_PDEATHSIG = 1
"""``prctl`` option (linux/prctl.h): the signal a process gets when its parent ends."""


def die_with_parent() -> None:
    """End this worker process when the process that started it ends, however it ends: a
    SIGKILLed parent runs no cleanup, and its workers would otherwise run on, and hold their
    memory, with nobody to take their results. On Linux the kernel kills the worker
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``; the parent must start it from a thread that lives as
    long as the pool, as ``submit`` from the main thread does); elsewhere a thread waits on the
    parent and exits the process. Nothing happens in a process that is not a worker."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux") and _kill_on_parent_death():
        if os.getppid() != parent.pid:  # the parent ended before prctl: nobody would signal
            os._exit(1)
        return
    import threading

    threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()


def _kill_on_parent_death() -> bool:
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_after(parent) -> None:
    parent.join()
    os._exit(1)
