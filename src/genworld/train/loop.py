"""The one resumable training loop: step → finiteness guard → periodic hooks (evaluate, log) →
checkpoint, for every trainer (offline agents, world models, behaviour SAC, PPO, and their
DDP forms, where each process runs the same loop and the main one writes).

A trainer is anything with ``step(generator) -> metrics``, ``state_dict()`` and
``load_state_dict(state)`` (optionally ``begin(step)``, called once the start step is known).
The loop owns what every run needs the same way: the checkpoint cadence (atomic, checksummed
files; the trainer's state plus the sampling generator and torch's global RNG, so a resumed run
continues exactly), truncating logs written after the checkpoint a run resumes from, one logger
(JSONL files + TensorBoard + a progress bar), and Ctrl-C / SIGTERM: the current step finishes,
a checkpoint is written, and the run stops. Every logged record carries ``wall_s``: the run's
seconds since its first step, over all the processes that resumed it (a checkpoint keeps the
count, so a run killed and resumed reports the time it really took, less what it redid; a run
started from a shared prefix counts from there, and one whose checkpoint predates the count,
from its resume).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_agent_outcomes, first_episode_seed
from genworld.train.checkpoint import resume_point, save_checkpoint
from genworld.train.prefix import Prefix, inherited, keep_prefix, start_from_prefix
from genworld.utils.interrupt import deferred_interrupt
from genworld.utils.io import tensorboard_writer, truncate_jsonl
from genworld.utils.progress import progress_bar


class Trainer(Protocol):
    def step(self, generator: torch.Generator) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Processes(Protocol):
    """Where the loop runs: one process, or several under DDP (``train.distributed.Dist``)."""

    is_main: bool
    world_size: int

    def broadcast(self, obj: Any) -> Any: ...

    def reduce(self, metrics: dict[str, Any]) -> dict[str, float]: ...

    def barrier(self) -> None: ...


class OneProcess:
    is_main = True
    world_size = 1

    def broadcast(self, obj: Any) -> Any:
        return obj

    def reduce(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items()}

    def barrier(self) -> None:
        pass


@dataclass(frozen=True)
class Hook:
    """Every ``every`` steps (and at the last one): ``run(step, metrics)`` returns a record
    (without ``step``) that goes to ``log`` (a JSONL file in the run folder) and TensorBoard,
    or None. It runs on every process (an evaluation may need all of them); the record is
    written by the main one."""

    every: int
    run: Callable[[int, dict[str, Any]], dict[str, Any] | None]
    log: str | None = None
    rate: str | None = None
    """Add the steps per second since the run (re)started under this key."""
    rate_per_step: float = 1.0
    """Units per step in that rate (PPO: env steps per iteration)."""
    at_start: bool = False
    """Also run before the first step of a fresh run, as step 0 (an evaluation of the initial
    networks: a transferred agent's score before it trains)."""


def run_loop(
    name: str,
    trainer: Trainer,
    out: Path,
    *,
    steps: int,
    seed: int,
    checkpoint_every: int,
    hooks: tuple[Hook, ...] = (),
    before_checkpoint: Callable[[], None] | None = None,
    show_progress: bool = True,
    processes: Processes | None = None,
    check: bool = True,
    unit: str = "step",
    prefix: Prefix | None = None,
) -> int:
    """Run ``trainer.step`` until ``steps``, resuming from ``out/checkpoints``; returns the step
    reached. ``before_checkpoint`` runs on every process before each checkpoint (e.g. elite
    selection). ``check``: stop on a non-finite metric (the last good checkpoint stays).
    ``unit``: what a step is called in messages (update, iteration). ``prefix``: steps this run
    shares with others (:mod:`genworld.train.prefix`; one process only): a new run starts from
    it when another run has left it, else this run leaves it when it gets there."""
    procs = processes if processes is not None else OneProcess()
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    step, wall_before = 0, 0.0
    logs = tuple(dict.fromkeys(h.log for h in hooks if h.log))
    if prefix is not None and procs.world_size > 1:
        raise GenworldError(f"{name}: a shared prefix needs a one-process run")
    if prefix is not None and prefix.steps <= steps:
        start_from_prefix(prefix, out, logs)
    resumed = procs.broadcast(resume_point(out / "checkpoints") if procs.is_main else None)
    if resumed is not None:
        step, state = resumed
        restore(name, trainer, state, generator, out)
        if not inherited(out, step):  # (a prefix's seconds are the run's that made it)
            wall_before = float(state.get("wall_s", 0.0))
    if procs.is_main:  # a killed run redoes what it logged after its checkpoint (or from 0)
        for log in logs:
            truncate_jsonl(out / log, step if resumed is not None else -1)
    if hasattr(trainer, "begin"):
        trainer.begin(step)

    def checkpoint() -> None:
        if before_checkpoint is not None:
            before_checkpoint()
        if procs.is_main:
            state = {
                **trainer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "wall_s": wall(),
            }
            save_checkpoint(out / "checkpoints", step, state)

    logger = Logger(out, step, enabled=procs.is_main and step < steps)
    start, first = time.perf_counter(), step
    began = start

    def wall() -> float:
        return round(wall_before + time.perf_counter() - began, 1)

    with (
        logger,
        progress_bar(name, steps, done=step, enabled=show_progress and procs.is_main) as advance,
        deferred_interrupt() as stop,
    ):
        for hook in hooks if resumed is None else ():
            if hook.at_start and (record := hook.run(0, {})) is not None and hook.log:
                logger.write(hook.log, {"step": 0, **record, "wall_s": wall()})
        start = time.perf_counter()  # rates count training only
        while step < steps:
            metrics = trainer.step(generator)
            step += 1
            if check:
                check_finite(name, metrics, f"{unit} {step}", out)
            advance(1)
            last = step == steps
            for hook in hooks:
                if step % hook.every == 0 or last:
                    record = hook.run(step, metrics)
                    if record is not None and hook.log:
                        record = {"step": step, **record, "wall_s": wall()}
                        if hook.rate:
                            elapsed = time.perf_counter() - start
                            record[hook.rate] = (step - first) * hook.rate_per_step / elapsed
                        logger.write(hook.log, record)
            leaves_prefix = prefix is not None and step == prefix.steps
            at_checkpoint = step % checkpoint_every == 0 or last or leaves_prefix
            if at_checkpoint:
                checkpoint()
            if leaves_prefix:
                keep_prefix(prefix, out, logs)
            if stop.requested and not last:
                if not at_checkpoint:
                    checkpoint()
                raise KeyboardInterrupt(
                    f"{name}: stopped at {unit} {step}; a checkpoint was written: rerun the same "
                    f"command (--out {out}) to resume"
                )
    procs.barrier()
    return step


class Logger:
    """JSONL records (one file per stream, appended, flushed per record) and TensorBoard
    scalars under ``out/tb``; a no-op where ``enabled`` is False (other processes, a
    finished run)."""

    def __init__(self, out: Path, step: int, *, enabled: bool = True):
        self.out, self.step, self.enabled = out, step, enabled
        self.files: dict[str, Any] = {}
        self.writer = None

    def __enter__(self) -> Logger:
        if self.enabled:
            self.writer = tensorboard_writer(self.out, self.step)
        return self

    def write(self, stream: str, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if stream not in self.files:
            self.files[stream] = open(self.out / stream, "a")  # noqa: SIM115
        self.files[stream].write(json.dumps(record) + "\n")
        self.files[stream].flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "wall_s") and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()

    def __exit__(self, *exc) -> None:
        for f in self.files.values():
            f.close()
        if self.writer is not None:
            self.writer.close()


def restore(name: str, trainer: Any, state: dict, generator: torch.Generator, out: Path) -> None:
    """Load a checkpoint's trainer state, sampling generator and torch RNG (a checkpoint
    written without the RNG keeps the current one); a checkpoint of another configuration is
    a clear error, not a shape traceback."""
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, IndexError) as err:
        raise GenworldError(
            f"{name}: the checkpoint in {out / 'checkpoints'} was written by another "
            f"configuration ({type(err).__name__}: {str(err).splitlines()[0][:200]}); use "
            "the settings it was trained with or another --out"
        ) from None
    if "generator" in state:
        generator.set_state(state["generator"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])


def check_finite(name: str, metrics: dict, where: str, out: Path) -> None:
    """One fused check per step (no per-metric sync); names the offending metrics."""
    if not metrics:
        return
    values = torch.stack(
        [torch.as_tensor(v, dtype=torch.float32).reshape(()).cpu() for v in metrics.values()]
    )
    if bool(torch.isfinite(values).all()):
        return
    bad = [k for k, v in zip(metrics, values.tolist(), strict=True) if not np.isfinite(v)]
    raise GenworldError(
        f"{name}: non-finite {', '.join(bad)} at {where}; stopped, the last good "
        f"checkpoint in {out / 'checkpoints'} is intact (lower the learning rate or check the data)"
    )


# ---------------------------------------------------------------- offline agents
class AgentTrainer:
    """An offline agent as a trainer: a step is one ``update``; its checkpoint is the agent's
    state under ``agent``."""

    def __init__(self, agent: Any, update: Callable[[torch.Generator], dict] | None = None):
        self.agent = agent
        self.update = update or agent.update

    def step(self, generator: torch.Generator) -> dict[str, Any]:
        return self.update(generator)

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])


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
    prefix: Prefix | None = None,
) -> list[dict]:
    """Run ``update`` ``steps`` times; every ``eval_every`` evaluate ``agent.act`` in the real
    envs (deterministic, episode ``i`` seeded ``seed*1000 + i``), log the losses and scores to
    ``eval.jsonl`` and checkpoint. Returns the evaluation records. ``prefix``: the first steps
    this run shares with others (:func:`run_loop`)."""

    def evaluate(step: int, metrics: dict) -> dict:
        outcomes = evaluate_agent_outcomes(agent, specs, eval_episodes, first_episode_seed(seed))
        returns = {name: o.returns for name, o in outcomes.items()}
        successes = {name: o.successes for name, o in outcomes.items() if o.successes is not None}
        record = eval_record(specs, returns, successes)
        return {**{k: float(v) for k, v in metrics.items()}, **record}

    hook = Hook(eval_every, evaluate, log="eval.jsonl", rate="time/updates_per_s")
    run_loop(
        name,
        AgentTrainer(agent, update),
        out,
        steps=steps,
        seed=seed,
        checkpoint_every=eval_every,
        hooks=(hook,),
        show_progress=show_progress,
        unit="update",
        prefix=prefix,
    )
    return read_eval(out)


def eval_record(
    specs, returns: dict[str, np.ndarray], successes: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Per-env return, normalized score and spread, and the mean normalized score; for the envs
    in ``successes`` (per-episode bools: Meta-World), the success rate (fraction of episodes)."""
    record: dict[str, float] = {}
    for spec in specs:
        r = returns[spec.name]
        record[f"eval/{spec.name}/return"] = float(r.mean())
        record[f"eval/{spec.name}/normalized_score"] = float(spec.normalized_score(r.mean()))
        record[f"eval/{spec.name}/normalized_std"] = float(spec.normalized_std(r.std()))
        if successes and spec.name in successes:
            record[f"eval/{spec.name}/success_rate"] = float(np.mean(successes[spec.name]))
    scores = [record[f"eval/{s.name}/normalized_score"] for s in specs]
    record["eval/normalized_score_mean"] = float(np.mean(scores))
    return record


def read_eval(out: Path, name: str = "eval.jsonl") -> list[dict]:
    """The records of a JSONL log, one per step (the last one written wins), in step order."""
    records: dict[int, dict] = {}
    path = out / name
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                records[r["step"]] = r
    return [records[k] for k in sorted(records)]


def finished_log(out: Path, steps: int, name: str = "eval.jsonl") -> list[dict] | None:
    """The log of the run in ``out`` (:func:`read_eval`) if it reaches its last step ``steps``
    (the run is finished), else None."""
    records = read_eval(Path(out), name)
    return records if records and records[-1]["step"] >= steps else None


def log_reaches(out: Path, steps: int, name: str = "eval.jsonl") -> bool:
    """Whether the run in ``out`` has logged its last step ``steps`` (it is finished)."""
    return finished_log(out, steps, name) is not None
