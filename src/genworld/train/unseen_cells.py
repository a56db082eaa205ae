"""The cells of ``genworld unseen`` (:mod:`genworld.train.unseen`): the study's world model,
one (method, task, seed) cell each (a registered TGW variant or BC on the task's data, or
Prompt-DT prompted with the task's small data), and each cell's result file."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import torch

from genworld.data.tasks import family_dataset, task_episodes, task_spec
from genworld.envs.tasks import split_names
from genworld.utils.io import atomic_write_json
from genworld.utils.provenance import provenance


# ------------------------------------------------------------------ stages 4-5
def world_model(cfg, train: list[str], out: Path, show_progress: bool):
    """The family's TGW model on the training tasks' mixed data (trained once, then loaded)."""
    from genworld.train.world_model import config_for_scale as wm_scale
    from genworld.train.world_model import fit_world_model

    dataset = family_dataset(cfg.family, out / "datasets", [(t, "mixed") for t in train])
    wm_cfg = wm_scale(
        cfg.scale,
        check_ids=False,
        model="tgw",
        seed=0,
        device=cfg.device,
        steps=cfg.wm_steps or None,
    )
    return fit_world_model(wm_cfg, dataset, out / "world_model", show_progress=show_progress)


@functools.lru_cache(maxsize=1)
def _family_model(cfg, out: str):
    """The study's world model, loaded once per (worker) process for all its cells."""
    return world_model(cfg, split_names(cfg.family, cfg.split)[0], Path(out), False)


def run_cell(cfg, out: Path, train: list[str], method, task, seed, refs) -> dict:
    done = out / "cells" / method / task / f"seed{seed}" / "result.json"
    if done.exists():  # before any model is loaded: a resumed run skips finished cells cheaply
        return json.loads(done.read_text())
    if method.startswith("prompt-dt"):
        return _prompt_dt_cell(cfg, out, train, task, method, seed, refs)
    if method == "cmt":
        return _cmt_cell(cfg, out, train, task, seed, refs)
    return _agent_cell(cfg, out, train, method, task, seed, refs)


def _agent_cell(cfg, out: Path, train, method: str, task: str, seed: int, refs):
    """A registered algorithm or variant (``tgw``, ``tgw-finetune``, ``tgw-newr``, ``bc``) on
    the task's data (training tasks: mixed; unseen tasks: small), in the study's world model,
    scored in the task's env."""
    from genworld.algos.registry import resolve_variant
    from genworld.train.cells import build_cell_agent
    from genworld.utils.device import resolve_device

    folder = out / "cells" / method / task / f"seed{seed}"
    started = time.perf_counter()
    model, overrides = None, {}
    if resolve_variant(method)[0] == "tgw":
        model = _family_model(cfg, str(out))  # before the cell's seed
        overrides = agent_overrides(cfg, method)
    kind = "mixed" if task in train else "small"
    data = family_dataset(cfg.family, out / "datasets", [(task, kind)])
    torch.manual_seed(seed)
    agent = build_cell_agent(
        method,
        data,
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=seed,
        overrides=overrides,
        world_models=lambda ctx, name: model,
        task=task,
    )
    return _train_and_score(cfg, folder, agent, (method, task, seed), refs, started)


def agent_overrides(cfg, method: str) -> dict[str, Any]:
    """The study's settings of a TGW cell: SAC's temperature and RL-term weight (TD3+BC's α), and the
    reward fine-tuning budget of ``tgw-finetune``."""
    sac = {"init_alpha": cfg.policy_init_alpha, "bc_alpha": cfg.policy_bc_alpha}
    steps = {"reward_finetune_steps": cfg.finetune_steps} if method == "tgw-finetune" else {}
    return {"mbpo": {"sac": sac}, **steps}


def _train_and_score(cfg, folder: Path, agent, cell, refs, started: float) -> dict:
    """``cfg.policy_updates`` updates of ``agent`` on ``cell = (method, task, seed)`` with an
    evaluation every ``eval_every`` (resumable in ``folder``), then the cell's result file."""
    from genworld.train.cells import train_cell

    method, task, seed = cell
    _, summary = train_cell(
        f"{method} {task} s{seed}",
        agent,
        [task_spec(task, refs)],
        folder,
        updates=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        last_k=cfg.last_k,
        seed=seed,
    )
    return _write_result(folder, cell, summary[task]["last_k_mean"], summary[task]["best"], started)


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
        "provenance": provenance(),
    }
    atomic_write_json(folder / "result.json", result)
    return result


# ------------------------------------------------------------------ stage 6: Prompt-DT
def _prompt_dt(cfg, out: Path, train: list[str], tasks: list[str], refs, seed: int):
    """The registry's Prompt-DT on ``train``'s mixed data (or, without ``train``, ``tasks``'
    small data), prompted with ``tasks``' small expert data, its parameters shared across the
    family's tasks (no task id; one normaliser fitted on the family's data)."""
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.data.normalization import Normalizer
    from genworld.train.cells import build_cell_agent
    from genworld.utils.device import resolve_device

    kind, root = ("mixed" if train else "small"), out / "datasets"

    def tasks_data(names, kind):
        return MultiEnvDataset([(task_spec(t, refs), task_episodes(root, t, kind)) for t in names])

    family = family_dataset(cfg.family, root, [(t, "mixed") for t in split_tasks(cfg)[0]])
    return build_cell_agent(
        "prompt-dt",
        tasks_data(train or tasks, kind),
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=seed,
        normalizer=Normalizer.fit(family),
        overrides={"dt": {"shared_params": True}, "prompt_top_fraction": 1.0},
        prompts=tasks_data(tasks, "small"),
    )


def split_tasks(cfg) -> tuple[list[str], list[str]]:
    return split_names(cfg.family, cfg.split)


def _prompt_dt_weights(out: Path, seed: int) -> Path:
    return out / "prompt_dt" / f"seed{seed}" / "net.safetensors"


def _train_prompt_dt(cfg, out: Path, train: list[str], refs, seed: int):
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
        [task_spec(t, refs) for t in train],
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


def prompt_dt_job(cfg, out: Path, train: list[str], refs, seed: int) -> None:
    _train_prompt_dt(cfg, out, train, refs, seed)  # (the weights stay on disk, not sent back)


def _prompt_dt_cell(cfg, out, train, task, method, seed, refs) -> dict:
    from genworld.eval.rollout import evaluate_agent
    from genworld.train.cells import train_cell

    folder = out / "cells" / method / task / f"seed{seed}"
    started = time.perf_counter()
    weights = _train_prompt_dt(cfg, out, train, refs, seed)
    agent = _prompt_dt(cfg, out, [], [task], refs, seed)  # the task's prompt and small data
    agent.net.load_state_dict(weights)
    spec = task_spec(task, refs)
    if method == "prompt-dt":
        episodes = cfg.eval_episodes * cfg.last_k
        score = float(
            spec.normalized_score(evaluate_agent(agent, [spec], episodes, seed)[task].mean())
        )
        last_k = best = score
    else:
        _, summary = train_cell(
            f"{method} {task} s{seed}",
            agent,
            [spec],
            folder,
            updates=cfg.finetune_steps,
            eval_every=max(1, cfg.finetune_steps // cfg.last_k),
            eval_episodes=cfg.eval_episodes,
            last_k=cfg.last_k,
            seed=seed,
        )
        last_k, best = summary[task]["last_k_mean"], summary[task]["best"]
    return _write_result(folder, (method, task, seed), last_k, best, started)


# ------------------------------------------------------------------ CMT, zero-shot
def _train_cmt(cfg, out: Path, train: list[str], refs, seed: int):
    """Seed ``seed``'s CMT (seed 001) on the training tasks' mixed data as one family env: every
    parameter is shared across the family's tasks, so a task is told apart only by the history
    its prompt encoder reads. Trained once (resumable, in ``cmt/seed<S>``), then loaded."""
    from genworld.data.normalization import Normalizer
    from genworld.train.cells import build_cell_agent
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint
    from genworld.train.loop import train_offline
    from genworld.utils.device import resolve_device

    folder = out / "cmt" / f"seed{seed}"
    family = family_dataset(cfg.family, out / "datasets", [(t, "mixed") for t in train])
    torch.manual_seed(seed)
    agent = build_cell_agent(
        "cmt",
        family,
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=seed,
        normalizer=Normalizer.fit(family),
    )
    if (folder / "trained.json").exists():
        _, state = load_checkpoint(latest_checkpoint(folder / "checkpoints"))
        agent.load_state_dict(state["agent"])
        return agent
    train_offline(
        f"cmt s{seed}",
        agent,
        agent.update,
        [task_spec(train[0], refs)],  # a training task's curve, to follow the training by
        folder,
        steps=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        seed=seed,
        show_progress=False,
    )
    atomic_write_json(folder / "trained.json", {"updates": cfg.policy_updates})
    return agent


def cmt_job(cfg, out: Path, train: list[str], refs, seed: int) -> None:
    _train_cmt(cfg, out, train, refs, seed)  # (the model stays on disk, not sent back)


def _cmt_cell(cfg, out: Path, train, task: str, seed: int, refs) -> dict:
    """Zero-shot CMT (seed 001 §4.3): the seed's CMT acting in the task's env with no data of
    the task, its prompt read from its own online episode's history; the score is the mean
    normalized return of ``eval_episodes × last_k`` episodes."""
    from genworld.eval.rollout import evaluate_agent

    folder = out / "cells" / "cmt" / task / f"seed{seed}"
    started = time.perf_counter()
    agent = _train_cmt(cfg, out, train, refs, seed)
    spec = task_spec(task, refs)
    returns = evaluate_agent(agent, [spec], cfg.eval_episodes * cfg.last_k, seed)[task]
    score = float(spec.normalized_score(returns.mean()))
    return _write_result(folder, ("cmt", task, seed), score, score, started)
