"""Algorithms written outside genworld (docs/EXTENDING.md): registered through GENWORLD_ALGOS,
an installed package's entry points or ``api.register_algorithm``, refused in one line when
malformed or shadowing genworld's own, checked against the agent contract by ``genworld algos
check``, and run in a table's worker processes beside genworld's algorithms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genworld import api
from genworld.algos import registry
from genworld.cli import main
from genworld.errors import GenworldError

from .conftest import write_tiny_policies

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples(monkeypatch):
    """The examples folder importable here and in the processes this test starts."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    monkeypatch.delenv(registry.PLUGIN_VAR, raising=False)


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A package installed with an entry point of group genworld.algos (its dist-info only)."""
    dist = tmp_path / "site" / "my_algos-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-algos\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.PLUGIN_GROUP}]\nmy-bc = tests.plugin_algos:build_unmasked\n"
    )
    monkeypatch.syspath_prepend(str(dist.parent))
    registry._entry_point_algos.cache_clear()
    yield
    registry._entry_point_algos.cache_clear()


def test_plugins_come_from_the_variable_and_from_installed_packages(
    examples, installed_plugin, monkeypatch
):
    monkeypatch.setenv(registry.PLUGIN_VAR, "percent-bc=percent_bc:build, ")
    rows = {row["name"]: row for row in api.algorithms()}
    assert rows["percent-bc"] == {
        "name": "percent-bc",
        "builder": "percent_bc:build",
        "source": registry.PLUGIN_VAR,
    }
    assert rows["my-bc"]["source"] == f"entry point of group {registry.PLUGIN_GROUP}"
    assert rows["cql"]["source"] == "genworld" and rows["cmt-no-pt"]["source"] == "variant"
    assert registry.resolve_variant("percent-bc") == ("percent-bc", {})
    assert {"percent-bc", "my-bc", "bc"} <= set(registry.available_algos())


@pytest.mark.parametrize(
    "value, message",
    [
        ("bc=percent_bc:build", "has the name of genworld's own 'bc'"),
        ("tgw-no-ri=percent_bc:build", "has the name of genworld's own 'tgw-no-ri'"),
        ("percent-bc", "write name=module:function"),
        ("Percent=percent_bc:build", "write name=module:function"),
        ("a=percent_bc.build", "write name=module:function"),
    ],
)
def test_a_malformed_or_shadowing_plugin_is_one_line_naming_where_it_came_from(
    examples, monkeypatch, capsys, value, message
):
    monkeypatch.setenv(registry.PLUGIN_VAR, value)
    with pytest.raises(GenworldError, match=message) as caught:
        registry.resolve_variant("cql")
    assert str(caught.value).startswith(registry.PLUGIN_VAR) and "\n" not in str(caught.value)
    assert main(["algos", "list"]) == 2
    assert message in capsys.readouterr().err


def test_register_algorithm_reaches_child_processes_and_refuses_a_missing_builder(
    examples, monkeypatch
):
    api.register_algorithm("percent-bc", "percent_bc:build")
    api.register_algorithm("percent-bc", "percent_bc:build")  # again: one entry
    assert os.environ[registry.PLUGIN_VAR] == "percent-bc=percent_bc:build"
    with pytest.raises(GenworldError, match="'other' is registered but not available"):
        api.register_algorithm("other", "percent_bc:no_such_function")
    assert os.environ[registry.PLUGIN_VAR] == "percent-bc=percent_bc:build"  # unchanged


def test_the_example_keeps_the_contract_and_a_broken_plugin_fails_by_name(
    examples, monkeypatch, capsys
):
    monkeypatch.setenv(
        registry.PLUGIN_VAR,
        "percent-bc=percent_bc:build,broken=tests.plugin_algos:build_unmasked,"
        "crashing=tests.plugin_algos:build_crashing,forgetful=tests.plugin_algos:build_forgetful",
    )
    found = api.check_algorithm("percent-bc")
    assert found["ok"] and found["builder"] == "percent_bc:build"
    names = ["build", "update", "learn", "act", "checkpoint", "evaluate"]
    assert [c["name"] for c in found["checks"]] == names
    assert all(c["ok"] for c in found["checks"])
    assert main(["algos", "check", "broken", "--json"]) == 1
    broken = json.loads(capsys.readouterr().out)
    verdicts = {c["name"]: c["ok"] for c in broken["checks"]}
    assert verdicts == {
        "build": True,
        "update": True,
        "learn": True,
        "act": False,
        "checkpoint": None,
        "evaluate": True,
    }
    act = next(c for c in broken["checks"] if c["name"] == "act")
    assert act["detail"] == (
        "GenworldError: hopper's actions are not 0 on its padded dims 3..5: multiply by the "
        "env's action mask"
    )
    crashing = api.check_algorithm("crashing")
    update = crashing["checks"][1]
    assert update["ok"] is False and update["detail"].startswith(
        "RuntimeError: the loss is not ready (plugin_algos.py:"
    )
    assert [c["ok"] for c in crashing["checks"][2:]] == [None, True, True, True]
    forgetful = api.check_algorithm("forgetful")["checks"][4]
    assert (
        forgetful["ok"] is False and "tensors differ from the saved agent's" in forgetful["detail"]
    )


def test_percent_bc_keeps_the_best_episodes_of_each_env(examples):
    from percent_bc import top_episode_rows

    timesteps = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3, 0])  # episodes of 3, 2, 4, 1 steps
    returns = np.array([5.0, 9.0, 1.0, 7.0])
    assert top_episode_rows(timesteps, returns, 25).tolist() == [3, 4]  # episode 1
    assert top_episode_rows(timesteps, returns, 50).tolist() == [3, 4, 9]  # + episode 3
    assert top_episode_rows(timesteps, returns, 100).tolist() == list(range(10))
    assert top_episode_rows(timesteps, returns, 1).tolist() == [3, 4]  # at least one episode


@pytest.mark.integration  # worker processes: CI runs it
def test_a_plugin_runs_in_a_tables_worker_processes_beside_genworlds_algorithms(
    examples, tmp_path, monkeypatch
):
    folder = tmp_path / "policies"
    write_tiny_policies(folder, ("hopper",))
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))
    monkeypatch.setenv(registry.PLUGIN_VAR, "percent-bc=percent_bc:build")
    out = tmp_path / "table"
    argv = ["table", "--envs", "hopper", "--qualities", "medium", "--algos", "percent-bc,bc"]
    argv += ["--settings", "single", "--seeds", "1", "--scale", "tiny", "--workers", "2"]
    assert main([*argv, "--executor", "local", "--out", str(out), "--quiet"]) == 0
    results = [json.loads(p.read_text()) for p in out.glob("cells/**/result.json")]
    assert sorted(r["algo"] for r in results) == ["bc", "percent-bc"]
    plugin = next(r["plugin"] for r in results if r["algo"] == "percent-bc")
    assert plugin["builder"] == "percent_bc:build"
    assert plugin["registered_by"] == registry.PLUGIN_VAR
    assert plugin["file"] == str(EXAMPLES / "percent_bc.py")
    assert len(plugin["sha256"]) == 16 and "plugin" not in next(
        r for r in results if r["algo"] == "bc"
    )
    table = json.loads((out / "table.json").read_text())
    assert table["plugins"] == {"percent-bc": {**plugin, "versions": 1}}
