"""``genworld unseen``: does one world model generalise to tasks it has not seen? (seed 000 §6.2,
Fig. 4, on cheetah-vel / ant-dir, data made here).

Stages, each resumable in ``out``:

1. **experts** — a SAC expert per task (the 10 tasks of the split), ``genworld.train.behaviour``;
2. **references** — per task: uniform-random policy return (→ 0) and the expert's best evaluated
   return (→ 100), in ``references.json``; every score below is normalized with them;
3. **data** — per training task a *mixed* dataset (rollouts of the expert's snapshot sequence,
   equal shares: the replay-buffer approximation of PROTOCOL's medium-replay), per task a
   *small* expert dataset (the prompt / fine-tuning data of an unseen task); Minari datasets
   under ``out/datasets``;
4. **world model** — one TGW model on the training tasks' mixed data. The tasks of a family are
   one robot, so they are one env for the model: the task is known only through the prompt
   (the task-state prompter's job);
5. **policies** — per method, task and seed, a SAC policy trained in the world model from that
   task's start states and prompts (training tasks: their mixed data; unseen tasks: their small
   data), evaluated in the task's real env:

   - ``tgw``: the world model as it is (zero-shot on unseen tasks: prompts only);
   - ``tgw-finetune``: its reward module (``rew_net``) fine-tuned on the task's
     small dataset first;
   - ``tgw-newr``: the task's true reward function on imagined transitions. The simulator's
     velocity is the displacement over the frame, and positions are not observed, so it is
     estimated as the mean of the observed velocities before and after the step (cheetah-vel:
     observation 8, ``qvel[0]``; ant-dir: observations 13–14, the torso's planar velocity):
     its mean absolute error against the simulator's reward stays well below the reward's
     per-step spread (tests/test_unseen.py; measured: docs/RESULTS.md). ant-dir's
     contact term is not observable and is left out (it is ~1e-3).

6. **Prompt-DT baseline** (:mod:`genworld.algos.prompt_dt`), one model per seed trained on the
   training tasks' mixed data with the same number of updates as a TGW policy, prompts taken
   from each task's small expert dataset (as the reference, which prompts with expert
   demonstrations). The tasks share all parameters (``DTConfig.shared_params``: no task id, one
   normaliser fitted on the family's data), so a task is known only through its prompt:

   - ``prompt-dt``: the trained model, prompted with the task's small data (zero-shot on unseen
     tasks); its score is the final model over ``eval_episodes × last_k`` episodes;
   - ``prompt-dt-finetune``: a copy fine-tuned ``finetune_steps`` updates on the task's small
     dataset (the reference's few-shot fine-tuning), scored as the other cells (last-k
     evaluations).

7. **BC floor** (``bc``, not in the default methods): behaviour cloning of the task's own data
   (training tasks: mixed; unseen tasks: the two expert episodes every TGW policy also sees
   through its behaviour term), ``policy_updates`` updates, scored as the TGW cells: how far
   copying the task's data alone goes.

A finished study takes more methods or seeds later (``methods`` and ``seeds`` are not part of
the resume check): a rerun with them trains only the cells it lacks.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.config import check_scale, resolve
from genworld.envs.tasks import get_family, split, task_name
from genworld.errors import GenworldError
from genworld.utils.io import atomic_write_json, check_or_write_config
from genworld.utils.parallel import process_map

DEFAULT_METHODS = ("tgw", "tgw-finetune", "tgw-newr", "prompt-dt", "prompt-dt-finetune")
METHODS = (*DEFAULT_METHODS, "bc")
"""Every method; ``bc`` (the floor of copying the task's data) runs when asked for."""


@dataclass(frozen=True)
class UnseenConfig:
    family: str = "cheetah-vel"
    split: str = "paper"
    """paper (10 tasks at equal intervals, first 5 train) or prompt-dt (its test list)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 5
    scale: str = "mini"
    device: str = "auto"
    experts: str = "auto"
    """Where each task's expert (and its snapshot sequence, the mixed data's source) comes from:
    ``sac`` trains a SAC expert per task (``expert_steps``); ``turned`` (ant-dir only) turns the
    shipped Ant SAC expert and its training snapshots into each task's direction
    (:func:`genworld.envs.tasks.turn_ant_policy`: the simulator is exactly symmetric under turns
    about z); ``auto``: ``turned`` for ant-dir, ``sac`` otherwise, because a 30k-step SAC expert
    on ant-dir does worse than standing still while the turned shipped expert runs in every
    direction tried (measured: docs/RESULTS.md, "Unseen tasks: ant-dir")."""
    expert_steps: int = 30_000
    """SAC steps per task expert (``experts`` = sac)."""
    expert_hidden: tuple[int, ...] = (256, 256)
    mixed_steps: int = 20_000
    """Transitions per training task's mixed dataset."""
    small_steps: int = 400
    """Transitions of each task's small expert dataset (2 episodes at 200 steps)."""
    wm_steps: int = 1_500
    finetune_steps: int = 300
    policy_updates: int = 10_000
    """Per (method, task, seed): a TGW policy's SAC updates, and Prompt-DT's training updates."""
    eval_every: int = 1_000
    policy_init_alpha: float = 0.1
    """SAC's initial temperature. The task rewards are ~−1 a step, so SAC's default 1.0 makes
    the entropy bonus (α·H, H up to ~4 here) outweigh them: the soft Q turns positive while
    every reward is negative and the policy stands still on every task; α₀ = 0.1, with the
    behaviour weight below, lets it move (measured: docs/RESULTS.md, "Unseen tasks:
    cheetah-vel"). Full scale: 1.0 (plain MBPO)."""
    policy_bc_alpha: float = 2.5
    """Weight of the RL term against the behaviour term (``SACConfig.bc_alpha``; 2.5 is TD3+BC's
    published value; the table's mini policy learner uses 1.0). Full scale: 0 (plain MBPO)."""
    eval_episodes: int = 3
    last_k: int = 3
    workers: int = 1
    """Experts and cells run side by side in this many processes (one torch thread each; two
    1-thread processes on 2 cores run at full speed each). Not part of the resume check."""
    shipped_experts: bool = True
    """Use the shipped expert of a task (``assets/tasks/<task>``) when it was trained with this
    config's recipe, instead of training it (same weights, so the same datasets and scores).
    Not part of the resume check."""

    def validate(self) -> None:
        get_family(self.family)
        if self.experts not in ("auto", "sac", "turned"):
            raise GenworldError(f"experts must be auto, sac or turned, got {self.experts!r}")
        if self.experts == "turned" and self.family != "ant-dir":
            raise GenworldError(
                f"experts=turned needs a family whose tasks are turns of one robot's task "
                f"(ant-dir), not {self.family}; use experts=sac"
            )
        split(self.family, scheme=self.split)
        for m in self.methods:
            if m not in METHODS:
                raise GenworldError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
        for name in (
            "seeds",
            "expert_steps",
            "mixed_steps",
            "small_steps",
            "wm_steps",
            "finetune_steps",
            "policy_updates",
            "eval_every",
            "eval_episodes",
            "last_k",
            "workers",
        ):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")
        if self.policy_init_alpha <= 0:
            raise GenworldError(
                f"policy_init_alpha must be positive (SAC's initial temperature), got "
                f"{self.policy_init_alpha}"
            )
        if self.policy_bc_alpha < 0:
            raise GenworldError(
                f"policy_bc_alpha must be ≥ 0 (0 = plain SAC), got {self.policy_bc_alpha}"
            )


SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "expert_steps": 400,
        "expert_hidden": (32, 32),
        "mixed_steps": 400,
        "small_steps": 200,
        "wm_steps": 20,
        "finetune_steps": 10,
        "policy_updates": 20,
        "eval_every": 10,
        "eval_episodes": 1,
        "last_k": 2,
    },
    "mini": {},
    "full": {
        "expert_steps": 300_000,
        "mixed_steps": 100_000,
        "small_steps": 1_000,
        "wm_steps": 50_000,
        "finetune_steps": 2_000,
        "policy_updates": 100_000,
        "eval_every": 5_000,
        "eval_episodes": 10,
        "last_k": 10,
        "policy_init_alpha": 1.0,
        "policy_bc_alpha": 0.0,
    },
}


def config_for_scale(scale: str, **overrides: Any) -> UnseenConfig:
    """The scale's preset, then ``overrides`` (None = keep)."""
    check_scale(scale)
    return resolve(UnseenConfig, {"scale": scale, **SCALES[scale]}, overrides)


# ------------------------------------------------------------------ stages 1-3
def _experts(cfg: UnseenConfig, tasks: list[str], out: Path, show_progress: bool) -> None:
    jobs = [(cfg, task, out, show_progress and cfg.workers == 1) for task in tasks]
    process_map(_expert, jobs, cfg.workers)


def expert_source(cfg: UnseenConfig) -> str:
    """``sac`` or ``turned`` (``cfg.experts`` with ``auto`` resolved)."""
    if cfg.experts == "auto":
        return "turned" if cfg.family == "ant-dir" else "sac"
    return cfg.experts


def _expert(cfg: UnseenConfig, task: str, out: Path, show_progress: bool) -> None:
    from genworld.train.behaviour import train_behaviour_policy

    folder = out / "experts" / task
    if expert_source(cfg) == "turned":
        if not (folder / TURNED_MARK).exists():
            _turned_expert(cfg, task, folder)
        return
    if (folder / SHIPPED_MARK).exists() or _use_shipped(cfg, task, folder):
        return
    train_behaviour_policy(_expert_config(cfg, task), folder, show_progress=show_progress)


TURNED_MARK = "turned.json"
"""Written into ``out/experts/<task>`` when its snapshots are the shipped Ant SAC's, turned."""


def _turned_expert(cfg: UnseenConfig, task: str, folder: Path) -> None:
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


def _expert_config(cfg: UnseenConfig, task: str):
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


# ------------------------------------------------------------------ shipped task experts
SHIPPED_MARK = "shipped.json"
"""Written into ``out/experts/<task>`` when that expert was copied from the shipped assets."""


def _recipe(config: dict) -> dict:
    """An expert's BehaviourConfig JSON without what does not change its weights."""
    from genworld.utils.io import RUNTIME_FIELDS

    return {k: v for k, v in config.items() if k not in ("device", *RUNTIME_FIELDS)}


def _use_shipped(cfg: UnseenConfig, task: str, folder: Path) -> bool:
    """Copy the shipped expert of ``task`` into ``folder`` (a new one) if it was trained with
    ``cfg``'s recipe; False (train it) otherwise."""
    from dataclasses import asdict

    from genworld.envs.tasks import TASK_ASSETS

    source = TASK_ASSETS / task
    if not cfg.shipped_experts or folder.exists() or not (source / "config.json").exists():
        return False
    shipped = json.loads((source / "config.json").read_text())
    if _recipe(shipped) != _recipe(json.loads(json.dumps(asdict(_expert_config(cfg, task))))):
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
    from genworld.train.behaviour import read_eval_log

    dest = TASK_ASSETS if dest is None else dest
    for name in ("config.json", "references.json"):
        if not (run / name).exists():
            raise GenworldError(
                f"{run} has no {name}: run `genworld unseen --out {run}` past its references "
                "stage first"
            )
    config = json.loads((run / "config.json").read_text())
    cfg = config_for_scale(config["scale"], family=config["family"], split=config["split"])
    refs = json.loads((run / "references.json").read_text())
    train, test = _split_tasks(cfg)
    for task in train + test:
        source = run / "experts" / task
        if task not in refs or not (source / "eval.jsonl").exists():
            raise GenworldError(f"{run}: the expert of {task} is not finished; rerun the run")
        records = read_eval_log(source)
        best = _best_record(records)
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
        "family": cfg.family,
        "reference_returns": {str(parse_task(t)[1]): refs[t] for t in train + test},
        "source": f"genworld unseen --scale {cfg.scale} (experts: {cfg.expert_steps} SAC steps)",
        "note": "random = mean return of a uniform-random policy over 10 episodes; expert = the "
        "best evaluated return of the task's SAC expert (stochastic, eval_episodes episodes)",
    }
    atomic_write_json(dest / f"{cfg.family}.json", family)
    return family


def _references(cfg: UnseenConfig, tasks: list[str], out: Path) -> dict[str, list[float]]:
    """[random return, expert return] per task (cached in references.json)."""
    from genworld.eval.rollout import evaluate_policy
    from genworld.train.behaviour import read_eval_log

    path = out / "references.json"
    refs = json.loads(path.read_text()) if path.exists() else {}
    for task in tasks:
        if task in refs:
            continue
        random = evaluate_policy(task, _uniform_policy(_spec(task).act_dim), 10, seed=10_000)
        random = random.mean()
        best = _best_record(read_eval_log(out / "experts" / task))["stochastic_return"]
        refs[task] = [float(random), float(max(best, random + 1e-6))]
        atomic_write_json(path, refs)
    return refs


def _uniform_policy(act_dim: int):
    rng = np.random.default_rng(0)
    return lambda obs: rng.uniform(-1, 1, (len(obs), act_dim))


def _spec(task: str, refs: dict[str, list[float]] | None = None):
    from genworld.envs.registry import get_env_spec

    spec = get_env_spec(task)
    if refs and task in refs:
        spec = replace(spec, ref_min_score=refs[task][0], ref_max_score=refs[task][1])
    return spec


def _best_record(records: list[dict]) -> dict:
    """An expert's best evaluation (stochastic return): its snapshot is the task's expert."""
    return max(records, key=lambda r: r["stochastic_return"])


def _best_expert(out: Path, task: str):
    from genworld.policies import load_policy
    from genworld.train.behaviour import read_eval_log

    best = _best_record(read_eval_log(out / "experts" / task))
    return load_policy(out / "experts" / task / "snapshots" / f"step_{best['step']:09d}")[0]


def _datasets(cfg: UnseenConfig, train: list[str], tasks: list[str], out: Path, refs: dict) -> None:
    """Mixed datasets of the training tasks and small expert datasets of every task, with the
    run's reference returns in their metadata."""
    from genworld.data.build import collect
    from genworld.data.minari_io import dataset_dir, write_dataset
    from genworld.policies import load_policy

    root = out / "datasets"
    for k, task in enumerate(tasks):
        spec = _spec(task, refs)
        small_id = f"genworld/{task}/expert-v0"
        if not dataset_dir(small_id, root).exists():  # whole episodes: one env per episode
            envs = max(1, cfg.small_steps // spec.max_episode_steps)
            episodes = collect(
                task, _best_expert(out, task), cfg.small_steps, seed=100 + k, num_envs=envs
            )
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
            snapshots = sorted((out / "experts" / task / "snapshots").glob("step_*.json"))
            share = cfg.mixed_steps // (len(snapshots) + 1)
            episodes = collect(task, None, cfg.mixed_steps - share * len(snapshots), seed=200 + k)
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


def _episodes(out: Path, task: str, kind: str):
    from genworld.data.minari_io import read_episodes

    quality = "medium-replay" if kind == "mixed" else "expert"
    return read_episodes(f"genworld/{task}/{quality}-v0", root=out / "datasets")


def _family_dataset(cfg: UnseenConfig, out: Path, parts: list[tuple[str, str]]):
    """One 'env' (the family's robot) holding the episodes of ``(task, kind)`` parts."""
    from genworld.data.multi_env import MultiEnvDataset

    spec = replace(_spec(parts[0][0]), name=cfg.family)
    episodes = [ep for task, kind in parts for ep in _episodes(out, task, kind)]
    return MultiEnvDataset([(spec, episodes)])


# ------------------------------------------------------------------ stages 4-5
def _world_model(cfg: UnseenConfig, train: list[str], out: Path, show_progress: bool):
    from genworld.train.world_model import config_for_scale as wm_scale
    from genworld.train.world_model import fit_world_model

    dataset = _family_dataset(cfg, out, [(t, "mixed") for t in train])
    wm_cfg = wm_scale(
        cfg.scale, check_ids=False, model="tgw", seed=0, device=cfg.device, steps=cfg.wm_steps
    )
    return fit_world_model(wm_cfg, dataset, out / "world_model", show_progress=show_progress)


def finetune_reward(model, dataset, steps: int, seed: int):
    """A copy of ``model`` whose reward module alone is trained on ``dataset`` (eq. 8's reward
    term); everything else frozen."""
    tuned = copy.deepcopy(model).train()
    params = list(tuned.rew_net.parameters())
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = tuned.sample_batch(dataset, 16, generator)
        out = tuned.forward_sequence(
            batch.observations,
            batch.actions,
            torch.cat([torch.zeros_like(batch.rewards[:, :1]), batch.rewards[:, :-1]], 1),
            batch.env_idx,
            batch.step_mask,
            generator,
        )
        norm = tuned.normalizer
        target = (batch.rewards - norm.reward_mean[batch.env_idx][:, None]) / norm.reward_std[
            batch.env_idx
        ][:, None]
        err = (out["rew_mean"] - target).pow(2)
        nll = 0.5 * (err * torch.exp(-out["rew_logvar"]) + out["rew_logvar"])
        loss = (nll * batch.step_mask).sum() / batch.step_mask.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in tuned.parameters():
        p.requires_grad_(False)
    return tuned.eval()


def true_reward_fn(family: str, goal: float):
    """The task's reward on padded (obs, action, next obs) tensors, from observations only.

    Two approximations of the simulator's reward, both forced by the observation: the velocity
    is the mean of the observed velocities before and after the step (the simulator divides the
    displacement by dt), and ant-dir leaves out the contact cost (the 27-dim observation has no
    contact forces; the cost is at most 0.5e-3 · 84 = 0.042 a step: 14 bodies × 6 clipped forces)."""

    def cheetah_vel(obs, act, next_obs):
        v = 0.5 * (obs[:, 8] + next_obs[:, 8])  # qvel[0], the root's x velocity, averaged
        return -(v - goal).abs() - 0.05 * act[:, :6].pow(2).sum(-1)

    def ant_dir(obs, act, next_obs):
        v = 0.5 * (obs[:, 13:15] + next_obs[:, 13:15])  # qvel[0:2], the torso's, averaged
        direction = torch.tensor([np.cos(goal), np.sin(goal)], dtype=v.dtype)
        return v @ direction - 0.5 * act[:, :8].pow(2).sum(-1) + 1.0

    return cheetah_vel if family == "cheetah-vel" else ant_dir


_MODELS: dict[str, Any] = {}
"""The trained world model per run folder, loaded once per process."""


def _cell(cfg: UnseenConfig, out: Path, train: list[str], method, task, seed, refs) -> dict:
    done = out / "cells" / method / task / f"seed{seed}" / "result.json"
    if done.exists():  # before any model is loaded: a resumed run skips finished cells cheaply
        return json.loads(done.read_text())
    if method.startswith("prompt-dt"):
        return _prompt_dt_cell(cfg, out, train, task, method, seed, refs)
    if method == "bc":
        return _bc_cell(cfg, out, task, "mixed" if task in train else "small", seed, refs)
    key = str(out)
    if key not in _MODELS:  # trained already: this loads it
        _MODELS[key] = _world_model(cfg, train, out, show_progress=False)
    kind = "mixed" if task in train else "small"
    return _policy_cell(cfg, out, _MODELS[key], task, kind, method, seed, refs)


def _policy_cell(cfg, out, model, task, kind, method, seed, refs) -> dict:
    from genworld.algos.tgw import AGENT_PRESETS, TGWAgent, TGWAgentConfig
    from genworld.config import merge, resolve

    folder = out / "cells" / method / task / f"seed{seed}"
    started = time.perf_counter()
    data = _family_dataset(cfg, out, [(task, kind)])
    torch.manual_seed(seed)
    if method == "tgw-finetune":
        model = finetune_reward(model, data, cfg.finetune_steps, seed)
    sac = {"init_alpha": cfg.policy_init_alpha, "bc_alpha": cfg.policy_bc_alpha}
    agent_cfg = resolve(TGWAgentConfig, merge(AGENT_PRESETS[cfg.scale], {"mbpo": {"sac": sac}}))
    reward_fn = None
    if method == "tgw-newr":
        goal = float(get_family(cfg.family).goals()[int(task.split("-")[-1])])
        reward_fn = true_reward_fn(cfg.family, goal)
    agent = TGWAgent(model, data, agent_cfg, torch.device("cpu"), reward_fn=reward_fn)
    return _train_and_score(cfg, folder, agent, (method, task, seed), refs, started)


def _train_and_score(cfg: UnseenConfig, folder: Path, agent, cell, refs, started: float) -> dict:
    """``cfg.policy_updates`` updates of ``agent`` on ``cell = (method, task, seed)`` with an
    evaluation every ``eval_every`` (resumable in ``folder``), then the cell's result file."""
    from genworld.eval.scores import summarize
    from genworld.train.loop import train_offline

    method, task, seed = cell
    records = train_offline(
        f"{method} {task} s{seed}",
        agent,
        agent.update,
        [_spec(task, refs)],
        folder,
        steps=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        seed=seed,
        show_progress=False,
    )
    summary = summarize(records, [task], cfg.last_k)[task]
    return _write_result(folder, cell, summary["last_k_mean"], summary["best"], started)


def _write_result(folder: Path, cell, last_k: float, best: float, started: float) -> dict:
    method, task, seed = cell
    result = {
        "method": method,
        "task": task,
        "seed": seed,
        "last_k": last_k,
        "best": best,
        "seconds": round(time.perf_counter() - started, 1),
        "matmul_precision": torch.get_float32_matmul_precision(),
    }
    atomic_write_json(folder / "result.json", result)
    return result


def _bc_cell(cfg: UnseenConfig, out: Path, task: str, kind: str, seed: int, refs) -> dict:
    """Behaviour cloning of the task's ``kind`` data, scored as a TGW cell."""
    from genworld.algos.registry import AlgoContext, build_agent
    from genworld.data.normalization import Normalizer

    folder = out / "cells" / "bc" / task / f"seed{seed}"
    started = time.perf_counter()
    data = _family_dataset(cfg, out, [(task, kind)])
    torch.manual_seed(seed)
    ctx = AlgoContext(data, Normalizer.fit(data), torch.device("cpu"), scale=cfg.scale, seed=seed)
    return _train_and_score(cfg, folder, build_agent("bc", ctx), ("bc", task, seed), refs, started)


# ------------------------------------------------------------------ stage 6: Prompt-DT
def _prompt_dt(cfg: UnseenConfig, out: Path, train: list[str], tasks: list[str], refs, seed: int):
    """A Prompt-DT agent (``tasks``' small data as prompts and, with ``train``, its training data)
    sharing parameters across the family's tasks."""
    from types import SimpleNamespace

    from genworld.algos import dt
    from genworld.algos.prompt_dt import PRESETS, PromptBank, PromptDTConfig
    from genworld.algos.registry import resolve_config
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.data.normalization import Normalizer

    ctx = SimpleNamespace(scale=cfg.scale, overrides={"dt": {"shared_params": True}})
    pcfg = resolve_config(PromptDTConfig, PRESETS, ctx)
    kind = "mixed" if train else "small"
    data = MultiEnvDataset([(_spec(t, refs), _episodes(out, t, kind)) for t in train or tasks])
    prompt_data = MultiEnvDataset([(_spec(t, refs), _episodes(out, t, "small")) for t in tasks])
    family = _family_dataset(cfg, out, [(t, "mixed") for t in _split_tasks(cfg)[0]])
    rtgs = [dt.returns_to_go(env) for env in prompt_data.envs]
    prompts = PromptBank(prompt_data, rtgs, pcfg.prompt_length, 1.0, seed)
    return dt.DT(data, Normalizer.fit(family), pcfg.dt, torch.device("cpu"), prompts=prompts)


def _split_tasks(cfg: UnseenConfig) -> tuple[list[str], list[str]]:
    train_idx, test_idx = split(cfg.family, scheme=cfg.split)
    return [task_name(cfg.family, i) for i in train_idx], [
        task_name(cfg.family, i) for i in test_idx
    ]


def _prompt_dt_weights(out: Path, seed: int) -> Path:
    return out / "prompt_dt" / f"seed{seed}" / "net.safetensors"


def _train_prompt_dt(cfg: UnseenConfig, out: Path, train: list[str], refs, seed: int):
    """Seed ``seed``'s Prompt-DT trained on the training tasks, as its network's weights: trained
    once (resumable), then written to ``prompt_dt/seed<S>/net.safetensors``, which every later
    call (each unseen-task cell) reads instead of rebuilding the model and its data."""
    from safetensors.torch import load_file, save

    from genworld.train.loop import train_offline
    from genworld.utils.io import atomic_write_bytes

    path = _prompt_dt_weights(out, seed)
    if path.exists():
        return load_file(path)
    torch.manual_seed(seed)
    trained = _prompt_dt(cfg, out, train, train, refs, seed)
    train_offline(
        f"prompt-dt s{seed}",
        trained,
        trained.update,
        [_spec(t, refs) for t in train],
        path.parent,
        steps=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        seed=seed,
        show_progress=False,
    )
    weights = {k: v.detach().clone().contiguous() for k, v in trained.net.state_dict().items()}
    atomic_write_bytes(path, save(weights))
    return weights


def _prompt_dt_job(cfg: UnseenConfig, out: Path, train: list[str], refs, seed: int) -> None:
    _train_prompt_dt(cfg, out, train, refs, seed)  # (the weights stay on disk, not sent back)


def _prompt_dt_cell(cfg, out, train, task, method, seed, refs) -> dict:
    from genworld.eval.rollout import evaluate_agent
    from genworld.eval.scores import summarize
    from genworld.train.loop import train_offline

    folder = out / "cells" / method / task / f"seed{seed}"
    started = time.perf_counter()
    weights = _train_prompt_dt(cfg, out, train, refs, seed)
    agent = _prompt_dt(cfg, out, [], [task], refs, seed)  # the task's prompt and small data
    agent.net.load_state_dict(weights)
    spec = _spec(task, refs)
    if method == "prompt-dt":
        episodes = cfg.eval_episodes * cfg.last_k
        score = float(
            spec.normalized_score(evaluate_agent(agent, [spec], episodes, seed)[task].mean())
        )
        last_k = best = score
    else:
        records = train_offline(
            f"{method} {task} s{seed}",
            agent,
            agent.update,
            [spec],
            folder,
            steps=cfg.finetune_steps,
            eval_every=max(1, cfg.finetune_steps // cfg.last_k),
            eval_episodes=cfg.eval_episodes,
            seed=seed,
            show_progress=False,
        )
        summary = summarize(records, [task], cfg.last_k)[task]
        last_k, best = summary["last_k_mean"], summary["best"]
    return _write_result(folder, (method, task, seed), last_k, best, started)


@dataclass(frozen=True)
class UnseenResults:
    """What a study produced: its task split, the per-task reference returns, and one result per
    finished (method, task, seed) cell out of ``planned``."""

    train: list[str]
    test: list[str]
    references: dict[str, list[float]]
    results: list[dict]
    planned: int


def run_unseen(
    cfg: UnseenConfig, out: Path, *, show_progress: bool = True, report_only: bool = False
) -> UnseenResults:
    """Every stage (each resumes), then the report. ``report_only``: train nothing, write the
    report from the cells finished so far."""
    from genworld.utils.progress import progress_bar

    cfg.validate()
    if report_only and not (out / "references.json").exists():
        raise GenworldError(f"{out} has no finished references stage: run it first")
    # methods and seeds key their own cells: a finished study takes more of either later
    check_or_write_config(out, cfg, ignore=("workers", "shipped_experts", "methods", "seeds"))
    train, test = _split_tasks(cfg)
    tasks = train + test
    if report_only:
        refs = json.loads((out / "references.json").read_text())
        planned = [(m, t, s) for s in range(cfg.seeds) for m in cfg.methods for t in tasks]
        paths = [out / "cells" / m / t / f"seed{s}" / "result.json" for m, t, s in planned]
        results = [json.loads(p.read_text()) for p in paths if p.exists()]
        return UnseenResults(train, test, refs, results, planned=len(planned))
    _experts(cfg, tasks, out, show_progress)
    refs = _references(cfg, tasks, out)
    _datasets(cfg, train, tasks, out, refs)
    if any(m.startswith("tgw") for m in cfg.methods):
        _MODELS[str(out)] = _world_model(cfg, train, out, show_progress)  # cells reuse it
    seeds = range(cfg.seeds)
    if any(m.startswith("prompt-dt") for m in cfg.methods):  # each seed's model, before its cells
        process_map(_prompt_dt_job, [(cfg, out, train, refs, s) for s in seeds], cfg.workers)
    # seed-major: a run stopped part-way already compares every method on the seeds it finished
    cells = [(cfg, out, train, m, t, s, refs) for s in seeds for m in cfg.methods for t in tasks]
    with progress_bar("unseen-task cells", len(cells), enabled=show_progress) as advance:
        results = process_map(_cell, cells, cfg.workers, advance)
    return UnseenResults(train, test, refs, results, planned=len(results))
