"""`genworld ablate` and `genworld sweep beta` (tiny) and the variant names behind them."""

import csv
import json
from pathlib import Path

import pytest

from genworld.algos.registry import resolve_variant
from genworld.cli import main
from genworld.errors import GenworldError
from genworld.train.studies import ABLATIONS

from .conftest import write_tiny_policies


@pytest.fixture
def policies(tmp_path, monkeypatch):
    folder = tmp_path / "policies"
    write_tiny_policies(folder, ("hopper", "walker2d"))
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))


def test_variants_resolve_to_an_algorithm_and_overrides():
    assert resolve_variant("cql") == ("cql", {})
    assert resolve_variant("tgw-no-ri") == ("tgw", {"mbpo": {"beta": 0.0}})
    assert resolve_variant("tgw-no-prompt") == (
        "tgw",
        {"world_model": {"tgw": {"use_prompt": False}}},
    )
    assert resolve_variant("tgw-beta=0.25") == ("tgw", {"mbpo": {"beta": 0.25}})
    for bad in ("tgw-beta=-1", "tgw-beta=x", "nope-beta=1", "tgw-no-thing"):
        with pytest.raises(GenworldError, match="unknown algorithm"):
            resolve_variant(bad)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
def test_ablate_tiny_runs_every_ablation_in_both_settings(policies, tmp_path):
    out = tmp_path / "ablate"
    argv = ["ablate", "--envs", "hopper,walker2d", "--qualities", "medium", "--seeds", "1"]
    assert main([*argv, "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    assert (out / "table.md").read_text().startswith("# TGW ablations")  # the title: prose only
    summary = json.loads((out / "table.json").read_text())
    assert summary["config"]["settings"] == ["multi", "single"]
    assert {r["setting"] for r in summary["rows"]} == {"multi", "single"}
    rows = _rows(out / "table.csv")
    assert {r["algo"] for r in rows} == {"tgw", "tgw-no-prompt", "tgw-no-rssm", "tgw-no-ri"}
    assert {r["setting"] for r in rows} == {"multi", "single"}
    # 4 variants x (1 multi cell with 2 envs + 2 single cells with 1 env) = 16 rows
    assert len(rows) == 16


@pytest.mark.integration  # an end-to-end CLI study: CI runs it
def test_sweep_beta_tiny_writes_the_plot_and_one_column_per_value(policies, tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", "beta", "--values", "0,1", "--envs", "hopper,walker2d"]
    argv += ["--qualities", "medium", "--seeds", "1", "--scale", "tiny"]
    # two cells side by side need the same world model at once: one trains it, one waits
    assert main([*argv, "--out", str(out), "--quiet", "--workers", "2", "--threads", "1"]) == 0
    assert (out / "beta_sweep.png").stat().st_size > 1000
    assert {r["algo"] for r in _rows(out / "table.csv")} == {"tgw-beta=0", "tgw-beta=1"}
    # one world model per data group and seed, shared by every β value
    (model,) = [p for p in (out / "world_models").iterdir() if p.is_dir()]
    logged = [json.loads(line)["step"] for line in (model / "metrics.jsonl").open()]
    assert logged and len(logged) == len(set(logged))  # trained once, not once per cell
    assert main(["sweep", "beta", "--values", "0,x", "--out", str(tmp_path / "bad")]) == 2


@pytest.mark.integration  # a tiny ablate run of four algorithms: CI runs it
def test_ablation_overrides_reach_the_world_model(policies, tmp_path):
    import json

    out = tmp_path / "ablate"
    argv = ["ablate", "--envs", "hopper", "--qualities", "medium", "--seeds", "1"]
    assert main([*argv, "--setting", "multi", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    cells = out / "cells" / "medium" / "multi-multi"
    paths = {
        algo: Path(json.loads((cells / algo / "seed0" / "world_model.json").read_text())["path"])
        for algo in ABLATIONS
    }
    # cells share a world model where only the policy differs: TGW and TGW w/o ri (β = 0)
    assert paths["tgw"] == paths["tgw-no-ri"]
    assert len({paths[a] for a in ABLATIONS}) == 3
    assert {p.parent for p in paths.values()} == {out / "world_models"}
    configs = {algo: json.loads((paths[algo] / "config.json").read_text()) for algo in paths}
    assert configs["tgw"]["tgw"]["use_prompt"] and configs["tgw"]["tgw"]["use_stochastic"]
    assert not configs["tgw-no-prompt"]["tgw"]["use_prompt"]
    assert not configs["tgw-no-rssm"]["tgw"]["use_stochastic"]
    # the rest of the world-model config is the scale preset, untouched by the override
    assert configs["tgw-no-prompt"]["tgw"]["d_model"] == configs["tgw"]["tgw"]["d_model"]


@pytest.mark.parametrize("scale", ["tiny", "mini", "full"])
def test_ablated_world_models_differ_from_tgw_only_in_the_ablated_switch(scale):
    """A variant's world_model overrides merge into the scale's preset (deep merge): w/o prompt
    and w/o RSSM train the same sizes and budget as full TGW."""
    from dataclasses import replace

    from genworld.train.world_model import config_for_scale

    base = config_for_scale(scale, check_ids=False, model="tgw")
    for name, switch in (("tgw-no-prompt", "use_prompt"), ("tgw-no-rssm", "use_stochastic")):
        _, overrides = resolve_variant(name)
        cfg = config_for_scale(scale, check_ids=False, model="tgw", **overrides["world_model"])
        assert getattr(cfg.tgw, switch) is False
        assert replace(cfg.tgw, **{switch: True}) == base.tgw
        assert replace(cfg, tgw=base.tgw) == base
