"""Copy a study's small records from its run folder into ``docs/results/<study>`` (see that
folder's README): the top-level config/report files, every finished cell's ``result.json``, and
the models the study's cells share (``world_model/`` or ``world_models/*/``: config and final
checkpoint; ``prompt_dt/seed*/net.safetensors``). Cells' own checkpoints and datasets stay out.

    python scripts/archive_records.py RUN_DIR docs/results/STUDY [--max-models-mb N]

Shared models are left out (and named) when together they exceed ``--max-models-mb`` (default
50 MB): an ablation trains one world model per cell, hundreds of MB that do not belong in git.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

TOP = (".json", ".md", ".png", ".csv")


def shared_model(src: Path, dest: Path) -> int:
    """A world model folder: its config and its latest checkpoint only."""
    copied = 0
    if (src / "config.json").exists():
        copy(src / "config.json", dest / "config.json")
        copied += 1
    steps = sorted((src / "checkpoints").glob("step_*")) if (src / "checkpoints").exists() else []
    if steps:
        last = steps[-1]
        for f in last.iterdir():
            if f.is_file():
                copy(f, dest / "checkpoints" / last.name / f.name)
                copied += 1
    return copied


def copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def models_size(run: Path) -> int:
    """Bytes of the shared models ``archive`` would copy (config + last checkpoint)."""
    total = 0
    dirs = [run / "world_model"] if (run / "world_model").is_dir() else []
    if (run / "world_models").is_dir():
        dirs += [d for d in (run / "world_models").iterdir() if d.is_dir()]
    for d in dirs:
        steps = sorted((d / "checkpoints").glob("step_*")) if (d / "checkpoints").exists() else []
        if steps:
            total += sum(f.stat().st_size for f in steps[-1].iterdir() if f.is_file())
    total += sum(f.stat().st_size for f in run.glob("prompt_dt/seed*/net.safetensors"))
    return total


def archive(run: Path, dest: Path, max_models_mb: float = 50.0) -> int:
    if not run.is_dir():
        raise SystemExit(f"{run} is not a folder")
    copied = 0
    for f in run.iterdir():
        if f.is_file() and f.suffix in TOP:
            copy(f, dest / f.name)
            copied += 1
    for f in run.glob("cells/**/result.json"):
        copy(f, dest / f.relative_to(run))
        copied += 1
    size_mb = models_size(run) / 2**20
    if size_mb > max_models_mb:
        print(f"shared models left out: {size_mb:.0f} MB > --max-models-mb {max_models_mb:g}")
        return copied
    if (run / "world_model").is_dir():
        copied += shared_model(run / "world_model", dest / "world_model")
    for wm in sorted((run / "world_models").glob("*")) if (run / "world_models").is_dir() else []:
        if wm.is_dir():
            copied += shared_model(wm, dest / "world_models" / wm.name)
    for f in run.glob("prompt_dt/seed*/net.safetensors"):
        copy(f, dest / f.relative_to(run))
        copied += 1
    return copied


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--max-models-mb", type=float, default=50.0)
    args = parser.parse_args()
    n = archive(args.run, args.dest, args.max_models_mb)
    print(f"copied {n} files into {args.dest}")
