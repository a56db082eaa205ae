"""The generic offline loop: update → log → evaluate → checkpoint, resumable from ``out``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_agent
from genworld.train.checkpoint import (
    resume_point,
    save_checkpoint,
)
from genworld.utils.interrupt import deferred_interrupt
from genworld.utils.io import tensorboard_writer, truncate_jsonl
from genworld.utils.progress import progress_bar


def train_offline(
    name: str,
    agent: Any,
    update: Callable[[torch.Generator], dict],
    specs: list,
    out: Path,
    *,
    steps: int,
    eval_every: int,
    eval_episodes: int,
    seed: int,
    show_progress: bool = True,
) -> list[dict]:
    """Run ``update`` ``steps`` times; every ``eval_every`` evaluate ``agent.act`` in the real envs
    (deterministic, episode ``i`` seeded ``seed*1000 + i``), append to ``eval.jsonl`` (and
    TensorBoard ``tb/``) and save a checkpoint: agent state, sampling generator, torch's global
    RNG and the step. Rerunning on the same ``out`` resumes exactly where that checkpoint was.
    Ctrl-C or SIGTERM stops after the current update with a checkpoint of that update."""
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    resumed = resume_point(out / "checkpoints")
    if resumed is not None:
        step, state = resumed
        restore(name, agent, state, generator, out)
        truncate_jsonl(out / "eval.jsonl", step)
    writer = tensorboard_writer(out, step) if step < steps else None
    start, first = time.perf_counter(), step

    def checkpoint() -> None:
        state = {
            "agent": agent.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        save_checkpoint(out / "checkpoints", step, state)

    with (
        open(out / "eval.jsonl", "a") as log,
        progress_bar(name, steps, enabled=show_progress) as advance,
        deferred_interrupt() as stop,
    ):
        advance(step)
        while step < steps:
            metrics = update(generator)
            step += 1
            _check_finite(name, metrics, step, out)
            advance(1)
            at_eval = step % eval_every == 0 or step == steps
            if at_eval:
                record = _evaluate(name, agent, metrics, specs, eval_episodes, seed, step, out)
                record["time/updates_per_s"] = (step - first) / (time.perf_counter() - start)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if writer is not None:
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(key, value, step)
                    writer.flush()
                checkpoint()
            if stop.requested and step < steps:
                if not at_eval:
                    checkpoint()
                if writer is not None:
                    writer.close()
                raise KeyboardInterrupt(
                    f"{name}: stopped with a checkpoint at update {step}; rerun the same "
                    f"command (--out {out}) to resume"
                )
    if writer is not None:
        writer.close()
    return read_eval(out)


def restore(name: str, agent: Any, state: dict, generator: torch.Generator, out: Path) -> None:
    """Load a checkpoint's agent state, sampling generator and torch RNG; a checkpoint of
    another configuration is a clear error, not a shape traceback."""
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, IndexError) as err:
        raise GenworldError(
            f"{name}: the checkpoint in {out / 'checkpoints'} was written by another "
            f"configuration ({type(err).__name__}: {str(err).splitlines()[0][:200]}); use "
            "the settings it was trained with or another --out"
        ) from None
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


def _check_finite(name: str, metrics: dict, step: int, out: Path) -> None:
    """One fused check per update (no per-metric sync); names the offending losses."""
    if not metrics:
        return
    values = torch.stack(
        [torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in metrics.values()]
    )
    if bool(torch.isfinite(values).all()):
        return
    bad = [k for k, v in zip(metrics, values.tolist(), strict=True) if not np.isfinite(v)]
    raise GenworldError(
        f"{name}: non-finite {', '.join(bad)} at update {step}; stopped, the last good "
        f"checkpoint in {out / 'checkpoints'} is intact (lower the learning rate or check the data)"
    )


def _evaluate(name, agent, metrics, specs, episodes, seed, step, out) -> dict:
    losses = {k: float(v) for k, v in metrics.items()}
    if not all(np.isfinite(v) for v in losses.values()):
        raise GenworldError(
            f"{name}: non-finite loss at update {step} ({losses}); the last good checkpoint is "
            f"kept in {out}"
        )
    returns = evaluate_agent(agent, specs, episodes, seed * 1000)
    return {"step": step, **losses, **eval_record(specs, returns)}


def eval_record(specs, returns: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-env return, normalized score and spread, and the mean normalized score."""
    record: dict[str, float] = {}
    for spec in specs:
        r = returns[spec.name]
        record[f"eval/{spec.name}/return"] = float(r.mean())
        record[f"eval/{spec.name}/normalized_score"] = float(spec.normalized_score(r.mean()))
        record[f"eval/{spec.name}/normalized_std"] = float(spec.normalized_std(r.std()))
    scores = [record[f"eval/{s.name}/normalized_score"] for s in specs]
    record["eval/normalized_score_mean"] = float(np.mean(scores))
    return record


def read_eval(out: Path) -> list[dict]:
    records: dict[int, dict] = {}
    path = out / "eval.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                records[r["step"]] = r
    return [records[k] for k in sorted(records)]
