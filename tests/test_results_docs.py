"""The docs' numbers are the records' numbers: docs/RESULTS.md's headline is `genworld results
--markdown` rendered from docs/results/, every README number that has a record (the bench
record, the shipped policy cards) equals it, each record's report agrees with its cells, and
`scripts/archive_records.py` keeps what the headline reads (provenance included)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from genworld import api
from genworld.cli import main
from genworld.reports.results import is_ablations_report, load_headlines, markdown
from genworld.reports.table import rows as table_rows
from genworld.train.loop import read_eval

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results"
RESULTS = ROOT / "docs" / "RESULTS.md"
README = ROOT / "README.md"
POLICIES = ROOT / "src" / "genworld" / "assets" / "policies"
BEGIN = "<!-- genworld results: begin"
END = "<!-- genworld results: end -->"


def flat(text: str) -> str:
    """Markdown prose with its line breaks as spaces (claims wrap anywhere)."""
    return " ".join(text.split())


def headline_block(text: str) -> str:
    start = text.index(BEGIN)
    start = text.index("\n", start) + 1
    return text[start : text.index(END)]


# ---------------------------------------------------------------- the headline
def test_results_page_headline_is_the_rendered_records(capsys):
    shown = headline_block(RESULTS.read_text())
    rendered = api.results().summary["markdown"]
    assert shown == rendered, (
        "docs/RESULTS.md's headline differs from the records: paste `genworld results "
        "--markdown` between its markers (never edit the numbers by hand)"
    )
    assert main(["results", "--markdown"]) == 0
    assert capsys.readouterr().out == rendered


def test_every_record_folder_has_a_row_that_links_to_it():
    folders = sorted(d.name for d in RECORDS.iterdir() if d.is_dir())
    rows = load_headlines(RECORDS)
    assert sorted(h.folder for h in rows) == folders
    table = headline_block(RESULTS.read_text())
    for folder in folders:
        assert f"](results/{folder}/)" in table


def test_record_json_holds_only_known_fields():
    for meta in RECORDS.glob("*/record.json"):
        assert set(json.loads(meta.read_text())) <= {"title", "caveat", "code", "order", "compare"}


def test_each_records_report_agrees_with_its_cells():
    """A report rebuilt from other cells than the record's (stale) would put numbers in the
    docs that the cells do not give."""
    for folder in sorted(d for d in RECORDS.iterdir() if d.is_dir()):
        cells = [json.loads(f.read_text()) for f in folder.glob("cells/**/result.json")]
        if (folder / "table.json").exists():
            report = json.loads((folder / "table.json").read_text())
            key = lambda r: (r["setting"], r["quality"], r["env"], r["algo"], r["seed"])  # noqa: E731
            assert sorted(report["rows"], key=key) == sorted(table_rows(cells), key=key), folder
        if (folder / "unseen.json").exists():
            report = json.loads((folder / "unseen.json").read_text())
            for method, groups in report["averages"].items():
                for group, tasks in (("seen", report["train"]), ("unseen", report["test"])):
                    if not tasks:  # a family every task of trains (Ant-Fwd-Back) has no unseen
                        assert group not in groups, (folder, method)
                        continue
                    means = [
                        _mean(
                            [c["last_k"] for c in cells if (c["method"], c["task"]) == (method, t)]
                        )
                        for t in tasks
                    ]
                    assert groups[group] == pytest.approx(_mean(means), abs=1e-9), (folder, method)
        report = folder / "report.json"
        if report.exists() and is_ablations_report(report := json.loads(report.read_text())):
            k = report["config"]["last_k"]  # agnostic-ablations: each run's last-k evaluations
            for variant, envs in report["per_seed"].items():
                for env, scores in envs.items():
                    runs = [
                        *folder.glob(f"{variant}/seed*"),
                        *folder.glob(f"{variant}/{env}/seed*"),
                    ]
                    key = f"eval/{env}/normalized_score"
                    last_k = [
                        _mean([r[key] for r in read_eval(run) if key in r][-k:])
                        for run in sorted(runs, key=lambda run: int(run.name[4:]))
                    ]
                    assert scores == pytest.approx(last_k, abs=1e-9), (folder, variant, env)


def _mean(values):
    return sum(values) / len(values)


# ---------------------------------------------------------------- README and RESULTS numbers
def _bench() -> dict:
    figures: dict = {}
    for f in sorted((RECORDS / "bench-2026-12-04").glob("*.json")):
        for name, values in json.loads(f.read_text()).items():
            if isinstance(values, dict) and name != "provenance":
                figures[name] = figures.get(name, {}) | values
    return figures


def _medium_speedups() -> dict[str, float]:
    """`--matmul-precision medium`'s updates/s over the default's, per algorithm (same run)."""
    algos = _bench()["algos"]
    return {
        a: algos[a]["genworld_medium_updates_per_s"] / algos[a]["genworld_updates_per_s"]
        for a in ALGOS
    }


ALGOS = ("bc", "cql", "iql", "td3bc")


def _card(name: str) -> str:
    return f"{json.loads((POLICIES / f'{name}.json').read_text())['eval_normalized']:.1f}"


def _quick_start(record: str = "quick-start") -> dict[str, list[float]]:
    """Each method's per-seed score (the mean over envs of the last-k mean) in the record."""
    paths = sorted(RECORDS.glob(f"{record}/seed*/report.json"))
    reports = [json.loads(f.read_text()) for f in paths]
    return {
        m: [r["results"]["medium/multi"][m]["summary"]["_mean"]["last_k_mean"] for r in reports]
        for m in ("tgw", "bc")
    }


def readme_claims() -> list[tuple[str, tuple[str, ...]]]:
    """(pattern in the README's flattened text, the record's numbers its groups must equal)."""
    qs = {m: (f"{np.mean(v):.1f}", f"{np.std(v):.1f}") for m, v in _quick_start().items()}
    b = _bench()
    algos, build, wm, im = b["algos"], b["data_build"], b["world_model"], b["imagination"]
    medium = _medium_speedups()
    minutes = f"{b['end_to_end']['quick_start_seconds'] / 60:.1f}"
    claims = [
        (rf"`{n}` ([\d.]+) normalized" if n == "ant-expert" else rf"`{n}` ([\d.]+)", (_card(n),))
        for n in ("halfcheetah-expert", "hopper-expert", "walker2d-expert", "ant-expert")
    ]
    return claims + [
        (r"it scores TGW ([\d.]+) ± ([\d.]+) against BC ([\d.]+) ± ([\d.]+)", qs["tgw"] + qs["bc"]),
        (r"([\d.]+)k steps/s for halfcheetah here", (f"{build['build_end_to_end_steps_per_s'] / 1000:.1f}",)),
        (r"\(([\d.]+)x raw random stepping, ([\d.]+) min per 1M steps; one process: ([\d.]+)x",
         (f"{build['ratio']:.2f}", f"{build['minutes_per_1M_steps']:.1f}", f"{build['ratio_1_process']:.2f}")),
        (r"\*\*([\d.]+)× \(BC\), ([\d.]+)× \(CQL\), ([\d.]+)× \(IQL\) and ([\d.]+)× \(TD3\+BC\)\*\*",
         tuple(f"{algos[a]['ratio']:.2f}" for a in ("bc", "cql", "iql", "td3bc"))),
        (r"[Tt]he quick start takes ([\d.]+) min", (minutes,)),
        (r"a dataset builds at ([\d.]+)× raw random", (f"{build['ratio']:.2f}",)),
        (r"world-model training runs at ([\d.]+)× the fp32 matmul peak",
         (f"{wm['configs']['paper-default']['fraction_of_matmul_peak']:.2f}",)),
        (r"imagination at ([\d.]+)× \(paper-default\) and ([\d.]+)× \(mini\)",
         (f"{im['paper-default']['ratio']:.2f}", f"{im['mini']['ratio']:.2f}")),
        (r"measured ([\d.]+)× \(BC\) to ([\d.]+)× \(CQL, IQL, TD3\+BC\)",
         (f"{medium['bc']:.2f}", *{f"{medium[a]:.2f}" for a in ("cql", "iql", "td3bc")})),
    ]  # fmt: skip


def results_claims() -> list[tuple[str, tuple[str, ...]]]:
    """Numbers the recorded studies' caveats in docs/RESULTS.md quote from their records."""

    def iqm(study: str, group: str, method: str) -> tuple[str, ...]:
        v = json.loads((RECORDS / study / "unseen.json").read_text())["iqm"][group][method]
        return tuple(f"{v[k]:.1f}" for k in ("iqm", "ci_low", "ci_high"))

    wm = RECORDS / "world-model-accuracy"
    errors = json.loads((wm / "k_step_errors.json").read_text())
    penalty = json.loads((wm / "penalty_calibration.json").read_text())
    envs = ("halfcheetah", "walker2d", "hopper")
    h1 = [errors["mean-predictor"][e]["obs_h1"] / errors["tgw:tgw"][e]["obs_h1"] for e in envs]
    h5 = [errors["tgw:tgw"][e]["obs_h5"] / errors[f"mlp:mlp-{e}"][e]["obs_h5"] for e in envs]
    spread = [
        penalty["random"][e]["uncertainty"] / penalty["held-out"][e]["uncertainty"] for e in envs
    ]
    refs = json.loads((RECORDS / "unseen-cheetah-vel" / "references.json").read_text())
    r35, r39 = refs["cheetah-vel-35"], refs["cheetah-vel-39"]
    medium = _medium_speedups()
    qs = _quick_start()
    bc_higher = sum(b > t for t, b in zip(qs["tgw"], qs["bc"], strict=True))
    off = _quick_start("quick-start-obs-bounds-none")["tgw"]
    off_higher = sum(o > t for o, t in zip(off, qs["tgw"], strict=True))
    stats = tuple(f"{f(v):.1f}" for v in (off, qs["tgw"]) for f in (np.mean, np.std))
    return [
        (r"TGW ([\d.]+) ± ([\d.]+) here against ([\d.]+) ± ([\d.]+) with the bounds", stats),
        (r"higher on each of the (\d) seeds", (str(off_higher),)),
        (r"BC is higher on (\d) of (\d) seeds", (str(bc_higher), str(len(qs["bc"])))),
        (r"TGW-newR ([\d.]+) \[([\d.]+), ([\d.]+)\], Prompt-DT-finetune ([\d.]+) \[([\d.]+), ([\d.]+)\]",
         iqm("unseen-cheetah-vel", "unseen", "tgw-newr") + iqm("unseen-cheetah-vel", "unseen", "prompt-dt-finetune")),
        (r"disjoint IQM CIs \(([\d.]+) \[([\d.]+), ([\d.]+)\] vs ([\d.]+) \[([\d.]+), ([\d.]+)\]\)",
         iqm("unseen-ant-dir", "unseen", "tgw-newr") + iqm("unseen-ant-dir", "unseen", "prompt-dt-finetune")),
        (r"expert episodes \(IQM ([\d.]+) \[([\d.]+), ([\d.]+)\]\)", iqm("unseen-ant-dir", "unseen", "bc")),
        (r"experts return −(\d+) / −(\d+) against the random policy's −(\d+) / −(\d+)",
         tuple(f"{-v:.0f}" for v in (r35[1], r39[1], r35[0], r39[0]))),
        (r"one step \((\d+)× on halfcheetah, (\d+)× on walker2d, (\d+)× on hopper\)",
         tuple(f"{v:.0f}" for v in h1)),
        (r"its 5-step error is (\d+)–(\d+)× a per-env MLP", (f"{min(h5):.0f}", f"{max(h5):.0f}")),
        (r"Its penalty is ([\d.]+)–([\d.]+)× higher", (f"{min(spread):.1f}", f"{max(spread):.1f}")),
        (r"this record: ([\d.]+)× \(BC\) to ([\d.]+)× \(CQL, IQL, TD3\+BC\)",
         (f"{medium['bc']:.2f}", *{f"{medium[a]:.2f}" for a in ("cql", "iql", "td3bc")})),
    ]  # fmt: skip


def mismatches(text: str, claims) -> list[str]:
    """Each claim the text no longer states, or states with other numbers than its record."""
    text, found = flat(text), []
    for pattern, expected in claims:
        stated = re.findall(pattern, text)
        if not stated:
            found.append(f"no longer stated: {pattern!r} (expected {expected})")
        for numbers in stated:
            numbers = (numbers,) if isinstance(numbers, str) else numbers
            if tuple(numbers) != tuple(expected):
                found.append(f"{pattern!r}: the docs say {numbers}, the record {expected}")
    return found


def test_readme_numbers_are_their_records():
    assert mismatches(README.read_text(), readme_claims()) == []


def test_results_caveats_quote_their_records():
    assert mismatches(RESULTS.read_text(), results_claims()) == []


def test_a_number_edited_by_hand_fails():
    text = README.read_text()
    hopper = _card("hopper-expert")
    edited = text.replace(f"`hopper-expert` {hopper}", "`hopper-expert` 93.3")
    assert edited != text and any("hopper-expert" in m for m in mismatches(edited, readme_claims()))
    bench = text.replace("**2.96× (BC)", "**3.10× (BC)")
    assert bench != text and mismatches(bench, readme_claims())


def test_bench_targets_read_as_the_record_says():
    b = _bench()
    text = flat(RESULTS.read_text())
    assert all(b["algos"][a]["ratio"] >= 2.0 for a in ALGOS)
    assert "d3rlpy 2.8.1's | yes, all four |" in text
    assert b["world_model"]["configs"]["paper-default"]["fraction_of_matmul_peak"] < 0.5
    assert "matmul peak | no at 2 threads" in text
    assert b["imagination"]["mini"]["ratio"] < 100
    assert b["data_build"]["ratio"] >= 0.6 > b["data_build"]["ratio_1_process"]
    assert "yes with 2 processes (the default for 200k+ steps), not with 1" in text
    assert b["end_to_end"]["quick_start_seconds"] <= 15 * 60


# ---------------------------------------------------------------- links and words
def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


def test_links_to_the_results_and_notes_point_at_headings():
    notes = ROOT / "docs" / "notes" / "history.md"
    targets = {
        "docs/RESULTS.md": RESULTS,
        "RESULTS.md": RESULTS,
        "notes/history.md": notes,
        "docs/notes/history.md": notes,
    }
    for page in (README, RESULTS, notes):
        for target, anchor in re.findall(
            r"\]\(((?:docs/)?(?:RESULTS|notes/history)\.md)?#([^)]+)\)", page.read_text()
        ):
            linked = targets[target] if target else page  # (#anchor): a heading of the page
            assert anchor in _anchors(linked), f"{page.name} links {target}#{anchor}"


def test_no_internal_milestone_names_in_docs_or_code():
    pattern = re.compile(r"\bstops? \d+|\bstop-\d+|\bstop N\b")
    files = [README, *(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py")]
    named = [f"{f.relative_to(ROOT)}: {m}" for f in files for m in pattern.findall(f.read_text())]
    assert named == []


# ---------------------------------------------------------------- new records
@pytest.fixture(scope="module")
def archive():
    script = ROOT / "scripts" / "archive_records.py"
    spec = importlib.util.spec_from_file_location("archive_records", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.archive


def _table_run(root: Path) -> Path:
    """A finished two-seed `genworld table` run whose cells carry provenance."""
    run = root / "run"
    config = {
        "algos": ["tgw", "bc"],
        "envs": ["hopper"],
        "qualities": ["medium"],
        "settings": ["single"],
        "scale": "mini",
        "seeds": 2,
        "budget": {"updates": 100, "last_k": 3, "eval_episodes": 5},
    }
    (run / "cells").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "table.json").write_text(json.dumps({"rows": [], "planned_cells": 4}))
    for algo, scores in (("tgw", (50.0, 60.0)), ("bc", (40.0, 42.0))):
        for seed, score in enumerate(scores):
            cell = run / "cells" / "medium" / "single-hopper" / algo / f"seed{seed}"
            cell.mkdir(parents=True)
            result = {
                "algo": algo,
                "envs": ["hopper"],
                "quality": "medium",
                "seed": seed,
                "setting": "single",
                "seconds": 1.0,
                "summary": {"hopper": {"last_k_mean": score, "best": score}},
                "datasets_fingerprint": {"genworld/hopper/medium-v0": {"sha256": "ab" * 32}},
                "provenance": {"commit": "0123456789abcdef", "dirty": False, "command": "x"},
            }
            (cell / "result.json").write_text(json.dumps(result))
    return run


def test_an_archived_new_record_keeps_its_provenance_and_renders(tmp_path, archive):
    run = _table_run(tmp_path)
    records = tmp_path / "records"
    archive(run, records / "new-study")
    for source in run.glob("cells/**/result.json"):
        copied = records / "new-study" / source.relative_to(run)
        assert copied.read_bytes() == source.read_bytes()  # provenance and fingerprints kept
    (row,) = load_headlines(records)
    assert (row.folder, row.kind, row.code) == ("new-study", "table", "0123456")
    assert row.result == "medium: TGW 55.0 ± 5.0 · BC 41.0 ± 1.0"
    assert "4 cells" in row.protocol
    assert "[new-study](results/new-study/)" in markdown([row])
    assert api.results(records).summary["studies"][0]["folder"] == "new-study"


def test_a_wpt_study_archives_its_runs_reports_and_its_pretrained_model(tmp_path, archive):
    run = tmp_path / "run"
    cell = run / "cells" / "dmc-cheetah-run" / "p" / "seed0"
    (cell / "checkpoints" / "step_000000001").mkdir(parents=True)
    (cell / "report.json").write_text("{}")
    (cell / "checkpoints" / "step_000000001" / "tensors.safetensors").write_bytes(b"x")
    for step in ("step_000000010", "step_000000020"):
        (run / "pretrain" / "checkpoints" / step).mkdir(parents=True)
        (run / "pretrain" / "checkpoints" / step / "tensors.safetensors").write_bytes(b"w")
    (run / "pretrain" / "config.json").write_text("{}")
    (run / "pretrain" / "provenance.json").write_text("{}")
    (run / "wpt_study.json").write_text("{}")
    archive(run, tmp_path / "record")
    kept = {str(f.relative_to(tmp_path / "record")) for f in (tmp_path / "record").rglob("*.*")}
    assert kept == {
        "wpt_study.json",
        "cells/dmc-cheetah-run/p/seed0/report.json",
        "pretrain/config.json",
        "pretrain/provenance.json",
        "pretrain/checkpoints/step_000000020/tensors.safetensors",  # the last one only
    }


def test_a_partial_record_says_so(tmp_path):
    run = _table_run(tmp_path)
    (run / "cells" / "medium" / "single-hopper" / "bc" / "seed1" / "result.json").unlink()
    (row,) = load_headlines(tmp_path)
    assert "BC 40.0 (n=1)" in row.result and "3 of 4 cells (partial)" in row.protocol


def test_no_records_is_a_one_line_error(tmp_path, capsys):
    assert main(["results", "--records", str(tmp_path / "none")]) == 2
    assert "no study records" in capsys.readouterr().err


def test_the_dmc_build_caveat_reads_as_its_record_says():
    record = RECORDS / "bench-dmc-2026-12-05"
    build = json.loads((record / "data_build_dmc.json").read_text())["data_build_dmc"]
    caveat = json.loads((record / "record.json").read_text())["caveat"]
    assert "met with lanes in 2 processes, not with one" in caveat
    assert build["ratio"] >= 0.6 > build["ratio_1_process"]


def test_model_benches_render_the_peer_only_where_it_ran():
    from genworld.reports.results import _model_bench_parts

    record = ROOT / "docs" / "results" / "bench-models-1thread-2026-12-05" / "bench.json"
    figures = json.loads(record.read_text())
    text = "; ".join(_model_bench_parts(figures))
    assert "sheeprl" in text and "agnostic IQL update 0.41×" in text
    for config in figures["rssm"]["configs"].values():  # as in CI: no peer venv
        config.pop("peer_training_ratio", None)
    assert "sheeprl" not in "; ".join(_model_bench_parts(figures))


def test_a_scenarios_record_renders_its_scores_and_world_model_errors(tmp_path):
    from genworld.reports.results import headline

    report = {
        "config": {
            "study": "multi",
            "scale": "mini",
            "envs": ["dmc-cheetah-run", "dmc-walker-walk"],
            "train_scenarios": 8,
            "targets": 3,
        },
        "averages": {"id": {"mrcom": float("nan"), "rssm": float("nan")}},
        "world_model_error_h5": {
            "multi": {"mrcom": {"train": 0.4, "id": 0.81, "ood": 0.95}, "rssm": {"id": 0.9}}
        },
        "report": {"commit": "c" * 40, "dirty": False},
    }
    folder = tmp_path / "mrcom-errors"
    folder.mkdir()
    (folder / "scenarios.json").write_text(json.dumps(report))
    row = headline(folder)
    assert row.kind == "scenarios" and row.code == "c" * 7
    assert "in distribution: mrcom 0.810 · rssm 0.900" in row.result
    assert "out of distribution: mrcom 0.950" in row.result
    assert "training scenarios: mrcom 0.400" in row.result
    assert "world models only" in row.protocol and "mrcom nan" not in row.result


def test_a_transfer_record_renders_and_a_merged_report_takes_its_records_code(tmp_path):
    from genworld.reports.results import headline

    report = {
        "config": {
            "pretrain": ["halfcheetah-medium", "walker2d-medium"],
            "target": "hopper-medium",
            "scale": "mini",
            "pretrain_steps": 10000,
            "finetune_steps": 5000,
            "last_k": 3,
            "seed": 0,
            "seeds": 3,
            "networks": "agnostic",
        },
        "target": "hopper",
        "seeds": [0, 1],
        "summary": {
            "finetune": {"last_k": {"mean": 40.0, "std": 2.0}},
            "scratch": {"last_k": {"mean": 30.0, "std": 1.0}},
        },
        "lead_per_seed": [12.0, 8.0],
        "report_only": True,  # seeds trained by other commands
        "provenance": {"commit": "d" * 40, "dirty": False},
    }
    folder = tmp_path / "transfer"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "record.json").write_text(json.dumps({"code": "abc1234"}))
    row = headline(folder)
    assert row.kind == "agnostic" and row.code == "abc1234"  # not the merging command's
    assert "fine-tuned 40.0 ± 2.0 vs from scratch 30.0 ± 1.0" in row.result
    assert "lead per seed +12.0, +8.0" in row.result and "2 seeds" in row.protocol
    made = {"commit": "f" * 40, "dirty": False}
    report["runs_provenance"] = {"seed0/finetune": made, "seed1/finetune": made}
    (folder / "report.json").write_text(json.dumps(report))
    assert headline(folder).code == "f" * 7  # the runs' own code, recorded with them
    report["runs_provenance"]["seed0/finetune"] = {}  # finished by code that kept none
    (folder / "report.json").write_text(json.dumps(report))
    assert headline(folder).code == "abc1234"  # record.json names them all
    del report["report_only"]
    (folder / "report.json").write_text(json.dumps(report))
    assert headline(folder).code == "d" * 7  # the study's own command trained its runs


def test_the_scenario_models_bench_reads_as_its_record_says():
    from genworld.reports.results import _model_bench_parts

    record = RECORDS / "bench-scenario-models-2026-12-05"
    figures = json.loads((record / "bench.json").read_text())
    text = "; ".join(_model_bench_parts(figures))
    mrcom = figures["scenario_models"]["mrcom"]
    assert f"training {mrcom['fraction_of_matmul_peak']:.2f}×" in text
    caveat = json.loads((record / "record.json").read_text())["caveat"]
    assert f"{mrcom['full']['fraction_of_matmul_peak']:.2f}×" in text
    assert mrcom["full"]["fraction_of_matmul_peak"] >= 0.4 and "above its 0.4 target" in caveat
    assert mrcom["fraction_of_matmul_peak"] < 0.4 and "too small to fill a core" in caveat
    assert f"{mrcom['imagination_ratio']:.2f}x" in caveat


def test_the_agnostic_bench_reads_as_its_record_says():
    from genworld.reports.results import _model_bench_parts

    record = RECORDS / "bench-agnostic-2026-12-05"
    agnostic = json.loads((record / "bench.json").read_text())["agnostic"]
    text = "; ".join(_model_bench_parts({"agnostic": agnostic}))
    full = agnostic["full"]["fraction_of_matmul_peak"]
    assert f"{agnostic['fraction_of_matmul_peak']:.2f}× the peak ({full:.2f}× at full size)" in text
    caveat = json.loads((record / "record.json").read_text())["caveat"]
    assert full >= 0.5 and f"{full:.2f}x" in caveat and "above its 0.5 target" in caveat
