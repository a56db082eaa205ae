"""Copy a study's small records from its run folder into ``docs/results/<study>`` (see that
folder's README): the top-level config/report files, every finished cell's ``result.json``, and
the models the study's cells share (``world_model/`` or ``world_models/*/``: config and final
checkpoint; ``prompt_dt/seed*/net.safetensors``). Cells' own checkpoints and datasets stay out.

    python scripts/archive_records.py RUN_DIR docs/results/STUDY
"""

from __future__ import annotations

import shutil
import sys
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


def archive(run: Path, dest: Path) -> int:
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
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    n = archive(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"copied {n} files into {sys.argv[2]}")
