"""scripts/archive_records.py: a study's small records out of its run folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "archive_records.py"


@pytest.fixture(scope="module")
def archive():
    spec = importlib.util.spec_from_file_location("archive_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.archive


def _run_folder(root: Path, model_bytes: int) -> Path:
    run = root / "run"
    cell = run / "cells" / "medium" / "single-hopper" / "tgw" / "seed0"
    cell.mkdir(parents=True)
    (cell / "result.json").write_text(json.dumps({"score": 1.0}))
    (cell / "policy").mkdir()
    (cell / "policy" / "eval.jsonl").write_text('{"step": 1}\n')
    (cell / "checkpoints").mkdir()
    (cell / "checkpoints" / "big.safetensors").write_bytes(b"x" * 1000)
    (run / "config.json").write_text("{}")
    (run / "table.md").write_text("# table")
    (run / ".command.json").write_text("{}")  # the run folder's own state, not a record
    for step in ("step_000000100", "step_000000200"):
        ckpt = run / "world_models" / "tgw-s0" / "checkpoints" / step
        ckpt.mkdir(parents=True)
        (ckpt / "tensors.safetensors").write_bytes(b"w" * model_bytes)
    (run / "world_models" / "tgw-s0" / "config.json").write_text("{}")
    return run


def test_copies_results_reports_and_the_last_model_checkpoint(tmp_path, archive):
    run = _run_folder(tmp_path, model_bytes=2000)
    dest = tmp_path / "records"
    archive(run, dest, max_models_mb=1.0)
    assert (dest / "config.json").exists() and (dest / "table.md").exists()
    assert not (dest / ".command.json").exists()
    assert (dest / "cells/medium/single-hopper/tgw/seed0/result.json").exists()
    log = dest / "cells/medium/single-hopper/tgw/seed0/eval.jsonl"  # beside the result
    assert log.read_text() == '{"step": 1}\n'
    assert not (dest / "cells/medium/single-hopper/tgw/seed0/checkpoints").exists()
    assert not (dest / "cells/medium/single-hopper/tgw/seed0/policy").exists()
    ckpts = dest / "world_models/tgw-s0/checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step_000000200"]  # the last one only


def test_leaves_out_shared_models_over_the_size_limit(tmp_path, archive, capsys):
    run = _run_folder(tmp_path, model_bytes=3 * 2**20)  # 3 MB, over a 1 MB limit
    dest = tmp_path / "records"
    archive(run, dest, max_models_mb=1.0)
    assert (dest / "cells/medium/single-hopper/tgw/seed0/result.json").exists()
    assert not (dest / "world_models").exists()
    assert "shared models left out: 3 MB" in capsys.readouterr().out


def test_keeps_provenance_and_a_hand_written_record_json(tmp_path, archive, capsys):
    run = _run_folder(tmp_path, model_bytes=10)
    cell = run / "cells" / "medium" / "single-hopper" / "tgw" / "seed0" / "result.json"
    cell.write_text(json.dumps({"score": 1.0, "provenance": {"commit": "f" * 40, "dirty": True}}))
    (run / "record.json").write_text('{"title": "from the run"}')
    dest = tmp_path / "records"
    dest.mkdir()
    (dest / "record.json").write_text('{"title": "by hand"}')
    archive(run, dest)
    assert (dest / cell.relative_to(run)).read_bytes() == cell.read_bytes()
    assert json.loads((dest / "record.json").read_text()) == {"title": "by hand"}
    out = capsys.readouterr().out
    assert "cells made by: ffffffffff+dirty (1)" in out and "uncommitted changes" in out


def test_scenario_studies_keep_each_world_models_errors_and_last_checkpoint(tmp_path, archive):
    run = tmp_path / "run"
    model = run / "world_models" / "multi" / "mrcom"
    for step in ("step_000000010", "step_000000020"):
        (model / "checkpoints" / step).mkdir(parents=True)
        (model / "checkpoints" / step / "tensors.safetensors").write_bytes(b"w")
    (model / "config.json").write_text("{}")
    (model / "errors.json").write_text(json.dumps({"ood": {"dmc-cheetah-run": {"obs_h5": 0.5}}}))
    (run / "scenarios.json").write_text("{}")
    dest = tmp_path / "records"
    archive(run, dest)
    kept = dest / "world_models" / "multi" / "mrcom"
    assert (kept / "errors.json").exists() and (kept / "config.json").exists()
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["step_000000020"]
