import json
import os
import subprocess
import sys

import pytest

from genworld.cli import main


def _listed(capsys) -> dict[str, dict]:
    """`genworld data list --json`, by dataset id (whatever was printed before is dropped)."""
    capsys.readouterr()
    assert main(["data", "list", "--json"]) == 0
    return {row["dataset_id"]: row for row in json.loads(capsys.readouterr().out)}


def test_cli_build_check_info_list(capsys):
    from genworld.api import check_dataset

    assert main(["data", "build", "hopper-random", "--steps", "500", "--seed", "0", "--quiet"]) == 0
    assert _listed(capsys)["genworld/hopper/random-v0"]["steps"] == 500
    assert main(["data", "check", "genworld/hopper/random-v0"]) == 0
    assert check_dataset("genworld/hopper/random-v0")["ok"] is True
    capsys.readouterr()
    assert main(["data", "info", "hopper-random", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ref_max_score"] == 3234.3
    assert main(["data", "info", "hopper-random"]) == 0  # a short card by default
    card = capsys.readouterr().out.splitlines()
    assert card[0].startswith("genworld/hopper/random-v0: 500 steps") and len(card) <= 6
    assert main(["data", "list"]) == 0
    rows = _listed(capsys)
    assert rows["genworld/hopper/random-v0"]["built"] is True
    robots = [
        d
        for d in rows
        if d.startswith("genworld/") and not d.startswith(("genworld/dmc-", "genworld/mw-"))
    ]
    assert len(robots) == 20
    assert sum("/mw-" in d for d in rows) == 50  # every Meta-World task's scripted-noise data
    assert sum("/dmc-" in d for d in rows) == 16 * 5  # every DMC task x quality, listed too
    assert rows["genworld/dmc-walker-stand/medium-v0"]["missing_policies"] == [
        "dmc-walker-stand_train-medium"  # the scenario-conditioned policy of the task
    ]
    assert rows["genworld/dmc-cheetah-run/random-v0"]["missing_policies"] == []
    assert main(["data", "list", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| dataset")  # the Markdown header (prose only)
    row = _listed(capsys)["genworld/hopper/random-v0"]
    assert row["steps"] == 500 and row["policy_normalized"] == {}  # no policy: uniform random
    # --scale picks the size (tiny: 3k transitions); --steps overrides it
    assert main(["data", "build", "hopper-random", "--scale", "tiny", "--force", "--quiet"]) == 0
    assert _listed(capsys)["genworld/hopper/random-v0"]["steps"] == 3000


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    assert main(["data", "build", "hopper-random", "--steps", "200", "--quiet"]) == 0
    from genworld.data.minari_io import dataset_dir

    path = dataset_dir("genworld/hopper/random-v0") / "data" / "main_data.hdf5"
    path.write_bytes(path.read_bytes()[:1000])
    proc = subprocess.run(
        [sys.executable, "-m", "genworld.cli", "data", "check", "genworld/hopper/random-v0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("genworld: error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_matmul_precision_option_sets_torch_and_the_workers_environment(capsys):
    import pytest
    import torch

    from genworld.errors import GenworldError
    from genworld.utils.device import PRECISION_ENV, set_matmul_precision

    before = os.environ.pop(PRECISION_ENV, None)
    try:  # main() sets the variable itself (for workers), so no monkeypatch here
        assert main(["--matmul-precision", "medium", "data", "list"]) == 0
        assert torch.get_float32_matmul_precision() == "medium"
        assert set_matmul_precision() == "medium"  # a spawned worker reads the environment
        del os.environ[PRECISION_ENV]
        assert main(["data", "list"]) == 0
        assert torch.get_float32_matmul_precision() == "highest"
        os.environ[PRECISION_ENV] = "fast"
        with pytest.raises(GenworldError, match="matmul precision 'fast'"):
            set_matmul_precision()
    finally:
        os.environ.pop(PRECISION_ENV, None)
        if before is not None:
            os.environ[PRECISION_ENV] = before
        torch.set_float32_matmul_precision("highest")


def test_build_all_builds_what_the_shipped_policies_allow_and_names_the_rest(tiny_policies, capsys):
    assert main(["data", "build", "--all", "--steps", "200", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "not built" in err and "genworld/walker2d/medium-v0 (needs policy walker2d-medium)" in err
    )
    rows = _listed(capsys)
    built = {dataset_id for dataset_id, row in rows.items() if row["built"]}
    assert "genworld/ant/random-v0" in built and "genworld/hopper/medium-replay-v0" in built
    assert "genworld/walker2d/medium-v0" not in built
    assert main(["data", "list"]) == 0
    missing = {n for row in _listed(capsys).values() for n in row.get("missing_policies", [])}
    assert "walker2d-expert" in missing and not any(n.startswith("hopper") for n in missing)


def test_table_backend_is_the_executor_option():
    from genworld.api import table_config
    from genworld.cli import build_parser
    from genworld.cli.commands import table_options

    def config(argv):
        return table_config("tiny", **table_options(build_parser().parse_args(argv)))

    for command in ("table", "ablate"):
        cfg = config([command, "--backend", "local", "--workers", "2"])
        assert cfg.executor == "local" and cfg.workers == 2
    assert config(["table", "--executor", "ray"]).executor == "ray"


def test_print_config_shows_the_resolved_config_with_dotted_overrides(capsys):
    argv = ["run", "--scale", "tiny", "--print-config", "--agent.mbpo.real_ratio", "0.2"]
    assert main([*argv, "--envs", "hopper", "--deterministic", "--beta", "0.5"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["agent"]["mbpo"]["real_ratio"] == 0.2 and cfg["agent"]["mbpo"]["beta"] == 0.5
    assert cfg["envs"] == ["hopper"] and cfg["deterministic"] is True
    assert cfg["agent"]["mbpo"]["rollout_batch"] == 64  # the tiny preset under the override
    assert main(["table", "--scale", "tiny", "--print-config", "--budget.updates", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["budget"]["updates"] == 7
    commands = {"seed": (["train", "world-model"], ["data", "train-policy", "hopper"])}
    commands["seeds"] = (["unseen"],)
    for key, argvs in commands.items():
        for command in argvs:
            assert main([*command, "--scale", "tiny", "--print-config", f"--{key}", "3"]) == 0
            assert json.loads(capsys.readouterr().out)[key] == 3


def test_help_shows_every_field_with_its_default(capsys):
    from dataclasses import fields

    from genworld.train.table import TableConfig

    with pytest.raises(SystemExit):
        main(["table", "--help"])
    text = capsys.readouterr().out
    for f in fields(TableConfig):
        assert f"--{f.name}" in text or f.name == "budget"
    assert "--budget.updates" in text and "(default: 10000)" in text


def test_a_bad_option_value_is_one_line_naming_the_option(capsys):
    assert main(["run", "--scale", "tiny", "--print-config", "--agent.mbpo.horizon", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--agent.mbpo.horizon 'x'" in err
    assert main(["run", "--scale", "tiny", "--print-config", "--agent.mbpo.horizon", "0"]) == 2
    assert "horizon must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("steps", ["0", "-3", "99999999999999999999"])
def test_zero_negative_or_absurd_steps_are_one_line_errors_not_defaults(steps, capsys):
    build, train = ["data", "build", "hopper-random"], ["data", "train-policy", "hopper"]
    for argv in ([*build, "--quiet"], [*train, "--print-config"]):
        assert main([*argv, "--steps", steps]) == 2
        err = capsys.readouterr().err.strip()
        assert "--steps must be a positive number" in err and "\n" not in err


def test_a_prefix_of_an_option_is_refused_not_read_as_the_option(capsys):
    ablations = ["train", "agnostic-ablations", "--scale", "tiny", "--print-config"]
    for argv, unknown in ((ablations, "--see 1"), (["data", "list"], "--jso")):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, *unknown.split()])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {unknown}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["scenarios", "--study", "multi", "--scale", "tiny", "--seeds", "1"],
        ["wpt-study", "--scale", "tiny", "--seeds", "1"],
    ],
)
def test_report_only_on_a_folder_with_another_config_is_refused_and_nothing_written(
    argv, tmp_path, capsys
):
    """--report-only reads a study, never writes its config: not on an empty folder, not over
    a folder whose study has another config (even one with no finished step yet)."""
    out = tmp_path / "study"
    assert main([*argv, "--out", str(out), "--quiet", "--report-only"]) == 2
    assert "holds no run" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"scale": "mini"}))
    assert main([*argv, "--out", str(out), "--quiet", "--report-only"]) == 2
    assert "different config" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text()) == {"scale": "mini"}
