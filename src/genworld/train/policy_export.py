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
from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_policy
from genworld.policies import PolicyCard, save_policy


def read_eval_log(run: Path) -> list[dict]:
    path = run / "eval.jsonl"
    if not path.exists():
        raise GenworldError(f"{run} has no eval.jsonl; is it a `genworld data train-policy` run?")
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[r["step"]] = r  # a resumed run may re-log a step: keep the last
    return [records[k] for k in sorted(records)]


MAX_REPLAY_SNAPSHOTS = 10
"""Shipped snapshots per medium-replay sequence (~300 KB each): a longer run's snapshots are
thinned to this many, evenly spaced, each then standing for a longer slice of the buffer."""


def _replay_sequence(env: str, records: list[dict], medium_step: int, warmup: int) -> list[dict]:
    """Which policy collected each slice of the replay buffer, up to the medium snapshot.

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
            {"name": f"{env}-replay-{source}", "buffer_steps": step - previous, "step": source}
        )
        previous = step
    return replay


VERIFY_EPISODES = 20
"""Stochastic episodes that re-evaluate each candidate snapshot before it is picked (the
training log's 5-episode scores are too noisy to pick on: a lucky one lands in a band)."""
VERIFY_TOP = 10
"""Expert candidates re-evaluated: the best ``VERIFY_TOP`` by the training log. Ten, not three:
the 5-episode log ranks snapshots badly where episodes vary (on ant a snapshot logged in 8th
place can verify best; measured: docs/RESULTS.md); each check costs seconds. The pick is the
best of these, so that score is optimistic: the pick is scored again on ``CONFIRM_EPISODES``
fresh episodes, and that unbiased score is the card's."""
CONFIRM_EPISODES = 50


def verify_snapshot(
    run: Path, record: dict, env: str, episodes: int = VERIFY_EPISODES, *, seed: int = 50_000
) -> dict:
    """``record`` with its stochastic scores replaced by a fresh ``episodes``-episode evaluation
    (episodes seeded from ``seed``, apart from the training log's), the log's kept as
    ``logged_normalized``."""
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


def pick_medium_and_expert(run: Path, env: str, records: list[dict]) -> tuple[dict, dict]:
    """Medium: the first snapshot whose verified score is in the env's medium band, trying the
    logged in-band ones in order (else the verified one nearest the band's centre). Expert: the
    best verified of the ``VERIFY_TOP`` best logged, scored again on ``CONFIRM_EPISODES``
    fresh episodes (its card's score)."""
    spec = get_env_spec(env)
    low, high = spec.medium_band
    center = (low + high) / 2
    done: dict[int, dict] = {}  # step -> verified record: a snapshot is evaluated once

    def verify(record: dict) -> dict:
        if record["step"] not in done:
            done[record["step"]] = verify_snapshot(run, record, env)
        return done[record["step"]]

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
    top = sorted(records, key=lambda r: r["stochastic_return"], reverse=True)[:VERIFY_TOP]
    best = max((verify(r) for r in top), key=lambda v: v["stochastic_return"])
    logged = next(r for r in records if r["step"] == best["step"])
    expert = verify_snapshot(run, logged, env, CONFIRM_EPISODES, seed=200_000)
    expert["selection_normalized"] = best["stochastic_normalized"]
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
    cfg = json.loads((run / "config.json").read_text())
    env, spec = cfg["env"], get_env_spec(cfg["env"])
    records = read_eval_log(run)
    low, high = spec.medium_band
    medium, expert = pick_medium_and_expert(run, env, records)
    warmup = learning_starts if learning_starts is not None else cfg["learning_starts"]
    replay = _replay_sequence(env, records, medium["step"], warmup)
    from genworld.policies import load_policy

    exported = {}
    for name, record in (("medium", medium), ("expert", expert)):
        if name not in only:
            continue
        actor, _ = load_policy(run / "snapshots" / f"step_{record['step']:09d}")
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
        }
        if name == "medium":
            extra["replay_snapshots"] = replay
            extra["medium_band"] = [low, high]
        card = PolicyCard(
            env,
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
        save_policy(actor, card, dest / f"{env}-{name}")
        exported[name] = card.to_json()
    for item in replay if "medium" in only else []:
        if "step" in item:
            actor, card = load_policy(run / "snapshots" / f"step_{item['step']:09d}")
            card = {**card, "name": f"replay-{item['step']}", "hidden": tuple(card["hidden"])}
            save_policy(actor, PolicyCard(**card), dest / item["name"])
    return exported
