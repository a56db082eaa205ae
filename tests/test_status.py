"""``genworld status``: a study folder's cells and the time left, read without touching it."""

import json

import pytest

from genworld.cli import main
from genworld.errors import GenworldError
from genworld.train import scenarios, table, unseen, wpt_study
from genworld.train.status import study_status
from genworld.utils.io import COMMAND_FILE, check_or_write_config, claim, claim_held, run_kind

TABLE_IGNORED = ("workers", "executor", "reuse")


def _table(out, algos=("bc", "iql")):
    cfg = table.config_for_scale(
        "tiny", envs=("hopper",), qualities=("medium",), settings=("single",), algos=algos, seeds=2
    )
    check_or_write_config(out, cfg, ignore=TABLE_IGNORED, extendable=table.EXTENDABLE)
    return cfg, table.cells(cfg)


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize(
    "cfg, ignore, kind",
    [
        (table.config_for_scale("tiny"), TABLE_IGNORED, "genworld table (or ablate / sweep beta)"),
        (unseen.config_for_scale("tiny", family="cheetah-vel"), unseen.IGNORED, "genworld unseen"),
        (scenarios.config_for_scale("tiny"), scenarios.IGNORED, "genworld scenarios"),
        (wpt_study.config_for_scale("tiny"), wpt_study.IGNORED, "genworld wpt-study"),
    ],
)
def test_each_study_folder_is_recognised_from_the_config_its_command_writes(
    tmp_path, cfg, ignore, kind
):
    check_or_write_config(tmp_path, cfg, ignore=ignore)
    assert run_kind(json.loads((tmp_path / "config.json").read_text())) == kind


def test_a_claim_is_seen_held_only_while_a_process_holds_it(tmp_path):
    path = tmp_path / "seed0.claim"
    assert not claim_held(path)  # no file
    with claim(path, wait=False) as held:
        assert held and claim_held(path)
    assert not claim_held(path)


def test_status_of_a_table_counts_each_state_and_the_time_left(tmp_path):
    cfg, (bc0, iql0, bc1, iql1) = _table(tmp_path)
    assert [c.algo for c in (bc0, iql0, bc1, iql1)] == ["bc", "iql", "bc", "iql"]
    _write(tmp_path / bc0.folder / "result.json", {"seconds": 600.0})
    _write(tmp_path / iql0.folder / "error.json", {"error": "ValueError: nan"})
    started = tmp_path / bc1.folder
    steps = cfg.budget.updates
    _write(started / "policy" / "eval.jsonl", {"step": steps // 4})
    _write(tmp_path / "cells/medium/single-hopper/cql/seed0/result.json", {"seconds": 1.0})

    cell = tmp_path / bc1.folder
    with claim(cell.with_name(cell.name + ".claim"), wait=False):
        status = study_status(tmp_path)
    assert status["command"] == "genworld table" and status["running"]
    assert status["counts"] == {
        "finished": 1,
        "failed": 1,
        "training": 1,
        "stopped": 0,
        "waiting": 1,
    }
    states = {row["folder"]: row for row in status["cells"]}
    assert states[bc1.folder]["step"] == steps // 4
    assert states[iql0.folder]["error"] == "ValueError: nan"
    # iql has no finished cell: its two cells go at the mean of all (600 s); bc1 has 3/4 to go
    assert status["hours_left"] == pytest.approx((600 + 600 + 450) / 3600, abs=0.01)
    assert status["kinds"]["bc (single)"] == {"planned": 2, "finished": 1, "mean_minutes": 10.0}
    assert status["elsewhere"] == 1 and status["assumed"] == []

    stopped = study_status(tmp_path)  # the claim is let go: the cell waits for a rerun
    assert not stopped["running"]
    assert stopped["counts"]["stopped"] == 1 and stopped["counts"]["training"] == 0


def test_status_plans_from_the_last_command_and_says_what_it_assumed(tmp_path):
    _table(tmp_path)
    _table(tmp_path, algos=("bc", "iql", "cql"))  # a rerun that adds an algorithm
    assert study_status(tmp_path)["planned"] == 6

    cfg = wpt_study.config_for_scale("tiny", seeds=2)
    out = tmp_path / "wpt"
    check_or_write_config(out, cfg, ignore=wpt_study.IGNORED)
    assert study_status(out)["planned"] == len(cfg.tasks) * len(cfg.variants) * 2
    (out / COMMAND_FILE).unlink()  # as an archived record: config.json alone
    guessed = study_status(out)
    assert guessed["assumed"] == ["tasks", "variants", "seeds"]
    assert guessed["planned"] == len(cfg.tasks) * len(cfg.variants) * 3  # the default seeds


def test_status_of_a_folder_that_holds_no_study_is_one_line(tmp_path):
    with pytest.raises(GenworldError, match="does not exist"):
        study_status(tmp_path / "missing")
    with pytest.raises(GenworldError, match="holds no config.json"):
        study_status(tmp_path)
    _write(tmp_path / "config.json", {"qualities": ["medium"], "policy_updates": 10})
    with pytest.raises(GenworldError, match="is a `genworld run` folder"):
        study_status(tmp_path)


def test_cli_status_prints_json_and_lines(tmp_path, capsys):
    _, (bc0, *_) = _table(tmp_path)
    _write(tmp_path / bc0.folder / "result.json", {"seconds": 60.0})
    main(["status", str(tmp_path), "--json"])
    found = json.loads(capsys.readouterr().out)
    assert found["counts"]["finished"] == 1 and found["planned"] == 4
    main(["status", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("genworld table, not running")
    assert "4 cells: 1 finished, 3 waiting" in lines[1]
    assert "2 cells of kinds with none finished at the mean of all" in lines[2]  # iql's
    main(["status", str(tmp_path), str(tmp_path), "--json"])  # several folders: a list
    assert [s["planned"] for s in json.loads(capsys.readouterr().out)] == [4, 4]


def test_status_shows_how_far_each_shared_model_has_trained(tmp_path, capsys):
    _table(tmp_path)
    _write(tmp_path / "world_models/a/config.json", {"steps": 100, "model": "tgw"})
    (tmp_path / "world_models/a/checkpoints/step_000000040").mkdir(parents=True)
    _write(tmp_path / "world_models/b/config.json", {"steps": 100, "model": "mlp"})
    _write(tmp_path / "world_models/b/metrics.jsonl", {"step": 100})
    assert study_status(tmp_path)["models"] == [
        {"folder": "world_models/a", "state": "started", "step": 40, "steps": 100},
        {"folder": "world_models/b", "state": "finished", "step": 100, "steps": 100},
    ]
    main(["status", str(tmp_path)])
    assert "shared model world_models/a: step 40 of 100" in capsys.readouterr().out
    # a process training it holds its claim (another sharing the study waits on it)
    from genworld.utils.io import claim

    with claim(tmp_path / "world_models/a.claim", wait=False):
        found = study_status(tmp_path)
    assert found["models"][0]["state"] == "training" and found["running"]
    assert not study_status(tmp_path)["running"]
    with claim(tmp_path / "tasks.claim", wait=False):  # a study's process making its experts
        assert study_status(tmp_path)["running"]
