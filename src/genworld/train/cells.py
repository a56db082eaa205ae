"""One cell: a registered algorithm (or variant) built on a cell's data, trained for a budget of
updates with evaluations in the real envs, and summarised. ``genworld run``, ``table``,
``ablate``, ``sweep beta`` and ``unseen`` all train their agents here."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genworld.algos.registry import AlgoContext, WorldModelSource, build_agent, resolve_variant
from genworld.config import merge
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.eval.scores import summarize
from genworld.train import loop
from genworld.train.world_model_source import provide_world_model
from genworld.utils.provenance import provenance


def build_cell_agent(
    name: str,
    dataset: MultiEnvDataset,
    device: torch.device,
    *,
    scale: str,
    seed: int,
    normalizer: Normalizer | None = None,
    out: Path | None = None,
    shared: Path | None = None,
    overrides: dict[str, Any] | None = None,
    world_models: WorldModelSource = provide_world_model,
    task: str | None = None,
    prompts: MultiEnvDataset | None = None,
    show_progress: bool = False,
    updates: int | None = None,
):
    """The agent of algorithm or variant ``name`` (``tgw-no-prompt``, ``mopo-beta=2``) on
    ``dataset`` for a run of ``updates`` updates: the variant's overrides, then the runner's
    ``overrides``. World models come from ``world_models`` (by default trained or loaded in
    ``out``, or once in ``shared``)."""
    algo, variant = resolve_variant(name)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=normalizer if normalizer is not None else Normalizer.fit(dataset),
        device=device,
        scale=scale,
        seed=seed,
        out=out,
        shared=shared,
        overrides=merge(variant, overrides or {}),
        world_models=world_models,
        task=task,
        prompts=prompts,
        show_progress=show_progress,
        updates=updates,
    )
    return build_agent(algo, ctx)


@dataclass(frozen=True)
class TrainedCell:
    """What :func:`train_cell` gives back."""

    records: list[dict]
    """The evaluation records, one per evaluation."""
    summary: dict[str, dict]
    """Each env's last-k mean and spread and best score."""
    seconds: float
    """The cell's seconds: this process's setup (from ``started`` to training: data, world
    model) plus its training and evaluations over every process that ran them (the last
    record's ``wall_s``, which a checkpoint carries across a resume)."""


def train_cell(
    name: str,
    agent: Any,
    specs: list,
    folder: Path,
    *,
    updates: int,
    eval_every: int,
    eval_episodes: int,
    last_k: int,
    seed: int,
    started: float | None = None,
    show_progress: bool = False,
    prefix=None,
) -> TrainedCell:
    """``updates`` updates of ``agent`` with an evaluation every ``eval_every`` in ``specs``'
    real envs (resumable in ``folder``), summarised. ``started``: the ``time.perf_counter()``
    at which the cell's setup began (none: no setup counted). ``prefix``: the first updates it
    shares with other cells (:mod:`genworld.train.prefix`)."""
    setup = 0.0 if started is None else time.perf_counter() - started
    records = loop.train_offline(  # looked up at call time: one training entry to patch
        name,
        agent,
        agent.update,
        specs,
        folder,
        steps=updates,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        seed=seed,
        show_progress=show_progress,
        prefix=prefix,
    )
    summary = summarize(records, [s.name for s in specs], last_k)
    return TrainedCell(records, summary, cell_seconds(records, setup))


def cell_seconds(records: list[dict], setup: float) -> float:
    """``setup`` plus the training and evaluations of ``records`` over every process that ran
    them (the last record's ``wall_s``, which a checkpoint carries across a resume)."""
    return round(setup + (records[-1].get("wall_s", 0.0) if records else 0.0), 1)


def result_stamp(seconds: float, agent: Any = None) -> dict[str, Any]:
    """The fields every cell's ``result.json`` ends with: its seconds, the float32 matmul
    precision it ran at, the precisions ``agent`` resolved by the machine (its optional
    ``numerics``: e.g. CQL's ``{"ood_precision": "bfloat16"}`` with ``auto`` on a CPU with
    bfloat16 matmul units) and the code's provenance."""
    stamp: dict[str, Any] = {
        "seconds": seconds,
        "matmul_precision": torch.get_float32_matmul_precision(),
    }
    if numerics := agent_numerics(agent):
        stamp["numerics"] = numerics
    return stamp | {"provenance": provenance()}


def agent_numerics(agent: Any) -> dict[str, str] | None:
    """``agent``'s optional ``numerics`` (the precisions it resolved by the machine) as strings;
    None when it has none."""
    numerics = getattr(agent, "numerics", None)
    if isinstance(numerics, Mapping) and numerics:
        return {str(part): str(value) for part, value in numerics.items()}
    return None
