"""Where agents get their world models: the runner's :class:`~genworld.algos.registry.
WorldModelSource`, which trains a cell's world model (or resumes or loads it), once per config
and data when cells share a folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import torch

from genworld.algos.registry import AlgoContext
from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError
from genworld.train.world_model import config_for_scale, fit_world_model
from genworld.utils.io import RUNTIME_FIELDS, atomic_write_json, file_lock


def provide_world_model(ctx: AlgoContext, model: str) -> torch.nn.Module:
    """Train (or resume, or load a finished) world model on ``ctx.dataset`` in ``ctx.out``, or
    once in ``ctx.shared`` for every cell with the same config and data (the
    :class:`~genworld.algos.registry.WorldModelSource` the runners hand to agents)."""
    cfg = config_for_scale(
        ctx.scale,
        check_ids=False,
        model=model,
        seed=ctx.seed,
        device=ctx.device.type,
        **ctx.overrides.get("world_model", {}),
    )
    if ctx.out is None:
        raise GenworldError("model-based algorithms need an output folder (AlgoContext.out)")
    folder = ctx.out / "world_model"
    if ctx.shared is None or folder.exists():  # (a cell that holds its own model keeps it)
        return fit_world_model(cfg, ctx.dataset, folder, show_progress=ctx.show_progress).to(
            ctx.device
        )
    folder = ctx.shared / world_model_key(cfg, ctx.dataset)
    atomic_write_json(ctx.out / "world_model.json", {"path": str(folder)})
    with file_lock(folder.with_name(folder.name + ".lock")):  # one process trains, others wait
        model = fit_world_model(cfg, ctx.dataset, folder, show_progress=ctx.show_progress)
    return model.to(ctx.device)


def world_model_key(cfg, dataset: MultiEnvDataset) -> str:
    """``<model>-s<seed>-<digest>``: the digest covers the world-model config (not its device
    or thread count) and a fingerprint of the data (each env's name, size and value sums)."""
    config = {k: v for k, v in asdict(cfg).items() if k not in (*RUNTIME_FIELDS, "device")}
    data = [
        [
            env.spec.name,
            len(env),
            float(env.rewards.double().sum()),
            float(env.observations.double().sum()),
            float(env.actions.double().sum()),
        ]
        for env in dataset.envs
    ]
    text = json.dumps({"config": config, "data": data}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{cfg.model}-s{cfg.seed}-{digest}"
