"""Pick and export the behaviour policies of a ``genworld data train-policy`` run.

``export_policies`` picks the *medium* policy (first snapshot whose stochastic score is in the
env's medium band, PROTOCOL.md) and the *expert* (best stochastic score) among the snapshots that
:mod:`genworld.train.behaviour` saved, re-evaluates the candidates (the training log's scores are
too noisy to pick on), and writes them with cards into the policy folder, together with the
snapshot sequence that medium-replay replays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.envs.registry import get_env_spec
from genworld.envs.scenarios import condition_keys, randomized_task, slug
from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_policy
from genworld.policies import PolicyCard, save_policy
from genworld.utils.io import read_run_config


def read_eval_log(run: Path) -> list[dict]:
    path = run / "eval.jsonl"
    if not path.exists():
        raise GenworldError(
            f"{run} has no eval.jsonl: its first snapshot is not evaluated yet; let `genworld "
            "data train-policy` run past its first snapshot, then export"
        )
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[r["step"]] = r  # a resumed run may re-log a step: keep the last
    return [records[k] for k in sorted(records)]


MAX_REPLAY_SNAPSHOTS = 10
"""Shipped snapshots per medium-replay sequence (~300 KB each): a longer run's snapshots are
thinned to this many, evenly spaced, each then standing for a longer slice of the buffer."""


def _replay_sequence(prefix: str, records: list[dict], medium_step: int, warmup: int) -> list[dict]:
    """Which policy collected each slice of the replay buffer, up to the medium snapshot (or
    another last one), the snapshots named ``<prefix>-<step>``.

    The warm-up is uniform random; the slice between snapshots k-1 and k is attributed to
    snapshot k-1 (the first slice after warm-up to the first snapshot). At most
    ``MAX_REPLAY_SNAPSHOTS`` snapshots, evenly spaced, the medium one always last.
    """
    replay = [{"name": "uniform-random", "buffer_steps": warmup}]
    previous = warmup
    steps = [r["step"] for r in records if r["step"] <= medium_step]
    if len(steps) > MAX_REPLAY_SNAPSHOTS:
        picks = np.linspace(len(steps) - 1, 0, MAX_REPLAY_SNAPSHOTS).round().astype(int)
        steps = [steps[i] for i in sorted(set(picks.tolist()))]
    for k, step in enumerate(steps):
        if step <= previous:
            continue
        source = steps[k - 1] if k > 0 and steps[k - 1] >= warmup else step
        replay.append(
            {"name": f"{prefix}-{source}", "buffer_steps": step - previous, "step": source}
        )
        previous = step
    return replay


VERIFY_EPISODES = 20
"""Stochastic episodes that re-evaluate each candidate snapshot before it is picked (the
training log's 5-episode scores are too noisy to pick on: a lucky one lands in a band)."""
VERIFY_TOP = 10
"""Expert candidates re-evaluated: the best ``VERIFY_TOP`` by the training log. Ten, not three:
the 5-episode log ranks snapshots badly where episodes vary (on ant a snapshot logged in 8th
place can verify best; measured: docs/notes/history.md); each check costs seconds. The pick is the
best of these, so that score is optimistic: the pick is scored again on ``CONFIRM_EPISODES``
fresh episodes, and that unbiased score is the card's."""
CONFIRM_EPISODES = 50


def verify_snapshot(
    run: Path, record: dict, env: str, episodes: int | None = None, *, seed: int = 50_000
) -> dict:
    """``record`` with its stochastic scores replaced by a fresh ``episodes``-episode evaluation
    (episodes seeded from ``seed``, apart from the training log's), the log's kept as
    ``logged_normalized``."""
    episodes = episodes or VERIFY_EPISODES
    from genworld.policies import load_policy

    spec = get_env_spec(env)
    actor, _ = load_policy(run / "snapshots" / f"step_{record['step']:09d}")
    # (the default seed gives 1_000_003 + step: the stream of the shipped cards' selection scores)
    gen = torch.Generator().manual_seed(1_000_003 + record["step"] + seed - 50_000)
    returns = evaluate_policy(
        env, lambda o: actor.act(o, deterministic=False, generator=gen), episodes, seed
    )
    return {
        **record,
        "logged_normalized": record["stochastic_normalized"],
        "stochastic_return": float(returns.mean()),
        "stochastic_return_std": float(returns.std()),
        "stochastic_normalized": float(spec.normalized_score(returns.mean())),
        "verify_episodes": episodes,
    }


HALF_EXPERT_BAND = (0.4, 0.6)
"""A DeepMind Control medium policy's band, as fractions of the expert's score: MrCoM's medium
is "a behavior policy with half the maximum return" (seed 002, App. C.2)."""


def medium_band(env: str, expert_normalized: float) -> tuple[float, float]:
    """The normalized-score band a medium policy of ``env`` is picked in: the robot's D4RL-style
    band (PROTOCOL.md), or, for DeepMind Control tasks, around half the expert's score."""
    if env.startswith("dmc-"):
        return HALF_EXPERT_BAND[0] * expert_normalized, HALF_EXPERT_BAND[1] * expert_normalized
    return get_env_spec(env).medium_band


def pick_medium_and_expert(run: Path, env: str, records: list[dict]) -> tuple[dict, dict]:
    """Expert: the best verified of the ``VERIFY_TOP`` best logged, scored again on
    ``CONFIRM_EPISODES`` fresh episodes (its card's score). Medium: the first snapshot whose
    verified score is in the medium band (:func:`medium_band`), trying the logged in-band ones
    in order (else the verified one nearest the band's centre)."""
    done: dict[int, dict] = {}  # step -> verified record: a snapshot is evaluated once

    def verify(record: dict) -> dict:
        if record["step"] not in done:
            done[record["step"]] = verify_snapshot(run, record, env)
        return done[record["step"]]

    top = sorted(records, key=lambda r: r["stochastic_return"], reverse=True)[:VERIFY_TOP]
    best = max((verify(r) for r in top), key=lambda v: v["stochastic_return"])
    logged = next(r for r in records if r["step"] == best["step"])
    expert = verify_snapshot(run, logged, env, CONFIRM_EPISODES, seed=200_000)
    expert["selection_normalized"] = best["stochastic_normalized"]
    low, high = medium_band(env, expert["stochastic_normalized"])
    center = (low + high) / 2

    verified = []
    for r in [r for r in records if low <= r["stochastic_normalized"] <= high]:
        v = verify(r)
        verified.append(v)
        if low <= v["stochastic_normalized"] <= high:
            break
    if not verified:  # nothing logged in band: the nearest logged, verified
        nearest = min(records, key=lambda r: abs(r["stochastic_normalized"] - center))
        verified.append(verify(nearest))
    confirmed = [v for v in verified if low <= v["stochastic_normalized"] <= high]
    medium = (
        confirmed[0]
        if confirmed
        else min(verified, key=lambda v: abs(v["stochastic_normalized"] - center))
    )
    return medium, expert


def export_policies(
    run: Path,
    dest: Path,
    *,
    learning_starts: int | None = None,
    only: tuple[str, ...] = ("medium", "expert"),
) -> dict[str, Any]:
    """Pick medium + expert snapshots from a run (``pick_medium_and_expert``, re-evaluated with
    ``VERIFY_EPISODES`` episodes) and write those named in ``only``, with cards, into ``dest``
    (the medium-replay snapshot sequence goes with the medium policy)."""
    for name in only:
        if name not in ("medium", "expert"):
            raise GenworldError(f"cannot export {name!r}: choose medium and/or expert")
    cfg = read_run_config(
        run,
        "genworld data train-policy",
        "give the output folder of `genworld data train-policy ENV` (runs/policies/ENV-s0 by "
        "default)",
    )
    env, spec = cfg["env"], get_env_spec(cfg["env"])
    records = read_eval_log(run)
    warmup = learning_starts if learning_starts is not None else cfg["learning_starts"]
    if cfg.get("intrinsic", "none") != "none":
        return export_exploration(run, dest, cfg, records, warmup)
    medium, expert = pick_medium_and_expert(run, env, records)
    low, high = medium_band(env, expert["stochastic_normalized"])
    stem = slug(env)  # file names: dataset ids' form of a scenario name
    replay = _replay_sequence(f"{stem}-replay", records, medium["step"], warmup)
    mixed = _replay_sequence(f"{stem}-replay", records, expert["step"], warmup)
    task = randomized_task(env)
    exported = {}
    for name, record in (("medium", medium), ("expert", expert)):
        if name not in only:
            continue
        extra = {
            "snapshot_step": record["step"],
            "deterministic_return": record["deterministic_return"],
            "logged_normalized": record["logged_normalized"],
            **(
                {"selection_normalized": record["selection_normalized"]}
                if "selection_normalized" in record
                else {}
            ),
            "logged_episodes": cfg["eval_episodes"],
            "in_target": (low <= record["stochastic_normalized"] <= high)
            if name == "medium"
            else record["stochastic_normalized"] >= spec.expert_target,
            **({"condition_keys": list(condition_keys(task))} if task else {}),
        }
        if name == "medium":
            extra["replay_snapshots"] = replay
            extra["medium_band"] = [low, high]
        elif env.startswith("dmc-"):
            extra["mixed_snapshots"] = mixed  # MrCoM's "mix": the whole training's snapshots
        card = _card(cfg, name, record, extra)
        _export_snapshot(run, record["step"], card, dest / f"{stem}-{name}")
        exported[name] = card.to_json()
    sequences = [replay] if "medium" in only else []
    sequences += [mixed] if "expert" in only and env.startswith("dmc-") else []
    _export_sequence(run, [item for seq in sequences for item in seq], dest)
    return exported


def export_exploration(
    run: Path, dest: Path, cfg: dict, records: list[dict], warmup: int
) -> dict[str, Any]:
    """An exploration run's snapshots, as WPT's reward-free data replays them: the uniform
    warm-up, then each snapshot for the share of the buffer it collected, listed as
    ``exploration_snapshots`` in the card ``<env>-explore`` (the last snapshot's actor)."""
    env = cfg["env"]
    last = records[-1]
    sequence = _replay_sequence(f"{slug(env)}-explore", records, last["step"], warmup)
    extra = {
        "snapshot_step": last["step"],
        "intrinsic": cfg["intrinsic"],
        "exploration_snapshots": sequence,
        "intrinsic_reward": last.get("intrinsic_reward"),
    }
    record = {**last, "verify_episodes": cfg["eval_episodes"]}
    card = _card(cfg, "explore", record, extra)
    _export_snapshot(run, last["step"], card, dest / f"{slug(env)}-explore")
    _export_sequence(run, sequence, dest)
    return {"explore": card.to_json()}


def _card(cfg: dict, name: str, record: dict, extra: dict) -> PolicyCard:
    spec = get_env_spec(cfg["env"])
    return PolicyCard(
        cfg["env"],
        name,
        spec.obs_dim,
        spec.act_dim,
        "sac",
        record["step"],
        cfg["seed"],
        tuple(cfg["sac"]["hidden"]),
        record["stochastic_return"],
        record["stochastic_return_std"],
        record["stochastic_normalized"],
        record["verify_episodes"],
        "stochastic",
        extra,
    )


def _export_snapshot(run: Path, step: int, card: PolicyCard, stem: Path) -> None:
    from genworld.policies import load_policy

    actor, _ = load_policy(run / "snapshots" / f"step_{step:09d}")
    save_policy(actor, card, stem)


def _export_sequence(run: Path, sequence: list[dict], dest: Path) -> None:
    """The snapshots a sequence names, each with its own training card."""
    from genworld.policies import load_policy

    for item in sequence:
        if "step" in item:
            actor, card = load_policy(run / "snapshots" / f"step_{item['step']:09d}")
            card = {**card, "name": f"replay-{item['step']}", "hidden": tuple(card["hidden"])}
            save_policy(actor, PolicyCard(**card), dest / item["name"])
