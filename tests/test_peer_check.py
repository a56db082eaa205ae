"""benchmarks/peer_check.py: the genworld side and the report run without d3rlpy; the d3rlpy side
runs in the peers venv (``make peers``, then ``.venv-peers/bin/python -m pytest
tests/test_peer_check.py``) and is skipped, saying so, elsewhere."""

import json

import pytest
from benchmarks.peer_check import (
    BUDGETS,
    NO_D3RLPY,
    parse_settings,
    run,
    train_genworld,
    write_report,
)


@pytest.mark.integration  # builds a dataset and trains two cells
def test_genworld_cells_resume_and_report(tmp_path):
    out = tmp_path / "pc"
    run(["halfcheetah-medium"], ["iql"], 1, "tiny", out, libraries=("genworld",))
    cell = out / "cells" / "genworld__iql__halfcheetah-medium__s0.json"
    result = json.loads(cell.read_text())
    budget = BUDGETS["tiny"]
    assert [r["step"] for r in result["records"]] == list(
        range(budget.eval_every, budget.updates + 1, budget.eval_every)
    )
    assert result["updates_per_s"] > 0
    assert ("halfcheetah-medium", "iql", "genworld") in _reported(out)
    stamp = cell.stat().st_mtime_ns
    run(["halfcheetah-medium"], ["iql"], 1, "tiny", out, libraries=("genworld",))
    assert cell.stat().st_mtime_ns == stamp  # done cells are not rerun
    # a config variant: its own cells and report row, next to the defaults' row
    variant = {"expectile": 0.9}
    run(["halfcheetah-medium"], ["iql"], 1, "tiny", out, ("genworld",), variant)
    other = json.loads(
        (out / "cells" / "genworld+expectile=0.9__iql__halfcheetah-medium__s0.json").read_text()
    )
    assert other["library"] == "genworld+expectile=0.9" and cell.stat().st_mtime_ns == stamp
    reported = _reported(out)
    assert ("halfcheetah-medium", "iql", "genworld+expectile=0.9") in reported
    assert ("halfcheetah-medium", "iql", "genworld") in reported
    assert parse_settings(["target_action=mean", "alpha=2.5"]) == {
        "target_action": "mean",
        "alpha": 2.5,
    }


def _reported(out) -> set[tuple[str, str, str]]:
    """(dataset, algo, library) of every cell in peer_check.json (a report row per genworld
    library and variant)."""
    results = json.loads((out / "peer_check.json").read_text())["results"]
    return {(r["dataset"], r["algo"], r["library"]) for r in results}


def test_within_spread_compares_means_to_the_larger_std(tmp_path):
    def cell(lib, score, speed):
        return {
            "library": lib,
            "algo": "cql",
            "dataset": "d",
            "last_k": score,
            "updates_per_s": speed,
        }

    results = [
        cell("genworld", 10, 20),
        cell("genworld", 14, 20),
        cell("d3rlpy", 13, 10),
        cell("d3rlpy", 13, 10),
    ]
    row = write_report(results, BUDGETS["tiny"], "tiny", tmp_path).splitlines()[-1]
    assert "12.0 ± 2.0 (n=2)" in row and "| yes |" in row and "2.00x" in row
    # Welch: se = sqrt(8/2 + 0) = 2, dof = 1, t(0.975, 1) = 12.706 -> -1.0 ± 25.4
    assert "| -1.0 [-26.4, +24.4] |" in row
    results[2]["last_k"] = results[3]["last_k"] = 20
    row = write_report(results, BUDGETS["tiny"], "tiny", tmp_path).splitlines()[-1]
    assert "| no: genworld lower |" in row
    results[2]["last_k"] = results[3]["last_k"] = 5
    row = write_report(results, BUDGETS["tiny"], "tiny", tmp_path).splitlines()[-1]
    assert "| no: genworld higher |" in row and "| +7.0 [" in row
    assert "| — / — |" in row  # no evaluation records: no last-5 figure
    for r, scores in zip(
        results, ([0, 10, 10, 10, 10, 10], [20] * 6, [1, 2, 3, 4, 5], [5] * 2), strict=True
    ):
        r["records"] = [{"score": s} for s in scores]
    row = write_report(results, BUDGETS["tiny"], "tiny", tmp_path).splitlines()[-1]
    assert "| 15.0 / 4.0 |" in row  # (10 + 20) / 2 and (3 + 5) / 2: the last 5 of each seed


def test_d3rlpy_side_trains_and_evaluates_the_same_way():
    pytest.importorskip("d3rlpy", reason=NO_D3RLPY)
    from benchmarks.peer_check import load, train_d3rlpy

    budget = BUDGETS["tiny"]
    dataset = load("halfcheetah-medium", budget)
    theirs = train_d3rlpy("iql", dataset, budget, 0)
    ours = train_genworld("iql", dataset, budget, 0)
    assert [r["step"] for r in theirs["records"]] == [r["step"] for r in ours["records"]]
    assert all(abs(r["score"]) < 50 for r in theirs["records"])  # 20 updates: near random


@pytest.mark.integration
@pytest.mark.parametrize("library", ["genworld", "d3rlpy"])
def test_a_killed_cell_resumes_from_its_last_evaluation_with_the_same_numbers(
    library, tmp_path, monkeypatch
):
    import benchmarks.peer_check as pc

    if library == "d3rlpy":
        pytest.importorskip("d3rlpy", reason=NO_D3RLPY)
    budget = BUDGETS["tiny"]
    dataset = pc.load("hopper-medium", budget)
    train = pc.train_genworld if library == "genworld" else pc.train_d3rlpy

    def cell(folder):
        if library == "genworld":
            return train("cql", dataset, budget, 0, None, folder)
        return train("cql", dataset, budget, 0, folder)

    whole = cell(None)
    evaluate, calls = pc._evaluate, []

    def dies_at_the_second_evaluation(*args):
        calls.append(args[-1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args)

    monkeypatch.setattr(pc, "_evaluate", dies_at_the_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        cell(tmp_path / "partial")
    assert (tmp_path / "partial" / f"step_{budget.eval_every:09d}").exists()
    monkeypatch.setattr(pc, "_evaluate", evaluate)
    resumed = cell(tmp_path / "partial")
    assert [r["step"] for r in resumed["records"]] == [r["step"] for r in whole["records"]]
    # the same updates after the resume point (states and RNGs restored): the same scores
    assert [r["score"] for r in resumed["records"]] == [r["score"] for r in whole["records"]]
