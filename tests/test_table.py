"""`genworld table`: cells, resume, parallel == sequential, report files, IQM arithmetic."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from genworld import api
from genworld.algos.registry import available_algos
from genworld.cli import main
from genworld.errors import GenworldError
from genworld.reports.table import iqm_with_ci, score_matrices
from genworld.train.table import cells, config_for_scale
from genworld.utils.io import atomic_write_json

from .conftest import side_by_side, write_tiny_policies


def run_table(cfg, out, **kwargs):
    """``genworld table``'s API call; the table.json it wrote."""
    from genworld.api import table

    return table(cfg, out, **kwargs).summary


# the acceptance algorithms when they are all available, else the ones that are
WANTED = ["cql", "mopo", "prompt-dt"]
ALGOS = WANTED if set(WANTED) <= set(available_algos()) else ["bc", "tgw"]


@pytest.fixture
def policies(tmp_path, monkeypatch):
    folder = tmp_path / "policies"
    write_tiny_policies(folder, ("hopper", "walker2d"))
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))
    return folder


def test_acceptance_command_writes_markdown_csv_json_and_plot(policies, tmp_path, capsys):
    out = tmp_path / "table"
    argv = ["table", "--envs", "hopper,walker2d", "--qualities", "medium", "--algos"]
    argv += [",".join(ALGOS), "--setting", "multi", "--seeds", "1", "--scale", "tiny"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    md = (out / "table.md").read_text()
    summary = json.loads((out / "table.json").read_text())
    assert "not D4RL's data" in summary["provenance"]
    assert summary["config"]["budget"]["last_k"] == 2
    precisions = [
        json.loads(p.read_text())["matmul_precision"] for p in out.glob("cells/**/result.json")
    ]
    assert precisions == ["highest"] * len(ALGOS)  # the cells' recorded precision
    # each cell records its world model's budget and, MBPO-based, its rollouts and SAC
    cell = {
        r["algo"]: r for r in map(json.loads, map(Path.read_text, out.glob("cells/**/result.json")))
    }
    for algo, r in cell.items():
        model_based = algo in ("tgw", "mopo", "morel")
        assert (r["world_model"] is not None) == model_based == (r["policy_learner"] is not None)
        if model_based:
            assert r["world_model"]["steps"] > 0 and r["policy_learner"]["horizon"] > 0
            assert f"- `{algo}`: world model `" in md
    assert {r["algo"] for r in summary["rows"]} == set(ALGOS)
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ALGOS) * 2  # one row per (cell, env): 1 seed, 2 envs
    assert {r["env"] for r in rows} == {"hopper", "walker2d"}
    assert set(summary["iqm"]["multi"]) == set(ALGOS)
    assert (out / "profile_multi.png").stat().st_size > 1000
    # the paper's multi-env numbers sit next to ours where the paper has them
    # CQL / TGW on hopper-medium in seed 000's Table 1
    assert ("(TGW paper 49.3)" if "cql" in ALGOS else "(TGW paper 88.4)") in md
    # CQL's cell records the precision its out-of-data scoring resolved to (float32 by default)
    assert summary["precision"]["matmul"] == {"highest": len(ALGOS)}
    if "cql" in ALGOS:
        assert cell["cql"]["numerics"] == {"ood_precision": "float32"}
        assert summary["precision"]["ood_precision"] == {"float32": 1}
        assert all("numerics" not in r for a, r in cell.items() if a != "cql")


def test_rerun_skips_done_cells_and_redoes_only_missing_ones(policies, tmp_path):
    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=2)
    out = tmp_path / "t"
    first = run_table(cfg, out, show_progress=False)
    results = sorted(out.glob("cells/**/result.json"))
    assert len(results) == len(cells(cfg)) == 2
    stamps = {p: p.stat().st_mtime_ns for p in results}
    results[1].unlink()
    second = run_table(cfg, out, show_progress=False)
    assert results[0].stat().st_mtime_ns == stamps[results[0]]  # untouched
    assert results[1].exists()
    key = lambda r: (r["algo"], r["seed"], r["env"])  # noqa: E731
    a = sorted(first["rows"], key=key)
    b = sorted(second["rows"], key=key)
    assert [r["last_k"] for r in a] == [r["last_k"] for r in b]
    # --report-only: the table of the finished cells, training nothing
    results[1].unlink()
    partial = run_table(cfg, out, show_progress=False, report_only=True)
    assert not results[1].exists() and partial["cells"] == 1 and partial["planned_cells"] == 2
    saved = json.loads((out / "table.json").read_text())
    assert saved["cells"] == 1 and saved["planned_cells"] == 2  # a partial report
    assert saved["config"]["seeds"] == 2 and {r["seed"] for r in saved["rows"]} == {0}  # n=1
    md = (out / "table.md").read_text()
    bc_seconds = json.loads(results[0].read_text())["seconds"]
    assert f"by algorithm: bc {bc_seconds:.0f} s; about {bc_seconds / 3600:.1f} h" in md
    with pytest.raises(GenworldError, match="no run"):
        run_table(cfg, tmp_path / "elsewhere", show_progress=False, report_only=True)
    # a report may cover more algorithms or settings than the last run asked for (the cells of
    # several runs); another budget is still refused
    wider = replace(cfg, algos=("bc", "iql"), settings=("multi", "single"))
    assert run_table(wider, out, show_progress=False, report_only=True)["cells"] == 1
    with pytest.raises(GenworldError, match="different config"):
        run_table(replace(cfg, envs=("walker2d",)), out, show_progress=False, report_only=True)


@pytest.mark.integration  # worker processes: out of the fast suite, CI runs it
def test_process_pool_gives_the_sequential_numbers(policies, tmp_path):
    base = dict(envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=2)
    seq = run_table(config_for_scale("tiny", **base), tmp_path / "a", show_progress=False)
    par = run_table(
        config_for_scale("tiny", workers=2, executor="local", **base),
        tmp_path / "b",
        show_progress=False,
    )
    key = lambda r: (r["seed"], r["env"])  # noqa: E731
    assert [r["last_k"] for r in sorted(seq["rows"], key=key)] == [
        r["last_k"] for r in sorted(par["rows"], key=key)
    ]


def test_bad_input_is_one_line_and_a_changed_config_is_refused(policies, tmp_path, capsys):
    """A rerun may ask for more seeds (only the new cells train); other envs are refused."""
    assert main(["table", "--algos", "cql,nope", "--scale", "tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown algorithm 'nope'" in err
    out = tmp_path / "x"
    base = ["table", "--qualities", "medium", "--algos", "bc"]
    base += ["--scale", "tiny", "--out", str(out), "--quiet"]
    assert main([*base, "--envs", "hopper", "--seeds", "1"]) == 0
    first = out / "cells/medium/multi-multi/bc/seed0/result.json"
    stamp = first.stat().st_mtime_ns
    assert main([*base, "--envs", "hopper", "--seeds", "2"]) == 0
    assert first.stat().st_mtime_ns == stamp  # seed 0 is not trained again
    assert json.loads((out / "config.json").read_text())["seeds"] == 2
    assert len(json.loads((out / "table.json").read_text())["rows"]) == 2
    capsys.readouterr()
    assert main([*base, "--envs", "walker2d", "--seeds", "2"]) == 2
    assert "different config (envs)" in capsys.readouterr().err


def test_iqm_and_score_matrix_arithmetic():
    cfg = config_for_scale(
        "tiny", envs=("hopper", "walker2d"), qualities=("medium",), algos=("bc",), seeds=2
    )
    long = [
        {"setting": "multi", "quality": "medium", "env": e, "algo": "bc", "seed": s, "last_k": v}
        for (e, s, v) in [("hopper", 0, 10.0), ("hopper", 1, 30.0), ("walker2d", 0, 50.0)]
    ]
    # walker2d misses seed 1: only hopper is a complete task
    m = score_matrices(cfg, long, "multi", list(cfg.algos))
    np.testing.assert_allclose(m["bc"], [[0.1], [0.3]])
    const = {"x": np.full((4, 3), 0.5)}
    iqm = iqm_with_ci(const, reps=50)["x"]
    assert iqm["iqm"] == pytest.approx(50.0)
    assert iqm["ci_low"] == pytest.approx(50.0) and iqm["ci_high"] == pytest.approx(50.0)
    # IQM drops the lowest and highest quarter: 8 runs, the 4 middle values average to 4.5
    spread = {"y": np.arange(1, 9, dtype=float).reshape(8, 1) / 100}
    assert iqm_with_ci(spread, reps=50)["y"]["iqm"] == pytest.approx(4.5)
    # reproducible, and an algorithm's interval does not depend on which others share the report
    assert iqm_with_ci(spread, reps=50) == iqm_with_ci(spread, reps=50)
    other = {"z": np.random.default_rng(0).uniform(size=(5, 3))}
    assert iqm_with_ci(spread, reps=50)["y"] == iqm_with_ci({**other, **spread}, reps=50)["y"]


def test_cells_are_seed_major_so_a_partial_table_compares_every_algorithm():
    cfg = config_for_scale(
        "tiny", algos=("bc", "iql"), envs=("hopper",), qualities=("medium",), seeds=2
    )
    order = [(c.seed, c.algo) for c in cells(cfg)]
    assert order == [(0, "bc"), (0, "iql"), (1, "bc"), (1, "iql")]


def test_precision_note_counts_each_precision_and_unrecorded_cells():
    from genworld.eval.scores import precision_note

    cells = [{"matmul_precision": "medium"}] * 2 + [{"matmul_precision": "highest"}, {}]
    note = precision_note(cells)
    assert "highest (IEEE float32): 1 cell;" in note
    assert "medium (bfloat16 inputs, float32 accumulation): 2 cells" in note
    assert "unrecorded: 1 cell." in note


def test_precision_counts_a_part_over_the_cells_of_the_algorithms_that_record_it():
    from genworld.eval.scores import precision_counts, precision_note

    cql = {"algo": "cql", "matmul_precision": "highest"}
    cells = [
        cql | {"numerics": {"ood_precision": "bfloat16"}},
        cql | {"numerics": {"ood_precision": "float32"}},
        cql | {"numerics": {"ood_precision": "float32"}},
        cql,  # written before cells recorded it
        {"algo": "bc", "matmul_precision": "highest"},  # no such part: not counted
    ]
    counts = precision_counts(cells)
    assert counts == {
        "matmul": {"highest": 5},
        "ood_precision": {"bfloat16": 1, "float32": 2, "unrecorded": 1},
    }
    assert "(mixed" in precision_note(cells)
    assert "(mixed" not in precision_note(cells[1:3])
    assert "(mixed" not in precision_note(cells[1:4])  # an unrecorded cell is not another value
    assert precision_counts([cells[-1]]) == {"matmul": {"highest": 1}}


def test_two_runs_on_one_out_split_the_cells_and_train_each_once(policies, tmp_path, monkeypatch):
    """Two `genworld table` runs sharing --out (threads here; processes or machines in use):
    every cell is trained by exactly one of them, and both write the whole table."""
    import time

    from genworld.train import table

    trained, real = [], table._train_cell

    def slow_train(
        cfg, cell, out, *rest, **kwargs
    ):  # a cell long enough for the other run to reach it
        trained.append((cell.algo, cell.seed))
        time.sleep(0.5)
        return real(cfg, cell, out, *rest, **kwargs)

    monkeypatch.setattr(table, "_train_cell", slow_train)
    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=2)
    out = tmp_path / "shared"
    summaries = side_by_side(lambda: run_table(cfg, out, show_progress=False), stagger=0.2)
    assert sorted(trained) == [("bc", 0), ("bc", 1)]  # each cell once
    assert all(s is not None and s["cells"] == 2 for s in summaries)
    assert summaries[0]["rows"] == summaries[1]["rows"]


def test_a_claimed_cell_is_skipped_or_awaited_and_a_dead_claim_is_taken(policies, tmp_path):
    import threading

    from genworld.train.table import run_cell
    from genworld.utils.io import claim

    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=1)
    out = tmp_path / "t"
    cell = cells(cfg)[0]
    folder = out / cell.folder
    lock = folder.with_name(folder.name + ".claim")
    from genworld.data.build import ensure_built

    ensure_built(["hopper-medium"], steps=cfg.budget.dataset_steps)
    with claim(lock, wait=False) as held:  # "another process" trains it
        assert held
        assert run_cell(cfg, cell, out, wait=False) is None
        assert not (folder / "result.json").exists()
        with claim(lock, wait=False) as second:
            assert not second
    # the holder stopped without a result (killed): a waiting run trains the cell itself
    got = {}
    with claim(lock, wait=True):
        waiter = threading.Thread(target=lambda: got.update(r=run_cell(cfg, cell, out)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked on the claim
    waiter.join(timeout=300)
    assert got["r"]["seed"] == 0 and (folder / "result.json").exists()


def test_without_waiting_a_run_leaves_other_processes_cells_and_reports_the_rest(
    policies, tmp_path
):
    """``wait_for_others=False``: a run that reaches a cell another process holds leaves it
    there, reports the finished cells as k of the planned, and exits; once the other process
    let it go, a rerun finishes the table."""
    from genworld.data.build import ensure_built
    from genworld.utils.io import claim

    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=2)
    ensure_built(["hopper-medium"], steps=cfg.budget.dataset_steps)
    out = tmp_path / "t"
    held_cell = out / cells(cfg)[1].folder
    leave = replace(cfg, wait_for_others=False)
    with claim(held_cell.with_name(held_cell.name + ".claim"), wait=False) as held:
        assert held
        summary = run_table(leave, out, show_progress=False)
    assert (summary["cells"], summary["planned_cells"]) == (1, 2)
    assert not (held_cell / "result.json").exists()
    # how the cells are run is not part of the resume check: the default run finishes it
    summary = run_table(cfg, out, show_progress=False)
    assert (summary["cells"], summary["planned_cells"]) == (2, 2)


def test_concurrent_builds_of_one_dataset_take_turns(policies):

    from genworld.data.build import ensure_built

    cards = [c for built in side_by_side(lambda: ensure_built(["hopper-medium"], steps=300))
             for c in built]  # fmt: skip
    assert len(cards) == 2
    assert sorted(bool(c.get("cached")) for c in cards) == [False, True]  # built once


def test_a_cell_text_shows_spread_only_over_several_seeds_and_marks_partial_cells():
    from genworld.reports.table import seeds_text

    assert seeds_text(41.25, 2.0, 3, 3) == "41.2 ± 2.0"
    assert seeds_text(41.25, 2.0, 2, 3) == "41.2 ± 2.0 (n=2)"
    assert seeds_text(41.25, 0.0, 1, 3) == "41.2 (n=1)"  # one seed: no spread to show
    assert seeds_text(41.25, 0.0, 1, 1) == "41.2"
    assert seeds_text(float("nan"), float("nan"), 0, 3) == "—"


def test_the_average_row_and_the_papers_claims_use_the_same_finished_tasks():
    """An algorithm that has finished only its easy task is not averaged against another's
    every task; the claims give numbers on what has finished but a verdict only once every task
    has every seed."""
    from genworld.reports.table import aggregate, markdown_table, paper_claims

    cfg = config_for_scale(
        "tiny", envs=("hopper", "walker2d"), qualities=("medium",), algos=("tgw", "bc"),
        settings=("multi", "single"), seeds=2,
    )  # fmt: skip
    scores = {("tgw", "hopper"): 40.0, ("tgw", "walker2d"): 60.0, ("bc", "hopper"): 80.0}
    long = [
        {"setting": setting, "quality": "medium", "env": env, "algo": algo, "seed": s,
         "last_k": value - (10.0 if setting == "single" else 0.0)}
        for (algo, env), value in scores.items()
        for setting in ("multi", "single")
        for s in range(2)
    ]  # fmt: skip
    agg = aggregate(long, "last_k")
    average = markdown_table(cfg, agg, "multi", "last_k")[-1]
    assert (
        average == "| **average** (1 of 2 tasks: those every algorithm has finished) | | "
        "40.0 (TGW paper 88.4) | 80.0 |"  # the paper's mean over the same task
    )
    claims = paper_claims(cfg, agg)
    beats, multi = claims["tgw_beats_every_baseline"], claims["tgw_multi_beats_single"]
    assert beats["averages"] == {"tgw": 40.0, "bc": 80.0} and beats["above_tgw"] == ["bc"]
    assert beats["holds"] is None and (beats["tasks"], beats["of"]) == (1, 2)
    assert (multi["multi"], multi["single"], multi["holds"]) == (50.0, 40.0, True)
    long += [{**row, "env": "walker2d", "last_k": 10.0} for row in long
             if row["algo"] == "bc" and row["setting"] == "multi"]  # fmt: skip
    beats = paper_claims(cfg, aggregate(long, "last_k"))["tgw_beats_every_baseline"]
    assert beats["averages"] == {"tgw": 50.0, "bc": 45.0} and beats["holds"] is True


def test_a_failing_cell_is_recorded_and_the_table_goes_on(policies, tmp_path, monkeypatch):
    """One cell that raises does not stop the others: the table is written from those, the
    command ends in one line naming the failure and its error.json, and a rerun retries only
    that cell (its error.json goes once it finishes)."""
    import genworld.train.table as table_module

    train = table_module._train_cell

    def flaky(cfg, cell, out, show_progress=False, **kwargs):
        if cell.seed == 1:
            raise RuntimeError("loss is NaN at update 7\nsecond line")
        return train(cfg, cell, out, show_progress, **kwargs)

    monkeypatch.setattr(table_module, "_train_cell", flaky)
    out = tmp_path / "table"
    argv = ["table", "--envs", "hopper", "--qualities", "medium", "--algos", "bc"]
    argv += ["--setting", "single", "--seeds", "2", "--scale", "tiny", "--out", str(out)]
    with pytest.raises(GenworldError) as err:
        api.table(api.table_config("tiny", envs=("hopper",), qualities=("medium",),
                                   algos=("bc",), settings=("single",), seeds=2), out,
                  show_progress=False)  # fmt: skip
    message = str(err.value)
    assert "1 of 2 cells failed" in message and "RuntimeError: loss is NaN at update 7)" in message
    failure = out / "cells/medium/single-hopper/bc/seed1/error.json"
    assert json.loads(failure.read_text())["error"] == "RuntimeError: loss is NaN at update 7"
    assert json.loads((out / "table.json").read_text())["cells"] == 1  # the finished one
    monkeypatch.setattr(table_module, "_train_cell", train)
    assert main([*argv, "--quiet"]) == 0
    assert not failure.exists() and (failure.parent / "result.json").exists()


def test_a_table_reuses_another_tables_cells_of_the_same_computation(
    policies, tmp_path, monkeypatch
):
    """``--reuse`` copies a finished cell of another table made with the same scale, budget,
    device, precision and data, with its own provenance, instead of training it; the report
    counts it. A cell of another budget is trained, and a folder that is no table is refused."""
    import genworld.train.table as table_module

    kw = dict(envs=("hopper",), qualities=("medium",), algos=("bc",), settings=("single",), seeds=1)
    first = tmp_path / "first"
    api.table(api.table_config("tiny", **kw), first, show_progress=False)

    def trained(cfg, cell, out, show_progress=False, **kwargs):
        raise RuntimeError("trained, not reused")

    monkeypatch.setattr(table_module, "_train_cell", trained)
    second = tmp_path / "second"
    cfg = api.table_config("tiny", reuse=(str(first),), **kw)
    summary = api.table(cfg, second, show_progress=False).summary
    cell = "cells/medium/single-hopper/bc/seed0"
    original = json.loads((first / cell / "result.json").read_text())
    copied = json.loads((second / cell / "result.json").read_text())
    assert copied == {**original, "reused_from": str(first)}
    assert (second / cell / "policy" / "eval.jsonl").exists()
    assert summary["reused"] == {str(first): 1}
    assert "Reused cells (`--reuse`): 1 from" in (second / "table.md").read_text()
    other = api.table_config("tiny", reuse=(str(first),), budget={"updates": 30}, **kw)
    with pytest.raises(GenworldError, match="1 of 1 cells failed.*trained, not reused"):
        api.table(other, tmp_path / "third", show_progress=False)
    with pytest.raises(GenworldError, match="--reuse .*: not a genworld table folder"):
        api.table_config("tiny", reuse=(str(tmp_path),), **kw)


def test_reuse_takes_a_cell_only_where_its_agent_resolves_to_the_same_numerics(
    policies, tmp_path, monkeypatch
):
    """A CQL cell records the precision its ``ood_precision`` resolved to; ``--reuse`` takes it
    only where this table's CQL resolves to the same one (a cell made with ``auto`` on a CPU with
    bfloat16 units is trained again on one without)."""
    import genworld.train.table as table_module

    kw = dict(
        envs=("hopper",), qualities=("medium",), algos=("cql",), settings=("single",), seeds=1
    )
    first = tmp_path / "first"
    api.table(api.table_config("tiny", **kw), first, show_progress=False)
    found = first / "cells/medium/single-hopper/cql/seed0/result.json"
    assert json.loads(found.read_text())["numerics"] == {"ood_precision": "float32"}

    def trained(cfg, cell, out, show_progress=False, **kwargs):
        raise RuntimeError("trained, not reused")

    monkeypatch.setattr(table_module, "_train_cell", trained)
    cfg = api.table_config("tiny", reuse=(str(first),), **kw)
    assert api.table(cfg, tmp_path / "same", show_progress=False).summary["reused"] == {
        str(first): 1
    }
    result = json.loads(found.read_text())
    atomic_write_json(found, {**result, "numerics": {"ood_precision": "bfloat16"}})
    with pytest.raises(GenworldError, match="1 of 1 cells failed.*trained, not reused"):
        api.table(cfg, tmp_path / "other", show_progress=False)


def test_a_report_over_both_halves_shows_each_setting_its_own_algorithms():
    """Table 1's single-env half runs fewer algorithms than its multi-env half: the joined
    report's single-env table, IQM and planned cells cover those, claim (a) still compares TGW
    with every multi-env baseline, and both TGW claims give seed-paired CIs."""
    from genworld.reports.table import (
        aggregate,
        claim_lines,
        markdown_table,
        paper_claims,
        planned_cells,
        rows,
    )

    cfg = config_for_scale(
        "tiny", envs=("hopper", "walker2d"), qualities=("medium",), algos=("tgw", "bc", "iql"),
        settings=("multi", "single"), seeds=2,
    )  # fmt: skip
    cells = [("multi", a) for a in ("tgw", "bc", "iql")] + [("single", a) for a in ("tgw", "iql")]
    results = []
    for setting, algo in cells:
        groups = [("hopper", "walker2d")] if setting == "multi" else [("hopper",), ("walker2d",)]
        for envs in groups:
            for seed in range(2):
                score = {"tgw": 50.0, "bc": 40.0, "iql": 45.0}[algo] + seed
                score -= 5.0 if setting == "single" else 0.0
                summary = {e: {"last_k_mean": score, "best": score} for e in envs}
                results.append({"setting": setting, "quality": "medium", "envs": envs,
                                "algo": algo, "seed": seed, "summary": summary, "seconds": 1.0})  # fmt: skip
    long = rows(results)
    agg = aggregate(long, "last_k")
    single = markdown_table(cfg, agg, "single", "last_k")
    assert single[0] == "| quality | env | tgw | iql |"
    assert single[-1].startswith("| **average** | | 45.5") and "—" not in single[-1]
    assert planned_cells(cfg, results) == {"tgw": 2 + 4, "bc": 2, "iql": 2 + 4}
    claims = paper_claims(cfg, agg, long)
    beats, multi = claims["tgw_beats_every_baseline"], claims["tgw_multi_beats_single"]
    assert sorted(beats["averages"]) == ["bc", "iql", "tgw"] and beats["holds"] is True
    assert beats["tgw_minus_ci"] == {"bc": [10.0, 10.0], "iql": [5.0, 5.0]}
    assert beats["inside_noise"] == []
    assert multi["holds"] is True and multi["difference_ci"] == [5.0, 5.0]
    assert multi["inside_noise"] is False
    text = "\n".join(claim_lines(claims))
    assert "TGW minus each, paired 95% CI: bc [+10.0, +10.0], iql [+5.0, +5.0]" in text
    assert "paired difference 95% CI [+5.0, +5.0]" in text


def test_each_setting_prints_the_papers_number_of_that_setting():
    from genworld.reports.table import markdown_table

    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("tgw",))
    for setting, paper in (("multi", "(TGW paper 88.4)"), ("single", "(TGW paper 97.5)")):
        agg = {(setting, "medium", "hopper", "tgw"): {"mean": 50.0, "std": 1.0, "seeds": 1}}
        assert paper in "\n".join(markdown_table(cfg, agg, setting, "last_k"))
    # single-env cells also show the CMT paper's Table 1, each number named by its paper
    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("medium",), algos=("cql", "dt"))
    agg = {
        ("single", "medium", "hopper", a): {"mean": 5.0, "std": 0.0, "seeds": 1} for a in cfg.algos
    }
    text = "\n".join(markdown_table(cfg, agg, "single", "last_k"))
    assert "(TGW paper 86.6, CMT paper 58.5)" in text and "(CMT paper 62.0)" in text


def test_the_budget_lines_name_each_multi_env_batch_rule_and_warn_when_cells_mix_them():
    from genworld.reports.table import batch_rule_text

    def cell(rule):
        learner = {"policy": "per_env"} if rule is None else {"batch_per_env": rule}
        return {"algo": "tgw", "setting": "multi", "policy_learner": learner}

    assert "full batch" in batch_rule_text("tgw", [cell(True)])
    assert "share one batch" in batch_rule_text("tgw", [cell(None)])  # recorded before the rule
    assert "mix two batch rules" in batch_rule_text("tgw", [cell(True), cell(False)])
    assert batch_rule_text("bc", [cell(True)]) == ""


def test_the_cmt_papers_claims_are_judged_on_complete_seeds_only():
    from genworld.reports.table import aggregate, claim_lines, paper_claims

    cfg = config_for_scale(
        "tiny", envs=("hopper", "walker2d"), qualities=("medium",),
        algos=("cmt", "cmt-no-pt", "dt"), settings=("single",), seeds=2,
    )  # fmt: skip
    scores = {"cmt": 60.0, "cmt-no-pt": 50.0, "dt": 70.0}
    long = [
        {"setting": "single", "quality": "medium", "env": env, "algo": algo, "seed": s,
         "last_k": value}
        for algo, value in scores.items() for env in ("hopper", "walker2d") for s in range(2)
        if not (algo == "dt" and env == "walker2d" and s == 1)  # one seed still running
    ]  # fmt: skip
    claims = paper_claims(cfg, aggregate(long, "last_k"))
    assert claims["cmt_beats_untuned"]["holds"] is True
    assert claims["cmt_beats_dt"]["holds"] is None and claims["cmt_beats_dt"]["tasks"] == 1
    lines = "\n".join(claim_lines(claims))
    assert "not judged yet" in lines and "cmt 60.0, dt 70.0" in lines
    long.append({**long[-1], "algo": "dt", "env": "walker2d", "seed": 1, "last_k": 70.0})
    assert paper_claims(cfg, aggregate(long, "last_k"))["cmt_beats_dt"]["holds"] is False


def test_the_cmt_claims_judge_their_own_qualities_and_a_tie_does_not_beat_the_untuned_model():
    from genworld.reports.table import aggregate, paper_claims

    cfg = config_for_scale(
        "tiny", envs=("hopper",), qualities=("medium", "medium-replay"),
        algos=("cmt", "cmt-no-pt", "dt"), settings=("single",), seeds=1,
    )  # fmt: skip
    scores = {  # quality → algo → score: CMT ties its untuned model on medium, trails DT on replay
        "medium": {"cmt": 50.0, "cmt-no-pt": 50.0, "dt": 40.0},
        "medium-replay": {"cmt": 10.0, "cmt-no-pt": 5.0, "dt": 90.0},
    }
    long = [
        {"setting": "single", "quality": q, "env": "hopper", "algo": a, "seed": 0, "last_k": v}
        for q, row in scores.items() for a, v in row.items()
    ]  # fmt: skip
    claims = paper_claims(cfg, aggregate(long, "last_k"))
    assert claims["cmt_beats_dt"]["holds"] is True  # medium only: replay's 10 vs 90 is not judged
    assert claims["cmt_beats_dt"]["of"] == 1
    untuned = claims["cmt_beats_untuned"]
    assert untuned["holds"] is False and untuned["averages"] == {"cmt": 50.0, "cmt-no-pt": 50.0}
    with_seeds = paper_claims(cfg, aggregate(long, "last_k"), long)["cmt_beats_untuned"]
    assert with_seeds["difference_ci"] == [0.0, 0.0] and with_seeds["inside_noise"] is True


@pytest.mark.integration  # three tiny sequence-model cells: CI runs it
def test_cmt_acceptance_command_writes_its_table_budgets_and_claims(policies, tmp_path):
    """`genworld table --envs hopper --qualities medium --algos cmt,cmt-no-pt,dt --seeds 1
    --scale tiny`: its table, CMT's two stages in the budgets, and the CMT paper's claims."""
    out = tmp_path / "cmt"
    argv = ["table", "--envs", "hopper", "--qualities", "medium", "--algos", "cmt,cmt-no-pt,dt"]
    argv += ["--setting", "single", "--seeds", "1", "--scale", "tiny", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    summary = json.loads((out / "table.json").read_text())
    assert set(summary["claims"]) == {"cmt_beats_dt", "cmt_beats_untuned"}
    assert all(c["holds"] is not None for c in summary["claims"].values())  # every seed is done
    [tuning] = summary["prompt_tuning"]  # the tuned cell's log reached the report
    assert tuning["algo"] == "cmt" and {"prompt_effect", "policy_change"} <= set(tuning)
    md = (out / "table.md").read_text()
    assert "- `cmt`: 5 pretraining updates, then prompt tuning on" in md
    assert "- `cmt-no-pt`: 5 pretraining updates, no prompt tuning" in md
    assert "(CMT paper 68.9)" in md and (out / "profile_single.png").exists()


def test_the_average_row_gives_each_papers_mean_over_the_same_tasks():
    """Over its 12 datasets the CMT paper averages 72.6 / 58.4 / 70.2 / 79.0 / 84.1 / 39.5."""
    from genworld.eval.paper import CMT_ALGOS, CMT_ENVS
    from genworld.reports.table import paper_average

    tasks = [(q, e) for q in ("medium", "medium-replay", "medium-expert") for e in CMT_ENVS]
    means = [paper_average(a, tasks, "single") for a in CMT_ALGOS]
    papers = ["72.6", "58.4", "70.2", "79.0", "84.1", "39.5"]
    assert means == [f" (CMT paper {v})" for v in papers]
    assert paper_average("tgw", tasks, "single") == ""  # the TGW paper has no ant
    assert paper_average("cmt", [], "single") == ""


def test_cmt_cells_bring_their_last_relabelling_metrics_to_the_report(tmp_path):
    """A CMT cell's log (in a run folder, or beside its result in a record) gives the table
    its prompt effect and planner change, and the tuned score less the untuned model's."""
    from genworld.reports.table import aggregate, prompt_tuning, prompt_tuning_lines, rows
    from genworld.train.table import with_relabelling

    run_cell = tmp_path / "run" / "policy"
    run_cell.mkdir(parents=True)
    logs = [{"step": 1}, {"step": 2, "relabel/prompt_effect": 0.01, "relabel/policy_change": 0.2}]
    logs.append({"step": 3})  # an evaluation without the metrics: the last that has them counts
    (run_cell / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logs))
    record_cell = tmp_path / "record"
    record_cell.mkdir()
    (record_cell / "eval.jsonl").write_text(
        json.dumps({"relabel/prompt_effect": 0.03, "relabel/policy_change": 0.4}) + "\n"
    )
    base = {"setting": "single", "quality": "medium", "group": "hopper", "envs": ["hopper"]}
    summary = {"hopper": {"last_k_mean": 40.0, "best": 50.0}}
    base["seconds"] = 1.0
    results = [
        with_relabelling({**base, "algo": "cmt", "seed": 0, "summary": summary}, tmp_path / "run"),
        with_relabelling({**base, "algo": "cmt", "seed": 1, "summary": summary}, record_cell),
        with_relabelling(
            {**base, "algo": "cmt-no-pt", "seed": 0, "summary": summary}, tmp_path / "none"
        ),
    ]
    assert results[0]["relabel"] == {"prompt_effect": 0.01, "policy_change": 0.2}
    assert "relabel" not in results[2]
    [row] = prompt_tuning(results, aggregate(rows(results), "last_k"))
    assert row["algo"] == "cmt" and row["seeds"] == 2 and row["tuned_minus_untuned"] == 0.0
    assert row["prompt_effect"] == pytest.approx(0.02) and row["policy_change"] == pytest.approx(
        0.3
    )
    text = "\n".join(prompt_tuning_lines([row]))
    assert "| single | medium | hopper | cmt | 2 | 0.0200 | — | — | 0.3000 | +0.0 |" in text
    assert prompt_tuning_lines([]) == []


class _StubRay:
    """The few Ray calls the table makes, run in-process; ``wait`` hands tasks back last
    first, as a cluster may finish them. ``init`` records its arguments."""

    def __init__(self):
        self.inits: list = []
        self.started = False

    def is_initialized(self):
        return self.started

    def init(self, **kwargs):
        self.inits.append(kwargs)
        self.started = True

    def remote(self, **_options):
        def wrap(fn):
            class Task:
                @staticmethod
                def remote(*args):
                    return _StubRef(fn, args)

            return Task

        return wrap

    def wait(self, pending, num_returns=1):
        return pending[-num_returns:], pending[:-num_returns]

    def get(self, ref):
        return ref.fn(*ref.args)


class _StubRef:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args


def test_ray_cells_come_back_in_the_tables_order_and_ray_address_joins_a_cluster(
    policies, tmp_path, monkeypatch
):
    import sys

    from genworld.train import table

    stub = _StubRay()
    monkeypatch.setitem(sys.modules, "ray", stub)
    monkeypatch.setattr(table, "_ray_available", lambda: True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = config_for_scale(
        "tiny", envs=("hopper",), qualities=("medium",), algos=("bc",), seeds=3,
        workers=2, executor="ray",
    )  # fmt: skip
    results = table.run_cells(cfg, tmp_path / "t", show_progress=False)
    assert [r["seed"] for r in results] == [0, 1, 2]  # finished 2, 1, 0
    assert stub.inits == [{"num_cpus": 2, "include_dashboard": False}]
    stub.started = False
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # an existing cluster: its CPUs, not --workers
    table.run_cells(replace(cfg, seeds=4), tmp_path / "t", show_progress=False)
    assert stub.inits[-1] == {}
