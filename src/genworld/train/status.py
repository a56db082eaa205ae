"""What a study's folder holds, read while its command runs or after it stopped, without
touching anything: the cells its last command planned, which are finished, failed, training,
stopped part-way or waiting, and the time the rest will take at the pace of the finished ones.

A study (``genworld table`` and the ``ablate`` / ``sweep`` tables built on it, ``unseen``,
``scenarios``, ``wpt-study``) is recognised by its ``config.json``
(:func:`~genworld.utils.io.run_kind`). Its cells are planned again by the study's own ``cells``
function from the whole config of the last command started in the folder
(``.command.json``, :data:`~genworld.utils.io.COMMAND_FILE`), so the plan is the one a rerun of
that command works through. Every study claims its cells one by one
(:func:`~genworld.utils.io.claimed_result`), so its training cells are known exactly, also when
several processes share the folder. A folder held whole by one process (an older genworld's
study) has its started cells counted as training while that process runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from genworld.config import from_dict
from genworld.train.failures import FAILURE_FILE
from genworld.utils.io import COMMAND_FILE, claim_file, claim_held, read_run_config, run_kind

STATES = ("finished", "failed", "training", "stopped", "waiting")
"""A cell's state: its result is written; its last try failed (``error.json``); a process is
training it; it has a checkpoint but no process (a rerun resumes it); nothing of it exists yet."""


@dataclass(frozen=True)
class PlannedCell:
    folder: str
    """Relative to the study's folder."""
    kind: str
    """What it trains (algorithm, method or variant, with the table's setting): the time left
    of a waiting cell is the mean time of the finished cells of its kind."""


@dataclass(frozen=True)
class Plan:
    command: str
    cells: tuple[PlannedCell, ...]
    done_file: str
    """The file a finished cell holds (``result.json``, ``report.json``)."""
    steps: int | None = None
    """A cell's training steps, the unit of its logs' ``step`` (None: not known here), so a
    started cell's time left counts only its steps still to go."""


def _config(cls: type, config: dict, recorded: bool) -> tuple[Any, list[str]]:
    """The study's config, and the fields it took at their defaults because the folder does
    not record them (none when ``config`` is the recorded command's whole config)."""
    assumed = [] if recorded else [f.name for f in fields(cls) if f.name not in config]
    return from_dict(cls, config), [name for name in assumed if name not in RUNTIME]


def _table(config: dict, recorded: bool) -> tuple[Plan, list[str]]:
    from genworld.train.table import TableConfig, cells

    cfg, assumed = _config(TableConfig, config, recorded)
    planned = [PlannedCell(c.folder, f"{c.algo} ({c.setting})") for c in cells(cfg)]
    table = Plan("genworld table", tuple(planned), "result.json", cfg.budget.updates)
    return table, assumed


def _unseen(config: dict, recorded: bool) -> tuple[Plan, list[str]]:
    from genworld.train.unseen import UnseenConfig
    from genworld.train.unseen_cells import cell_folder, split_tasks

    cfg, assumed = _config(UnseenConfig, config, recorded)
    train, test = split_tasks(cfg)
    planned = [
        PlannedCell(cell_folder(m, t, s), m)
        for s in range(cfg.seeds)
        for m in cfg.methods
        for t in train + test
    ]
    return Plan("genworld unseen", tuple(planned), "result.json"), assumed


def _scenarios(config: dict, recorded: bool) -> tuple[Plan, list[str]]:
    from genworld.train.scenarios import ScenarioStudyConfig, cells

    cfg, assumed = _config(ScenarioStudyConfig, config, recorded)
    planned = [PlannedCell(c.folder, c.method) for c in cells(cfg)]
    study = Plan("genworld scenarios", tuple(planned), "result.json", cfg.policy_updates)
    return study, assumed


def _wpt_study(config: dict, recorded: bool) -> tuple[Plan, list[str]]:
    from genworld.train.wpt_study import WPTStudyConfig, cells, config_for_scale

    cfg, assumed = _config(WPTStudyConfig, config, recorded)
    cfg = config_for_scale(**asdict(cfg))  # empty tasks: the scale's, as the command resolves
    planned = [PlannedCell(c.folder, c.variant) for c in cells(cfg)]
    return Plan("genworld wpt-study", tuple(planned), "report.json"), assumed


PLANNERS: dict[str, Callable[[dict, bool], tuple[Plan, list[str]]]] = {
    "genworld table (or ablate / sweep beta)": _table,
    "genworld unseen": _unseen,
    "genworld scenarios": _scenarios,
    "genworld wpt-study": _wpt_study,
}
"""Each study's planner, by the ``run_kind`` of its config.json."""

RUNTIME = ("workers", "threads", "executor", "reuse", "shipped_experts", "wait_for_others")
"""Fields that change how a study runs, never which cells it plans."""


def plan(out: Path) -> tuple[Plan, list[str]]:
    """The cells the last command started in ``out`` planned (from its ``.command.json``), and
    the fields the plan had to take at their defaults because the folder does not record them
    (a folder without ``.command.json``, such as an archived record, has only its config.json,
    which leaves out what a study may add later: methods, seeds); a one-line error when ``out``
    holds no study."""
    out = Path(out)
    fix = (
        "give the --out folder of a genworld table, ablate, sweep, unseen, scenarios or "
        "wpt-study command (a single run shows its progress in its log)"
    )
    config = read_run_config(out, tuple(PLANNERS), fix)
    recorded = (out / COMMAND_FILE).exists()
    planner = PLANNERS[run_kind(config)]
    return planner(_read(out / COMMAND_FILE) if recorded else config, recorded)


def _read(path: Path) -> dict[str, Any]:
    """A JSON file genworld wrote (atomically: never half-written)."""
    return json.loads(path.read_text())


def _last_step(folder: Path) -> int | None:
    """The largest ``step`` among the last records of the JSONL logs under ``folder``."""
    steps = []
    for log in folder.rglob("*.jsonl"):
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        if lines:
            try:
                step = json.loads(lines[-1]).get("step")
            except ValueError:  # a record being written
                continue
            if isinstance(step, int):
                steps.append(step)
    return max(steps) if steps else None


def _cell_state(out: Path, cell: PlannedCell, plan_: Plan, running: bool) -> dict[str, Any]:
    folder = out / cell.folder
    row: dict[str, Any] = {"folder": cell.folder, "kind": cell.kind}
    done = folder / plan_.done_file
    if done.exists():
        result = _read(done)
        seconds = result.get("seconds", result.get("wall_seconds"))
        return {**row, "state": "finished", "seconds": seconds}
    failed = (folder / FAILURE_FILE).exists()
    # a process holding the folder alone trains the cells it has started (they are not claimed
    # one by one there); a running study retries a failed cell only when it reaches it again
    training = claim_held(claim_file(folder)) or (running and folder.exists() and not failed)
    if training:
        return {**row, "state": "training", "step": _last_step(folder)}
    if failed:
        return {**row, "state": "failed", "error": _read(folder / FAILURE_FILE)["error"]}
    if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
        return {**row, "state": "stopped", "step": _last_step(folder)}
    return {**row, "state": "waiting"}


MODEL_FOLDERS = ("pretrain", "world_model", "world_models/*", "world_models/*/*")
"""Where studies keep the models their cells share (WPT's pre-training, a table's or the unseen
study's world models, a scenario study's per group and kind)."""


def _models(out: Path) -> list[dict[str, Any]]:
    """The shared world models under ``out``: each one's folder, its last checkpointed or
    logged step and its planned steps, and its state: finished once it reached them, training
    while a process holds its claim, else started."""
    rows = []
    for pattern in MODEL_FOLDERS:
        for folder in sorted(p for p in out.glob(pattern) if (p / "config.json").is_file()):
            steps = _read(folder / "config.json").get("steps")
            if not isinstance(steps, int):
                continue
            checkpoints = [
                int(p.name.removeprefix("step_"))
                for p in (folder / "checkpoints").glob("step_*")
                if p.name.removeprefix("step_").isdigit()
            ]
            step = max([*checkpoints, _last_step(folder) or 0])
            state = (
                "finished"
                if step >= steps
                # a study's process trains it, holding its claim (others wait for it)
                else "training"
                if claim_held(claim_file(folder))
                else "started"
            )
            rows.append(
                {
                    "folder": str(folder.relative_to(out)),
                    "state": state,
                    "step": step,
                    "steps": steps,
                }
            )
    return rows


def _time_left(rows: list[dict], steps: int | None) -> tuple[float | None, dict[str, dict]]:
    """Hours of cell time the unfinished cells need (each at the mean time of the finished cells
    of its kind, or of all of them when its kind has none; a started one only for its share of
    ``steps`` still to go) and the per-kind counts and means; None when no cell has finished."""
    kinds: dict[str, dict] = defaultdict(lambda: {"planned": 0, "finished": 0, "seconds": []})
    for row in rows:
        entry = kinds[row["kind"]]
        entry["planned"] += 1
        if row["state"] == "finished":
            entry["finished"] += 1
            if isinstance(row.get("seconds"), int | float):
                entry["seconds"].append(float(row["seconds"]))
    every = [s for entry in kinds.values() for s in entry["seconds"]]
    table = {
        kind: {
            "planned": entry["planned"],
            "finished": entry["finished"],
            "mean_minutes": round(sum(entry["seconds"]) / len(entry["seconds"]) / 60, 1)
            if entry["seconds"]
            else None,
        }
        for kind, entry in kinds.items()
    }
    if not every:
        return None, table
    overall = sum(every) / len(every)

    def cell_left(row: dict) -> float:
        own = kinds[row["kind"]]["seconds"]
        pace = sum(own) / len(own) if own else overall
        if steps and row.get("step") is not None:
            return pace * max(0.0, 1.0 - row["step"] / steps)
        return pace

    left = sum(cell_left(r) for r in rows if r["state"] != "finished")
    return round(left / 3600, 2), table


def study_status(out: Path) -> dict[str, Any]:
    """The state of every planned cell of the study in ``out``, the counts per state, per kind
    the finished cells' mean minutes, and ``hours_left``: the cell time the unfinished ones
    need at that pace (None before any cell finished; the shared models still to train are
    not in it). ``elsewhere``: finished cells of other commands run in the same folder (a
    table's other algorithm lists, say), not planned by the last one. ``models``: the shared
    world models and how far each has trained."""
    out = Path(out)
    plan_, assumed = plan(out)
    # a command holding the folder alone, or a study's process making what its cells share
    # (task experts, a pre-trained model: ``<name>.claim`` beside it); the processes that split
    # a study's cells hold the folder's claim together, and their cells show them
    running = any(claim_held(path) for path in out.glob("*.claim"))  # .claim among them
    models = _models(out)
    rows = [_cell_state(out, cell, plan_, running) for cell in plan_.cells]
    counts = {state: sum(r["state"] == state for r in rows) for state in STATES}
    planned = {out / c.folder / plan_.done_file for c in plan_.cells}
    cells_root = out / "cells"
    elsewhere = (
        sum(p not in planned for p in cells_root.rglob(plan_.done_file))
        if cells_root.exists()
        else 0
    )
    hours_left, kinds = _time_left(rows, plan_.steps)
    return {
        "folder": str(out),
        "command": plan_.command,
        "running": running
        or counts["training"] > 0
        or any(m["state"] == "training" for m in models),
        "planned": len(rows),
        "assumed": assumed,
        "counts": counts,
        "hours_left": hours_left,
        "kinds": kinds,
        "elsewhere": elsewhere,
        "models": models,
        "cells": rows,
    }


__all__ = ["STATES", "Plan", "PlannedCell", "plan", "study_status"]
