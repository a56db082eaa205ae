"""Updates per second of genworld's model-free offline algorithms, and of d3rlpy's if installed.

Every algorithm trains on the same synthetic 2-env dataset (hopper- and halfcheetah-shaped:
obs 11/17, actions 3/6; random observations, uniform actions) at batch 256 with 256x256 networks,
including batch sampling (as in ``train_offline`` and d3rlpy's ``fit``). d3rlpy (in the peers venv
of ``make peers``, never installed by this script) gets the same transitions as one padded dataset
(observation = padded obs + one-hot env id, action = padded action), its closest equivalent.

    genworld bench algos [--quick] [--json FILE] [--threads N]
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genworld.algos.registry import AlgoContext, build_agent
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.synthetic import random_dataset
from genworld.train.table import BUDGETS
from genworld.train.world_model_source import provide_world_model
from genworld.utils import allocator
from genworld.utils.device import fast_cpu_bfloat16

ENVS = ("hopper", "halfcheetah")
ALGOS = ("bc", "cql", "iql", "td3bc")
HIDDEN = (256, 256)
BATCH = 256
COMPILABLE = ("iql",)
"""Algorithms with a ``compile`` option, also timed compiled (only where compiling pays: compiled
TD3+BC and CQL run slower than eager; measured: docs/notes/history.md)."""
VARIANT_ROWS = {  # contender: its ratio to d3rlpy's figure, how the ratio line names it
    "genworld_compiled": ("ratio_compiled", "compile=True"),
    "genworld_ood_auto": (
        "ratio_ood_auto",
        "ood_precision=auto (bfloat16 scoring of the sampled actions)",
    ),
}
D3RLPY_ALGOS = {
    "bc": "BCConfig",
    "cql": "CQLConfig",
    "iql": "IQLConfig",
    "td3bc": "TD3PlusBCConfig",
}


def synthetic_dataset(episodes: int = 10, steps: int = 1000, seed: int = 0) -> MultiEnvDataset:
    return random_dataset(ENVS, episodes, steps, seed)


def rate(update: Callable[[], object], seconds: float, warmup: int) -> float:
    """Updates per second of ``update`` over at least ``seconds`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        update()
    count, start = 0, time.perf_counter()
    while True:
        update()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def contention_warning(threads: int) -> str | None:
    """A warning when ``threads`` OpenMP threads are much slower than one on a small op, i.e.
    the cores are busy with other work and multi-thread timings measure the scheduler."""
    if threads < 2:
        return None
    x, layer = torch.randn(BATCH, 32), torch.nn.Linear(32, HIDDEN[0])
    times = {}
    for n in (1, threads):
        torch.set_num_threads(n)
        times[n] = rate(lambda: layer(x), 0.5, 10)
    torch.set_num_threads(threads)
    if times[threads] < times[1] / 3:
        return (
            f"warning: a small layer runs {times[1] / times[threads]:.0f}x slower on {threads} "
            "threads than on 1: the cores are busy with other work, so these timings are not "
            "this code's speed (rerun on idle cores, or with --threads 1)"
        )
    return None


def genworld_update(
    name: str, dataset: MultiEnvDataset, compile: bool = False, **config: Any
) -> Callable[[], object]:
    """One update of genworld's ``name`` at the bench's sizes; ``config``: more of its config
    fields."""
    torch.manual_seed(0)
    overrides: dict = {"hidden": HIDDEN, "batch_size": BATCH, **config}
    if name in COMPILABLE:
        overrides["compile"] = compile
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="full",
        overrides=overrides,
        world_models=provide_world_model,
        updates=BUDGETS["full"].updates,  # a full run's schedules (an update costs the same)
    )
    agent = build_agent(name, ctx)
    generator = torch.Generator().manual_seed(0)
    return lambda: agent.update(generator)


def d3rlpy_update(name: str, dataset: MultiEnvDataset) -> Callable[[], object]:
    import d3rlpy

    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for k, env in enumerate(dataset.envs):
        n, d, a = len(env), env.spec.obs_dim, env.spec.act_dim
        obs = np.zeros((n, dataset.obs_max + dataset.num_envs), np.float32)
        obs[:, :d], obs[:, dataset.obs_max + k] = env.observations.numpy(), 1.0
        act = np.zeros((n, dataset.act_max), np.float32)
        act[:, :a] = env.actions.numpy()
        ends = (env.steps_left == 1).numpy()
        observations.append(obs)
        actions.append(act)
        rewards.append(env.rewards.numpy())
        terminals.append(env.terminations.numpy() * ends)
        timeouts.append(ends & (env.terminations.numpy() == 0))
    data = d3rlpy.dataset.MDPDataset(
        np.concatenate(observations),
        np.concatenate(actions),
        np.concatenate(rewards)[:, None],
        np.concatenate(terminals),
        timeouts=np.concatenate(timeouts),
    )
    encoder = d3rlpy.models.encoders.VectorEncoderFactory(list(HIDDEN))
    kwargs: dict = {"batch_size": BATCH}
    if name == "bc":
        kwargs["encoder_factory"] = encoder
    else:
        kwargs["actor_encoder_factory"] = encoder
        kwargs["critic_encoder_factory"] = encoder
    if name == "cql":
        kwargs.update(n_action_samples=10, conservative_weight=10.0, alpha_learning_rate=0.0)
    if name == "iql":
        kwargs.update(expectile=0.7, weight_temp=3.0, max_weight=100.0)
    if name == "td3bc":
        kwargs.update(alpha=2.5, update_actor_interval=2)
    algo = getattr(d3rlpy.algos, D3RLPY_ALGOS[name])(**kwargs).create(device="cpu:0")
    algo.build_with_dataset(data)
    return lambda: algo.update(data.sample_transition_batch(BATCH))


def interleaved(
    contenders: dict[str, tuple[Callable[[], object], str]],
    seconds: float,
    rounds: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Updates/s of each ``(update, matmul precision)`` per round. Every round measures every
    contender once, in an order rotated each round, so a slow phase of a shared machine (other
    tenants, frequency changes) hits all of them instead of whichever ran then."""
    names = list(contenders)
    for update, precision in contenders.values():
        torch.set_float32_matmul_precision(precision)
        for _ in range(warmup):
            update()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            update, precision = contenders[name]
            torch.set_float32_matmul_precision(precision)
            rates[name].append(rate(update, seconds, 0))
    return rates


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over rounds of the ratio measured within each round."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def run(quick: bool = False, seconds: float | None = None, repeats: int | None = None):
    """``genworld bench algos``: updates/s of genworld's bc/cql/iql/td3bc and, in the peers venv
    (``make peers``: d3rlpy pins gymnasium 1.0.0), of d3rlpy's same algorithm (ratio = genworld /
    d3rlpy, both at float32 precision; ratio_medium_precision = genworld with ``--matmul-precision medium``;
    ratio_compiled = genworld with ``compile=True``, float32, for the COMPILABLE algorithms;
    ratio_ood_auto = CQL with ``ood_precision="auto"``, on CPUs where that means bfloat16)."""
    from genworld.bench.common import BenchResult

    seconds = seconds or (1.0 if quick else 5.0)
    repeats = repeats or (1 if quick else 6)
    warmup = 3 if quick else 20
    dataset = synthetic_dataset(episodes=2 if quick else 10)
    try:
        import d3rlpy  # noqa: F401

        have_d3rlpy = True
    except ImportError:
        have_d3rlpy = False
    res = BenchResult("algos")
    res.notes.append(
        f"algos: torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH}, "
        f"hidden {HIDDEN}, {repeats} interleaved rounds of {seconds:g} s per contender; "
        "rates: median over rounds; ratios: median of the rounds' own ratios"
    )
    if not have_d3rlpy:
        res.notes.append(
            "algos: d3rlpy is not installed: no ratio (it lives in .venv-peers: `make peers`, "
            "then .venv-peers/bin/genworld bench algos)"
        )
    warning = contention_warning(torch.get_num_threads())
    if warning:
        res.notes.append(warning)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    # d3rlpy as its users run it (glibc's default allocator), measured before genworld's
    # allocator setting changes this process; `ratio` compares both under genworld's setting
    default_allocator: dict[str, float] = {}
    if have_d3rlpy and not allocator.is_configured():
        for name in ALGOS:
            with contextlib.suppress(Exception):  # a failure is reported by the main pass
                default_allocator[name] = statistics.median(
                    rate(d3rlpy_update(name, dataset), seconds, warmup) for _ in range(repeats)
                )
    elif have_d3rlpy:
        res.notes.append(
            "algos: the allocator was set before this benchmark: no default-allocator figures"
        )
    if allocator.keep_freed_memory():
        res.notes.append(
            "algos: genworld's allocator setting (utils/allocator.py) for both libraries in "
            "`ratio`; `ratio_vs_default_allocator`: d3rlpy with glibc's default allocator"
        )
    for name in ALGOS:
        contenders: dict[str, tuple[Callable[[], object], str]] = {
            "genworld": (genworld_update(name, dataset), "highest"),
            "genworld_medium": (genworld_update(name, dataset), "medium"),
        }
        figure: dict = {}
        suffix: dict[str, str] = {}
        if name in COMPILABLE:
            start = time.perf_counter()
            update = genworld_update(name, dataset, compile=True)
            update()  # compiles
            figure["compile_seconds"] = time.perf_counter() - start
            suffix["genworld_compiled"] = f" (after {figure['compile_seconds']:.0f} s of compiling)"
            contenders["genworld_compiled"] = (update, "highest")
        if name == "cql" and fast_cpu_bfloat16():  # auto = bfloat16 scoring on this CPU
            contenders["genworld_ood_auto"] = (
                genworld_update(name, dataset, ood_precision="auto"),
                "highest",
            )
        d3rlpy_error = None
        if have_d3rlpy:
            try:
                contenders["d3rlpy"] = (d3rlpy_update(name, dataset), "highest")
            except Exception as exc:  # an API drift in d3rlpy must not hide our numbers
                d3rlpy_error = f"{type(exc).__name__}: {exc}"
        rates = interleaved(contenders, seconds, repeats, warmup)
        torch.set_float32_matmul_precision("highest")
        for key, values in rates.items():
            figure[f"{key}_updates_per_s"] = statistics.median(values)
        ours = figure["genworld_updates_per_s"]
        medium = figure["genworld_medium_updates_per_s"]
        line = f"algos/{name}: genworld {ours:.1f} updates/s"
        if "d3rlpy" in rates:
            theirs = figure["d3rlpy_updates_per_s"]
            figure.update(
                ratio=paired_ratio(rates["genworld"], rates["d3rlpy"]),
                ratio_medium_precision=paired_ratio(rates["genworld_medium"], rates["d3rlpy"]),
            )
            line += (
                f" = {figure['ratio']:.2f}x d3rlpy ({theirs:.1f} updates/s); "
                f"--matmul-precision medium {medium:.1f} = "
                f"{figure['ratio_medium_precision']:.2f}x"
            )
            if name in default_allocator:
                default = default_allocator[name]
                figure["d3rlpy_default_allocator_updates_per_s"] = default
                figure["ratio_vs_default_allocator"] = ours / default
                line += f"; vs d3rlpy, default allocator ({default:.1f}): {ours / default:.2f}x"
            for key, (ratio_key, label) in VARIANT_ROWS.items():
                if key in rates:
                    figure[ratio_key] = paired_ratio(rates[key], rates["d3rlpy"])
                    line += (
                        f"; {label} {figure[f'{key}_updates_per_s']:.1f} = "
                        f"{figure[ratio_key]:.2f}x{suffix.get(key, '')}"
                    )
        if d3rlpy_error:
            figure["d3rlpy_error"] = d3rlpy_error
            line += f" (d3rlpy failed: {d3rlpy_error.split(':')[0]})"
        res.figures[name] = figure
        res.ratios.append(line)
    torch.set_float32_matmul_precision(previous)
    return res
