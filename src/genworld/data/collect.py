"""Deterministic collection: a policy (or uniform-random actions) batched over an env pool,
recording whole episodes; large collections in independent lanes, run side by side in worker
processes, with the same bytes for any number of processes."""

from __future__ import annotations

import numpy as np
import torch

from genworld.data.episodes import Episode
from genworld.envs.vector import EnvPool
from genworld.errors import GenworldError
from genworld.policies import TanhGaussianActor
from genworld.utils.device import matmul_precision, simulator_threads

NUM_ENVS = 16
"""Envs per lane, stepped together (same-step auto-reset)."""

LANES = 2
LANE_STEPS = 100_000
"""A collection of ``steps`` is ``lanes(steps)`` independent lanes of ``num_envs`` envs each (one
per ``LANE_STEPS`` steps, at most ``LANES``), lane 0 seeded with ``seed`` (so a one-lane
collection is a plain collection seeded with ``seed``), lane ``k > 0`` from
``SeedSequence([seed, k])``, each given an equal share of the steps: the bytes are part of the
dataset's definition and do not depend on how many processes run the lanes. Small collections
stay one lane: every lane ends with ``num_envs`` episodes cut by the budget, which small
datasets should not have twice."""


def lanes(steps: int) -> int:
    return min(LANES, max(1, steps // LANE_STEPS))


def lane_seed(seed: int, lane: int) -> int:
    return seed if lane == 0 else int(np.random.SeedSequence([seed, lane]).generate_state(1)[0])


def collect(
    env: str,
    actor: TanhGaussianActor | None,
    steps: int,
    seed: int,
    *,
    num_envs: int = NUM_ENVS,
    progress=None,
    pool: CollectPool | None = None,
) -> list[Episode]:
    """Exactly ``steps`` transitions; unfinished episodes at the end are marked truncated.

    ``lanes(steps)`` lanes (``_collect``), one after the other here or side by side in
    ``pool``'s processes (the same episodes either way, lane 0's first)."""
    count = lanes(steps)
    shares = [steps // count + (1 if k < steps % count else 0) for k in range(count)]
    jobs = [
        (env, actor, share, lane_seed(seed, k), num_envs) for k, share in enumerate(shares) if share
    ]
    if pool is not None:
        return pool.run(jobs, progress)
    episodes = []
    with simulator_threads():
        for job in jobs:
            episodes += _collect(*job, progress)
    return episodes


class CollectPool:
    """``workers`` spawned processes (one torch thread each) that run collection lanes side by
    side: MuJoCo holds the GIL, so two cores need two processes. Start-up is about a second;
    keep one pool for a build's segments. Progress comes back through a shared counter."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.counter = context.Value("q", 0)
        self.executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_lane_worker_init, initargs=(self.counter,)
        )

    def run(self, jobs: list[tuple], progress) -> list[Episode]:
        import time
        from concurrent.futures.process import BrokenProcessPool

        reported = self.counter.value
        futures = [self.executor.submit(_lane_job, *job) for job in jobs]
        try:
            pending = futures
            while pending:
                # poll, not concurrent.futures.wait: a Ctrl-C then lands in the sleep, never
                # inside wait's hold on the futures' locks, which can leave the pool's manager
                # thread blocked and the interpreter's exit waiting on it
                time.sleep(0.25)
                pending = [f for f in pending if not f.done()]
                if progress is not None:
                    now = self.counter.value
                    progress(now - reported)
                    reported = now
            return [episode for future in futures for episode in future.result()]
        except BrokenProcessPool:
            raise GenworldError(
                "a data-collection worker process died (out of memory or killed?): rerun the "
                "command, or build with --workers 1"
            ) from None

    def close(self, *, kill: bool = False) -> None:
        """Shut the workers down; ``kill`` (on an error or Ctrl-C) stops lanes still running
        instead of waiting for them to finish."""
        from genworld.utils.parallel import stop_pool

        if kill:
            stop_pool(self.executor)
        else:
            self.executor.shutdown(cancel_futures=True)

    def __enter__(self) -> CollectPool:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(kill=kind is not None)


_COUNTER = None


def _lane_worker_init(counter) -> None:
    from genworld.utils.parallel import die_with_parent

    global _COUNTER
    _COUNTER = counter
    die_with_parent()  # a SIGKILLed build leaves no lane running on
    torch.set_num_threads(1)


def _lane_job(env, actor, steps, seed, num_envs) -> list[Episode]:
    def advance(n: int) -> None:
        with _COUNTER.get_lock():
            _COUNTER.value += n

    return _collect(env, actor, steps, seed, num_envs, advance)


def _collect(env, actor, steps: int, seed: int, num_envs: int, progress) -> list[Episode]:
    """One lane: ``num_envs`` envs (``EnvPool``, same-step auto-reset) and the policy batched over
    them, each env recording into preallocated ``(num_envs, max_episode_steps)`` arrays written
    for all envs at once every step; an ended episode is copied out and its row reused. The
    policy runs on one torch thread: a batch of 16 gains nothing from more, and OpenMP's spinning
    workers take the core MuJoCo steps on (``simulator_threads``). Its matmuls run in IEEE float32
    whatever ``--matmul-precision`` says: the bytes are the dataset's definition."""
    pool = EnvPool(env, num_envs, seed)
    try:
        with matmul_precision("highest"):
            return _record(env, actor, steps, seed, pool, progress)
    finally:
        pool.close()


def _record(env, actor, steps: int, seed: int, pool: EnvPool, progress) -> list[Episode]:
    spec = pool.spec
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed + 2)
    observations = pool.reset()
    horizon, n = spec.max_episode_steps, pool.num_envs
    obs_buf = np.empty((n, horizon + 1, spec.obs_dim))
    act_buf = np.empty((n, horizon, spec.act_dim))
    rew_buf = np.empty((n, horizon))
    term_buf, trunc_buf = np.zeros((n, horizon), bool), np.zeros((n, horizon), bool)
    length = np.zeros(n, dtype=np.int64)  # steps recorded in each env's current episode
    obs_buf[:, 0] = observations
    finished: list[Episode] = []

    def cut(i: int) -> Episode:
        t = length[i]
        return Episode.from_arrays(
            obs_buf[i, : t + 1].copy(),
            act_buf[i, :t].copy(),
            rew_buf[i, :t].copy(),
            term_buf[i, :t].copy(),
            trunc_buf[i, :t].copy(),
            obs_dim=spec.obs_dim,
            act_dim=spec.act_dim,
        )

    done = 0
    while done < steps:
        active = min(n, steps - done)
        if actor is None:
            actions = rng.uniform(-1.0, 1.0, size=(n, spec.act_dim))
        else:
            actions = actor.act(observations, deterministic=False, generator=generator)
        result = pool.step(actions, active)
        rows, t = np.arange(active), length[:active]
        if bool((t >= horizon).any()):
            raise GenworldError(
                f"{env}: an episode ran past max_episode_steps={horizon}; the EnvSpec and the "
                "env's time limit disagree"
            )
        act_buf[rows, t] = actions[:active]
        rew_buf[rows, t] = result.rewards[:active]
        term_buf[rows, t] = result.terminations[:active]
        trunc_buf[rows, t] = result.truncations[:active]
        obs_buf[rows, t + 1] = result.final_observations[:active]
        length[:active] += 1
        ended = result.terminations[:active] | result.truncations[:active]
        for i in np.flatnonzero(ended):
            finished.append(cut(i))
            length[i] = 0
            obs_buf[i, 0] = result.observations[i]
        observations = result.observations
        done += active
        if progress is not None:
            progress(active)
    for i in np.flatnonzero(length):
        trunc_buf[i, length[i] - 1] = True  # cut by the step budget: an end, not a terminal
        finished.append(cut(i))
    return finished
