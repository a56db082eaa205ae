"""Copy a study's small records from its run folder into ``docs/results/<study>`` (see that
folder's README): the top-level config/report files, every finished cell's ``result.json`` (a
WPT study's: ``report.json``) with its evaluation log (a table or scenario cell's
``policy/eval.jsonl``, kept beside the result as ``eval.jsonl``: the curve and the training
metrics logged with each evaluation), each seeded run's ``eval.jsonl`` and ``config.json`` outside
``cells/`` (a DD-IQL study's runs), the models the study's cells share (``world_model/``, a WPT
study's ``pretrain/``, ``world_models/*/`` or, for scenario studies,
``world_models/<setting>/<kind>/``: config, held-out errors and final checkpoint;
``prompt_dt/seed*/net.safetensors``). Cells' own checkpoints and datasets stay out.

    python scripts/archive_records.py RUN_DIR docs/results/STUDY [--max-models-mb N]

Shared models are left out (and named) when together they exceed ``--max-models-mb`` (default
50 MB): an ablation trains one world model per cell, hundreds of MB that do not belong in git.

Files are copied byte for byte, so each cell's ``provenance`` (commit, uncommitted-changes mark,
command, machine) and its datasets' fingerprints stay in the record; the script prints which
commits made the cells. ``genworld results`` then renders the record's headline row; a
``record.json`` written beside the record by hand (title, caveat) is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from genworld.utils.provenance import cells_code

TOP = (".json", ".md", ".png", ".csv")


def shared_files(run: Path) -> list[Path]:
    """The models the study's cells share: each world model folder's config and latest
    checkpoint, and each seed's Prompt-DT weights."""
    folders = [run / name for name in ("world_model", "pretrain") if (run / name).is_dir()]
    if (run / "world_models").is_dir():  # <key>/ (table), or <setting>/<kind>/ (scenarios)
        folders += sorted(d for d in (run / "world_models").glob("*") if d.is_dir())
        folders += sorted(d for d in (run / "world_models").glob("*/*") if d.is_dir())
    files = []
    for folder in folders:
        for name in ("config.json", "errors.json", "provenance.json"):  # errors: k-step
            if (folder / name).exists():
                files.append(folder / name)
        ckpts = folder / "checkpoints"
        steps = sorted(ckpts.glob("step_*")) if ckpts.exists() else []
        if steps:
            files += sorted(f for f in steps[-1].iterdir() if f.is_file())
    return files + sorted(run.glob("prompt_dt/seed*/net.safetensors"))


def run_logs(run: Path) -> list[Path]:
    """Each seeded run's evaluation log, config and provenance outside ``cells/`` (a DD-IQL study's
    ``<variant>[/<env>]/seed<s>/`` or ``seed<s>/<stage>/``, a meta-RL model's
    ``<method>/seed<s>/``): what their reports' per-seed scores are computed from."""
    logs = [*run.glob("*/seed*/eval.jsonl"), *run.glob("*/*/seed*/eval.jsonl")]
    logs += run.glob("seed*/*/eval.jsonl")  # agnostic-transfer: seed<s>/<stage>/
    logs = [f for f in logs if f.relative_to(run).parts[0] not in ("cells", "prefixes")]
    beside = [f.with_name(n) for f in logs for n in ("config.json", "provenance.json")]
    return sorted(logs + [f for f in beside if f.exists()])


def copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def archive(run: Path, dest: Path, max_models_mb: float = 50.0) -> int:
    if not run.is_dir():
        raise SystemExit(f"{run} is not a folder")
    records = [  # not the run's own state files (.command.json: the last command started)
        f
        for f in run.iterdir()
        if f.is_file()
        and f.suffix in TOP
        and f.name != "record.json"
        and not f.name.startswith(".")
    ]
    cell_files = [*run.glob("cells/**/result.json"), *run.glob("cells/**/report.json")]
    records += cell_files  # report.json: a WPT study's fine-tuning runs
    records += run_logs(run)
    models = shared_files(run)
    size_mb = sum(f.stat().st_size for f in models) / 2**20
    if size_mb > max_models_mb:
        print(f"shared models left out: {size_mb:.0f} MB > --max-models-mb {max_models_mb:g}")
        models = []
    for f in records + models:
        copy(f, dest / f.relative_to(run))
    logs = [c.parent / "policy" / "eval.jsonl" for c in cell_files]
    for log in (f for f in logs if f.exists()):
        copy(log, dest / log.parent.parent.relative_to(run) / "eval.jsonl")
        records.append(log)
    made_by = cells_code([json.loads(f.read_text()) for f in cell_files])
    print("cells made by: " + ", ".join(f"{code} ({n})" for code, n in made_by.items()))
    if any(code.endswith("+dirty") for code in made_by):
        print(
            "some cells were made with uncommitted changes: their commit alone does not rebuild them"
        )
    return len(records) + len(models)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--max-models-mb", type=float, default=50.0)
    args = parser.parse_args()
    n = archive(args.run, args.dest, args.max_models_mb)
    print(f"copied {n} files into {args.dest}")
