"""The cells of ``genworld unseen`` (:mod:`genworld.train.unseen`): the study's world model,
one (method, task, seed) cell each (a registered TGW variant or BC on the task's data, or
Prompt-DT prompted with the task's small data), and each cell's result file."""

from __future__ import annotations

import copy
import functools
import time
from pathlib import Path
from typing import Any

import torch

from genworld.data.tasks import family_dataset, task_episodes, task_spec
from genworld.envs.tasks import split_names
from genworld.errors import GenworldError
from genworld.train.cells import result_stamp
from genworld.train.policy_learner import policy_learner_overrides
from genworld.utils.io import atomic_write_json, claim, claim_file, claimed_result


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
    # one process trains it; another sharing the study waits, then loads the trained model
    with claim(claim_file(out / "world_model"), wait=True):
        return fit_world_model(wm_cfg, dataset, out / "world_model", show_progress=show_progress)


@functools.lru_cache(maxsize=1)
def _family_model(cfg, out: str):
    """The study's world model, loaded once per (worker) process for all its cells."""
    return world_model(cfg, split_names(cfg.family, cfg.split)[0], Path(out), False)


def cell_folder(method: str, task: str, seed: int) -> str:
    """A cell's folder under the study's ``--out``."""
    return f"cells/{method}/{task}/seed{seed}"


def run_cell(
    cfg, out: Path, train: list[str], method, task, seed, refs, wait: bool = False
) -> dict | None:
    """The cell's result (read back when finished, before any model is loaded), or, when it
    fails, the failure's record (the study goes on; a rerun retries the cell). The cell is
    claimed first (:func:`~genworld.utils.io.claimed_result`): None, at once, while another
    process sharing the study trains it (``wait=False``)."""
    from genworld.train.failures import guarded

    name = cell_folder(method, task, seed)
    work = functools.partial(_train_cell, cfg, out, train, method, task, seed, refs)
    return claimed_result(
        out / name, "result.json", lambda: guarded(out / name, name, "the study", work), wait=wait
    )


def _train_cell(cfg, out: Path, train: list[str], method, task, seed, refs) -> dict:
    if method.startswith("prompt-dt"):
        return _prompt_dt_cell(cfg, out, train, task, method, seed, refs)
    if method.startswith("cmt") or method == "focal":
        return _meta_cell(cfg, out, train, task, method, seed, refs)
    return _agent_cell(cfg, out, train, method, task, seed, refs)


def _agent_cell(cfg, out: Path, train, method: str, task: str, seed: int, refs):
    """A registered algorithm or variant (``tgw``, ``tgw-finetune``, ``tgw-newr``, ``bc``) on
    the task's data (training tasks: mixed; unseen tasks: small), in the study's world model,
    scored in the task's env."""
    from genworld.algos.registry import resolve_variant
    from genworld.train.cells import build_cell_agent
    from genworld.utils.device import resolve_device

    folder = out / cell_folder(method, task, seed)
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
        updates=cfg.policy_updates,
    )
    return _train_and_score(cfg, folder, agent, (method, task, seed), refs, started)


def agent_overrides(cfg, method: str) -> dict[str, Any]:
    """The study's settings of a TGW cell: SAC's temperature and RL-term weight (TD3+BC's α), and the
    reward fine-tuning budget of ``tgw-finetune``."""
    steps = {"reward_finetune_steps": cfg.finetune_steps} if method == "tgw-finetune" else {}
    return {**policy_learner_overrides(cfg), **steps}


def _train_and_score(cfg, folder: Path, agent, cell, refs, started: float) -> dict:
    """``cfg.policy_updates`` updates of ``agent`` on ``cell = (method, task, seed)`` with an
    evaluation every ``eval_every`` (resumable in ``folder``), then the cell's result file."""
    from genworld.train.cells import train_cell

    method, task, seed = cell
    trained = train_cell(
        f"{method} {task} s{seed}",
        agent,
        [task_spec(task, refs)],
        folder,
        updates=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        last_k=cfg.last_k,
        seed=seed,
        started=started,
    )
    summary = trained.summary[task]
    return _write_result(
        folder, cell, summary["last_k_mean"], summary["best"], trained.seconds, agent
    )


def _write_result(
    folder: Path, cell, last_k: float, best: float, seconds: float, agent: Any
) -> dict:
    method, task, seed = cell
    result = {
        "method": method,
        "task": task,
        "seed": seed,
        "last_k": last_k,
        "best": best,
        **result_stamp(seconds, agent),
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
    # one process trains it; another sharing the study waits, then reads its weights
    with claim(claim_file(path.parent), wait=True):
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
    from genworld.eval.rollout import evaluate_agent, first_episode_seed
    from genworld.train.cells import train_cell

    folder = out / cell_folder(method, task, seed)
    started = time.perf_counter()
    weights = _train_prompt_dt(cfg, out, train, refs, seed)  # (shared by the family's cells)
    agent = _prompt_dt(cfg, out, [], [task], refs, seed)  # the task's prompt and small data
    agent.net.load_state_dict(weights)
    spec = task_spec(task, refs)
    if method == "prompt-dt":
        episodes = cfg.eval_episodes * cfg.last_k
        score = float(
            spec.normalized_score(
                evaluate_agent(agent, [spec], episodes, first_episode_seed(seed))[task].mean()
            )
        )
        last_k = best = score
        seconds = round(time.perf_counter() - started, 1)
    else:
        trained = train_cell(
            f"{method} {task} s{seed}",
            agent,
            [spec],
            folder,
            updates=cfg.finetune_steps,
            eval_every=max(1, cfg.finetune_steps // cfg.last_k),
            eval_episodes=cfg.eval_episodes,
            last_k=cfg.last_k,
            seed=seed,
            started=started,
        )
        last_k, best = trained.summary[task]["last_k_mean"], trained.summary[task]["best"]
        seconds = trained.seconds
    return _write_result(folder, (method, task, seed), last_k, best, seconds, agent)


# ------------------------------------------------------------------ CMT (seed 001 §4.2)
CMT_CONTEXTS = {"online": None, "none": None, "medium": "mixed", "expert": "small"}
"""A CMT cell's task-prompt source → the task dataset it is drawn from (seed 001 Fig. 5 Q4):
online (zero-shot: the agent's own interactions), none ([SEP] alone), medium (the task's mixed
data) or expert (its small expert data)."""


def cmt_method(method: str) -> tuple[str, dict[str, Any], str]:
    """A CMT method of the study → (its model's name, the model's overrides, the task-prompt
    source): ``cmt``, a training variant (``cmt-no-pt``, ``cmt-beta=50``, ``cmt-gamma=1e-6``;
    its own model) or ``cmt-context=<source>`` (``cmt``'s model prompted from another source)."""
    from genworld.algos.registry import resolve_variant

    if method.startswith("cmt-context="):
        source = method.partition("=")[2]
        if source not in CMT_CONTEXTS:
            raise GenworldError(
                f"unknown CMT task-prompt source in {method!r}: choose from "
                f"{', '.join(CMT_CONTEXTS)}"
            )
        return "cmt", {}, source
    algo, overrides = resolve_variant(method)
    if algo != "cmt":
        raise GenworldError(f"{method!r} is not a CMT method")
    return method, overrides, "online"


def _meta_agent(
    cfg, algo: str, root: Path, dataset, seed: int, overrides: dict, prompts=None, updates=None
):
    """``algo`` (cmt or focal) on ``dataset`` (one env per task) with every parameter shared
    across the family's tasks and the family's normaliser (fitted on the training tasks' mixed
    data under ``root``), for a run of ``updates`` (None: evaluation only). CMT: task prompts
    of H steps (the scale's history length; not in the seed text) before its [SEP] token, and
    the study's pretraining length (``cmt_pretrain_updates``)."""
    from genworld.algos.cmt_config import PRESETS, CMTConfig
    from genworld.config import resolve
    from genworld.train.cells import build_cell_agent
    from genworld.utils.device import resolve_device

    meta = {}
    if algo == "cmt":
        history = resolve(CMTConfig, PRESETS[cfg.scale], {}).history_len
        meta = {"shared_params": True, "task_prompt_len": history}
        if cfg.cmt_pretrain_updates:
            meta["pretrain_updates"] = cfg.cmt_pretrain_updates
    return build_cell_agent(
        algo,
        dataset,
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=seed,
        normalizer=copy.deepcopy(_family_normalizer(cfg, str(root))),
        overrides={**meta, **overrides},
        prompts=prompts,
        updates=updates,
    )


@functools.lru_cache(maxsize=1)
def _family_normalizer(cfg, root: str):
    """The family's normaliser on the training tasks' mixed data, fitted once per (worker)
    process for all its cells (each agent gets its own copy)."""
    from genworld.data.normalization import Normalizer

    train = split_tasks(cfg)[0]
    return Normalizer.fit(family_dataset(cfg.family, Path(root), [(t, "mixed") for t in train]))


def _train_meta(cfg, out: Path, train: list[str], refs, seed: int, model: str = "cmt"):
    """Seed ``seed``'s ``model`` (a CMT method's model, or ``focal``) on the training tasks'
    mixed data, one env per task (the contrastive terms know which rows share a task), every
    parameter shared, so a task is told apart only by its context. Trained once (resumable, in
    ``<model>/seed<S>``), then loaded."""
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint
    from genworld.train.loop import train_offline
    from genworld.train.prefix import prefix_of
    from genworld.utils.device import resolve_device

    folder = out / model / f"seed{seed}"
    root = out / "datasets"
    tasks = MultiEnvDataset([(task_spec(t, refs), task_episodes(root, t, "mixed")) for t in train])
    algo, overrides = ("focal", {}) if model == "focal" else ("cmt", cmt_method(model)[1])
    torch.manual_seed(seed)
    agent = _meta_agent(cfg, algo, root, tasks, seed, overrides, updates=cfg.policy_updates)
    # one process trains it; another sharing the study waits, then loads it
    with claim(claim_file(folder), wait=True):
        if (folder / "trained.json").exists():
            _, state = load_checkpoint(latest_checkpoint(folder / "checkpoints"))
            agent.load_state_dict(state["agent"])
            return agent
        prefix = prefix_of(  # CMT's pretraining, shared by its prompt-tuning variants
            agent,
            out / "prefixes",
            seed=seed,
            tasks=train,
            data=tasks.fingerprint(),
            budget=[cfg.policy_updates, cfg.eval_every, cfg.eval_episodes],
            device=resolve_device(cfg.device).type,
        )
        train_offline(
            f"{model} s{seed}",
            agent,
            agent.update,
            [task_spec(train[0], refs)],  # a training task's curve, to follow the training by
            folder,
            steps=cfg.policy_updates,
            eval_every=cfg.eval_every,
            eval_episodes=cfg.eval_episodes,
            seed=seed,
            show_progress=False,
            prefix=prefix,
        )
        atomic_write_json(folder / "trained.json", {"updates": cfg.policy_updates})
        return agent


def meta_job(cfg, out: Path, train: list[str], refs, seed: int, model: str) -> None:
    _train_meta(cfg, out, train, refs, seed, model)  # (the model stays on disk, not sent back)


def meta_models(methods) -> list[str]:
    """The shared models the study's CMT and FOCAL methods need, each trained once per seed."""
    models = {cmt_method(m)[0] for m in methods if m.startswith("cmt")}
    return sorted(models | ({"focal"} & set(methods)))


def _meta_cell(cfg, out: Path, train, task: str, method: str, seed: int, refs) -> dict:
    """A CMT or FOCAL method in the task's env with its trained weights and no training on the
    task. ``cmt`` reads its task prompt from its own online interactions (zero-shot, seed 001
    §4.2 "Meta Test"), ``cmt-context=<source>`` from the task's data or nothing; ``focal``
    infers the task from a context set of the task's small expert data (FOCAL's offline
    context, as Prompt-DT's prompt). The score is the mean normalized return of
    ``eval_episodes × last_k`` episodes."""
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.eval.rollout import evaluate_agent, first_episode_seed

    folder = out / cell_folder(method, task, seed)
    started = time.perf_counter()
    root, spec = out / "datasets", task_spec(task, refs)
    own = "mixed" if task in train else "small"
    if method == "focal":
        model, algo, overrides, kind = "focal", "focal", {}, own
        prompts = MultiEnvDataset([(spec, task_episodes(root, task, "small"))])
    else:
        model, _, source = cmt_method(method)
        algo, kind, prompts = "cmt", CMT_CONTEXTS[source] or own, None
        overrides = {"task_context": "offline" if CMT_CONTEXTS[source] else source}
    trained = _train_meta(cfg, out, train, refs, seed, model)
    data = MultiEnvDataset([(spec, task_episodes(root, task, kind))])
    agent = _meta_agent(cfg, algo, root, data, seed, overrides, prompts)
    if algo == "cmt":
        agent.load_networks(trained)
    else:
        agent.load_state_dict(trained.state_dict())  # shared weights; its own context set
    episodes = cfg.eval_episodes * cfg.last_k
    returns = evaluate_agent(agent, [spec], episodes, first_episode_seed(seed))[task]
    score = float(spec.normalized_score(returns.mean()))
    return _write_result(
        folder, (method, task, seed), score, score, round(time.perf_counter() - started, 1), agent
    )
