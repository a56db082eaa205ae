"""Inspect and check local datasets: list, info (card + return stats), check (full validation)."""

from __future__ import annotations

from typing import Any

import numpy as np

from genworld.data.ids import listed_dataset_ids, parse_dataset_id
from genworld.data.minari_io import (
    CARD_KEY,
    dataset_dir,
    local_dataset_ids,
    read_episodes,
    read_metadata,
    ref_scores,
)
from genworld.envs.registry import ENV_SPECS
from genworld.errors import GenworldError


def list_datasets() -> list[dict[str, Any]]:
    """Every buildable genworld id (built or not) plus any other local Minari dataset."""
    local = set(local_dataset_ids())
    rows = []
    from genworld.data.build import missing_policies

    for dataset in listed_dataset_ids():
        rows.append(
            {
                "dataset_id": str(dataset),
                "built": str(dataset) in local,
                "missing_policies": missing_policies(str(dataset)),
            }
        )
    known = {r["dataset_id"] for r in rows}
    rows += [{"dataset_id": d, "built": True} for d in sorted(local - known)]
    for row in rows:
        if row["built"]:
            try:
                card = read_metadata(row["dataset_id"]).get(CARD_KEY) or {}
            except GenworldError:
                card = {"error": "unreadable"}
            card = card if isinstance(card, dict) else {}
            row["steps"] = card.get("steps")
            row["normalized_mean"] = card.get("normalized_mean")
            for key in ("episodes", "build_seconds", "build_steps_per_second"):
                row[key] = card.get(key)
            row["normalized_mean_complete_episodes"] = card.get("normalized_mean_complete_episodes")
            row["policy_normalized"] = {
                name: c.get("eval_normalized") for name, c in card.get("policy_cards", {}).items()
            }
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The built datasets of ``list_datasets`` as a Markdown table: size, the data's normalized
    return (all episodes, and complete ones: the budget cuts the last episode of every env), the
    behaviour policies' own scores from their cards, and the build time."""
    lines = [
        "| dataset | steps | episodes | normalized return (all / complete episodes) "
        "| behaviour policy score | build s | steps/s |",
        "|---|---:|---:|---|---|---:|---:|",
    ]

    def num(value, digits=1):
        return "–" if value is None else f"{value:,.{digits}f}"

    for row in rows:
        if not row["built"] or row.get("steps") is None:
            continue
        policies = ", ".join(
            f"{name} {num(score)}"
            for name, score in sorted(row["policy_normalized"].items())
            if "replay" not in name
        )
        replays = sum("replay" in name for name in row["policy_normalized"])
        if replays:
            policies += f"{', ' if policies else ''}{replays} replay snapshots"
        lines.append(
            f"| {row['dataset_id']} | {row['steps']:,} | {row.get('episodes') or '–'} | "
            f"{num(row['normalized_mean'])} / {num(row['normalized_mean_complete_episodes'])} | "
            f"{policies or 'uniform random'} | {num(row['build_seconds'])} | "
            f"{num(row['build_steps_per_second'], 0)} |"
        )
    return "\n".join(lines)


def _canonical(dataset_id: str) -> str:
    return str(parse_dataset_id(dataset_id))


def dataset_info(dataset_id: str) -> dict[str, Any]:
    dataset_id = _canonical(dataset_id)
    metadata = read_metadata(dataset_id)
    ref_min, ref_max = ref_scores(metadata, dataset_id)
    card = metadata.get(CARD_KEY)
    return {
        "dataset_id": dataset_id,
        "path": str(dataset_dir(dataset_id)),
        "total_steps": metadata.get("total_steps"),
        "total_episodes": metadata.get("total_episodes"),
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "description": metadata.get("description"),
        "card": card if isinstance(card, dict) else None,
    }


def info_card(info: dict[str, Any]) -> str:
    """A few readable lines from :func:`dataset_info`: size, how it was made, its returns."""
    card = info.get("card") or {}
    lines = [
        f"{info['dataset_id']}: {info['total_steps']} steps, {info['total_episodes']} episodes"
    ]
    if card.get("build_seconds") is not None:
        lines[0] += (
            f" (built in {card['build_seconds']:.1f} s, "
            f"{card.get('build_steps_per_second', 0):.0f} steps/s, seed {card.get('seed', '?')})"
        )
    policies = card.get("policy_cards") or {}
    made_by = ", ".join(
        f"{name} (normalized {c.get('eval_normalized', float('nan')):.1f})"
        for name, c in policies.items()
    )
    lines.append(f"behaviour: {made_by or 'uniform random actions'}")
    if card.get("normalized_mean") is not None:
        lines.append(
            f"normalized return: {card['normalized_mean']:.1f} ± {card.get('normalized_std', 0):.1f}"
            f" (reference returns {info['ref_min_score']:g} / {info['ref_max_score']:g})"
        )
    if note := budget_note(card, info["total_episodes"], info["total_steps"]):
        lines.append(note)
    if card.get("success_rate") is not None:  # Meta-World: overall and per noise level
        per_sigma = ", ".join(
            f"sigma {s['sigma']:g}: {s['success_rate']:.2f}" for s in card.get("segments", [])
        )
        lines.append(f"success rate: {card['success_rate']:.2f} of episodes ({per_sigma})")
    if card.get("provenance"):
        lines.append(f"data: {card['provenance']}")
    if card.get("reward_free"):
        lines.append(f"reward-free: {card['reward_free']}")
    lines.append(f"path: {info['path']} (--json: the whole card)")
    return "\n".join(lines)


def budget_note(card: dict[str, Any], episodes: int, steps: int) -> str:
    """What the step budget did to the episodes: the last episode of each env collecting side by
    side is cut where the budget ends, and in a small dataset those partial episodes (lower
    returns) are most of it. '' when none was cut, or the card does not say."""
    cut = card.get("budget_cut_episodes")
    complete = card.get("normalized_mean_complete_episodes")
    if cut is None and complete is None and episodes:  # an older card: none whole means all cut
        cut = episodes
    if not cut:
        return ""
    whole = (
        f"whole episodes alone: {complete:.1f}"
        if complete is not None
        else "no episode is whole: build more --steps for whole ones"
    )
    return (
        f"cut short: {cut} of {episodes} episodes end where the {steps:,}-step budget ran out, "
        f"not at a terminal or the time limit, so the normalized return above counts partial "
        f"episodes ({whole})"
    )


def check_dataset(dataset_id: str) -> dict[str, Any]:
    """Read and validate every episode; cross-check spec dims, step counts and ref scores."""
    dataset_id = _canonical(dataset_id)
    metadata = read_metadata(dataset_id)
    ref_min, ref_max = ref_scores(metadata, dataset_id)
    env_name = dataset_id.split("/")[1]
    spec = ENV_SPECS.get(env_name)
    episodes = read_episodes(
        dataset_id, obs_dim=spec.obs_dim if spec else None, act_dim=spec.act_dim if spec else None
    )
    steps = sum(len(ep) for ep in episodes)
    if steps != int(metadata.get("total_steps", steps)):
        raise GenworldError(
            f"dataset {dataset_id}: {steps} steps in the data, metadata says "
            f"{metadata['total_steps']}; rebuild with --force"
        )
    if spec and (ref_min, ref_max) != (spec.ref_min_score, spec.ref_max_score):
        raise GenworldError(
            f"dataset {dataset_id}: ref scores ({ref_min}, {ref_max}) differ from the registry's "
            f"({spec.ref_min_score}, {spec.ref_max_score})"
        )
    returns = np.array([ep.episode_return for ep in episodes])
    return {
        "dataset_id": dataset_id,
        "episodes": len(episodes),
        "steps": steps,
        "return_mean": float(returns.mean()),
        "normalized_mean": float(100 * (returns.mean() - ref_min) / (ref_max - ref_min)),
        "ok": True,
    }
