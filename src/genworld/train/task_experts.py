"""Task experts of the unseen-task study: per task a SAC expert (trained, copied from the
shipped assets when they hold this recipe's, or, for ant-dir, the shipped Ant expert's snapshots
turned into the task's direction), its reference returns (uniform-random → 0, best expert
evaluation → 100), and the export of a finished study's experts as shipped assets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from genworld.data.tasks import task_spec
from genworld.envs.tasks import get_family, split_names
from genworld.errors import GenworldError
from genworld.utils.io import atomic_write_json
from genworld.utils.parallel import process_map


def expert_source(cfg) -> str:
    """``sac`` or ``turned`` (``cfg.experts`` with ``auto`` resolved)."""
    if cfg.experts == "auto":
        return "turned" if get_family(cfg.family).directions else "sac"
    return cfg.experts


def train_experts(cfg, tasks: list[str], out: Path, show_progress: bool) -> None:
    jobs = [(cfg, task, out, show_progress and cfg.workers == 1) for task in tasks]
    process_map(train_expert, jobs, cfg.workers, threads=cfg.threads)


def train_expert(cfg, task: str, out: Path, show_progress: bool) -> None:
    from genworld.train.behaviour import train_behaviour_policy

    folder = out / "experts" / task
    if expert_source(cfg) == "turned":
        if not (folder / TURNED_MARK).exists():
            turned_expert(cfg, task, folder)
        return
    if (folder / SHIPPED_MARK).exists() or use_shipped(cfg, task, folder):
        return
    train_behaviour_policy(expert_config(cfg, task), folder, show_progress=show_progress)


TURNED_MARK = "turned.json"
"""Written into ``out/experts/<task>`` when its snapshots are the shipped Ant SAC's, turned."""


def turned_expert(cfg, task: str, folder: Path) -> None:
    """The task's expert folder (snapshots, ``eval.jsonl``) from the shipped Ant SAC run's
    snapshots (``ant-replay-*``, then ``ant-expert``), each turned into the task's direction and
    evaluated there as a trained expert's snapshots are (stochastic and deterministic returns,
    ``cfg.eval_episodes`` episodes). Written in a staging folder, then renamed."""
    from genworld.algos.sac import SACConfig
    from genworld.envs.tasks import parse_task, turn_ant_policy
    from genworld.policies import ASSETS, load_policy
    from genworld.train.behaviour import BehaviourConfig, save_snapshot

    family, index = parse_task(task)
    theta = float(family.goals()[index])
    sources = sorted(
        ASSETS.glob("ant-replay-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
    ) + [ASSETS / "ant-expert.json"]
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    records, provenance = [], []
    for source in sources:
        actor, card = load_policy(source.with_suffix(""))
        step = int(card["train_steps"])
        behaviour = BehaviourConfig(
            env=task,
            total_steps=step,
            seed=int(card["seed"]),
            eval_episodes=cfg.eval_episodes,
            sac=SACConfig(hidden=tuple(card["hidden"])),
        )
        records.append(save_snapshot(turn_ant_policy(actor, theta), behaviour, staging, step, step))
        provenance.append({"step": step, "source": source.stem})
    with open(staging / "eval.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    atomic_write_json(
        staging / TURNED_MARK,
        {"task": task, "theta": theta, "snapshots": provenance, "rule": "W1 @ ant_frame_matrix"},
    )
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def expert_config(cfg, task: str):
    from genworld.algos.sac import SACConfig
    from genworld.train.behaviour import BehaviourConfig

    steps = cfg.expert_steps
    return BehaviourConfig(
        env=task,
        total_steps=steps,
        seed=0,
        learning_starts=min(5_000, steps // 4),
        snapshot_every=max(steps // 5, 1),
        checkpoint_every=max(steps // 5, 1),
        eval_episodes=cfg.eval_episodes,
        device=cfg.device,
        sac=SACConfig(hidden=cfg.expert_hidden),
    )


SHIPPED_MARK = "shipped.json"
"""Written into ``out/experts/<task>`` when that expert was copied from the shipped assets."""


def recipe(config: dict) -> dict:
    """An expert's BehaviourConfig JSON without what does not change its weights."""
    from genworld.utils.io import RUNTIME_FIELDS

    return {k: v for k, v in config.items() if k not in ("device", *RUNTIME_FIELDS)}


def as_json(config) -> dict:
    """A config dataclass as its JSON file holds it (tuples as lists)."""
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(config)))


def shipped_config(source: Path) -> dict:
    """A shipped expert's BehaviourConfig JSON with the fields added since it was trained at
    their defaults (a field that did not exist then was not in use)."""
    from genworld.config import from_dict
    from genworld.train.behaviour import BehaviourConfig

    return as_json(from_dict(BehaviourConfig, json.loads((source / "config.json").read_text())))


def use_shipped(cfg, task: str, folder: Path) -> bool:
    """Copy the shipped expert of ``task`` into ``folder`` (a new one) if it was trained with
    ``cfg``'s recipe; False (train it) otherwise."""
    from genworld.envs.tasks import TASK_ASSETS

    source = TASK_ASSETS / task
    if not cfg.shipped_experts or folder.exists() or not (source / "config.json").exists():
        return False
    if recipe(shipped_config(source)) != recipe(as_json(expert_config(cfg, task))):
        return False
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    atomic_write_json(staging / SHIPPED_MARK, {"source": str(source)})
    staging.rename(folder)  # a killed copy leaves only the staging folder
    return True


def export_task_experts(run: Path, dest: Path | None = None) -> dict[str, Any]:
    """Ship the task experts of a finished ``genworld unseen`` run: per task its eval log, its
    recipe and snapshots (every snapshot of a training task: its mixed dataset rolls them all
    out; the best one of an unseen task), into ``dest/<task>/``, and the family's reference
    returns into ``dest/<family>.json``. Returns that JSON."""
    from genworld.envs.tasks import TASK_ASSETS, parse_task
    from genworld.train.policy_export import read_eval_log
    from genworld.utils.io import read_run_config

    dest = TASK_ASSETS if dest is None else dest
    config = read_run_config(run, "genworld unseen", "give a `genworld unseen` output folder")
    if not (run / "references.json").exists():
        raise GenworldError(
            f"{run} has no references.json: run `genworld unseen --out {run}` past its "
            "references stage first"
        )
    refs = json.loads((run / "references.json").read_text())
    train, test = split_names(config["family"], config["split"])
    for task in train + test:
        source = run / "experts" / task
        if task not in refs or not (source / "eval.jsonl").exists():
            raise GenworldError(f"{run}: the expert of {task} is not finished; rerun the run")
        records = read_eval_log(source)
        best = best_record(records)
        keep = [r for r in records if task in train or r is best]
        staging = dest / f"{task}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "snapshots").mkdir(parents=True)
        for record in keep:
            stem = f"step_{record['step']:09d}"
            for suffix in (".json", ".safetensors"):
                shutil.copy2(source / "snapshots" / (stem + suffix), staging / "snapshots")
        lines = [json.dumps(r) for r in keep]
        (staging / "eval.jsonl").write_text("\n".join(lines) + "\n")
        shutil.copy2(source / "config.json", staging / "config.json")
        shutil.rmtree(dest / task, ignore_errors=True)
        staging.rename(dest / task)
    family = {
        "family": config["family"],
        "reference_returns": {str(parse_task(t)[1]): refs[t] for t in train + test},
        "source": f"genworld unseen --scale {config['scale']} (experts: {config['expert_steps']} "
        "SAC steps)",
        "note": "random = mean return of a uniform-random policy over 10 episodes; expert = the "
        "best evaluated return of the task's SAC expert (stochastic, eval_episodes episodes)",
    }
    atomic_write_json(dest / f"{config['family']}.json", family)
    return family


def references(cfg, tasks: list[str], out: Path) -> dict[str, list[float]]:
    """[random return, expert return] per task (cached in references.json)."""
    from genworld.eval.rollout import evaluate_policy
    from genworld.train.policy_export import read_eval_log

    path = out / "references.json"
    refs = json.loads(path.read_text()) if path.exists() else {}
    for task in tasks:
        if task in refs:
            continue
        random = evaluate_policy(task, uniform_policy(task_spec(task).act_dim), 10, seed=10_000)
        random = random.mean()
        best = best_record(read_eval_log(out / "experts" / task))["stochastic_return"]
        refs[task] = [float(random), float(max(best, random + 1e-6))]
        atomic_write_json(path, refs)
    return refs


def uniform_policy(act_dim: int):
    rng = np.random.default_rng(0)
    return lambda obs: rng.uniform(-1, 1, (len(obs), act_dim))


def best_record(records: list[dict]) -> dict:
    """An expert's best evaluation (stochastic return): its snapshot is the task's expert."""
    return max(records, key=lambda r: r["stochastic_return"])


def best_expert(out: Path, task: str):
    from genworld.policies import load_policy
    from genworld.train.policy_export import read_eval_log

    best = best_record(read_eval_log(out / "experts" / task))
    return load_policy(out / "experts" / task / "snapshots" / f"step_{best['step']:09d}")[0]
