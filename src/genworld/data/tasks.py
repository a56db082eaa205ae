"""Datasets of the task families (cheetah-vel, ant-dir) for the unseen-task study: per training
task a *mixed* dataset (rollouts of its expert's snapshot sequence, equal shares: the
replay-buffer approximation of PROTOCOL's medium-replay) and per task a *small* expert dataset
(the prompt / fine-tuning data of an unseen task), as Minari datasets under one root."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def task_spec(task: str, refs: dict[str, list[float]] | None = None):
    """The task env's EnvSpec, normalized with the study's reference returns when given."""
    from genworld.envs.registry import get_env_spec

    spec = get_env_spec(task)
    if refs and task in refs:
        spec = replace(spec, ref_min_score=refs[task][0], ref_max_score=refs[task][1])
    return spec


def build_task_datasets(
    root: Path,
    experts: Path,
    train: list[str],
    tasks: list[str],
    refs: dict,
    *,
    small_steps: int,
    mixed_steps: int,
    best_expert,
) -> None:
    """Mixed datasets of the training tasks and small expert datasets of every task, with the
    run's reference returns in their metadata, under ``root``. ``experts/<task>/snapshots``
    hold each task expert's snapshot sequence; ``best_expert(task)`` is its best actor."""
    from genworld.data.collect import collect
    from genworld.data.minari_io import dataset_dir, write_dataset
    from genworld.policies import load_policy

    for k, task in enumerate(tasks):
        spec = task_spec(task, refs)
        small_id = f"genworld/{task}/expert-v0"
        if not dataset_dir(small_id, root).exists():  # whole episodes: one env per episode
            envs = max(1, small_steps // spec.max_episode_steps)
            episodes = collect(task, best_expert(task), small_steps, seed=100 + k, num_envs=envs)
            write_dataset(
                small_id,
                spec,
                episodes,
                card={"kind": "small expert"},
                description=f"{task}: small expert dataset",
                algorithm_name="sac",
                root=root,
            )
        mixed_id = f"genworld/{task}/medium-replay-v0"
        if task in train and not dataset_dir(mixed_id, root).exists():
            snapshots = sorted((experts / task / "snapshots").glob("step_*.json"))
            share = mixed_steps // (len(snapshots) + 1)
            episodes = collect(task, None, mixed_steps - share * len(snapshots), seed=200 + k)
            for j, snap in enumerate(snapshots):
                actor = load_policy(snap.with_suffix(""))[0]
                episodes += collect(task, actor, share, seed=300 + 17 * k + j)
            write_dataset(
                mixed_id,
                spec,
                episodes,
                card={"kind": "mixed (snapshot sequence)"},
                description=f"{task}: random + the expert's snapshot sequence",
                algorithm_name="sac",
                root=root,
            )


def task_episodes(root: Path, task: str, kind: str):
    """The episodes of a task's ``mixed`` or ``small`` dataset."""
    from genworld.data.minari_io import read_episodes

    quality = "medium-replay" if kind == "mixed" else "expert"
    return read_episodes(f"genworld/{task}/{quality}-v0", root=root)


def family_dataset(family: str, root: Path, parts: list[tuple[str, str]]):
    """One 'env' (the family's robot) holding the episodes of ``(task, kind)`` parts."""
    from genworld.data.multi_env import MultiEnvDataset

    spec = replace(task_spec(parts[0][0]), name=family)
    episodes = [ep for task, kind in parts for ep in task_episodes(root, task, kind)]
    return MultiEnvDataset([(spec, episodes)])
