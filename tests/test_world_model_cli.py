import json

import pytest

from genworld.cli import main
from genworld.errors import GenworldError
from genworld.train.world_model import config_for_scale, train_world_model


@pytest.fixture
def random_data():
    for env in ("hopper", "halfcheetah"):
        assert main(["data", "build", f"{env}-random", "--steps", "1500", "--quiet"]) == 0


def test_train_eval_world_model_tiny(random_data, tmp_path):
    runs = []
    for model in ("tgw", "mlp"):
        out = tmp_path / model
        argv = [
            "train",
            "world-model",
            "--model",
            model,
            "--datasets",
            "hopper-random,halfcheetah-random",
            "--scale",
            "tiny",
            "--out",
            str(out),
            "--quiet",
        ]
        assert main(argv) == 0
        runs.append(str(out))
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["step"] == 30
        assert any((out / "tb").iterdir())
    assert main(["eval", "world-model", *runs, "--episodes-per-env", "16"]) == 0
    (compared,) = (tmp_path / "tgw" / "eval").iterdir()  # one folder per evaluation
    errors = json.loads((compared / "k_step_errors.json").read_text())
    for env, model in (
        ("hopper", "mean-predictor"),
        ("hopper", "copy-predictor"),
        ("hopper", "tgw:tgw"),
        ("halfcheetah", "mlp:mlp"),
    ):
        assert env in errors[model]
    assert (compared / "k_step_errors.png").stat().st_size > 1000
    made = json.loads((compared / "provenance.json").read_text())  # which code made what
    assert made["evaluation"]["machine"] and set(made["runs"]) == set(runs)
    assert all(r["genworld"] and "command" in r for r in made["runs"].values())
    # the stochastic state's contribution, beside the errors (TGW only: the MLP has no u)
    alive = json.loads((compared / "stochastic_state.json").read_text())
    assert set(alive) == {"tgw:tgw"}
    for env in ("hopper", "halfcheetah"):
        row = alive["tgw:tgw"][env]
        assert row["u_var"] > 0 and row["head_var"] > 0
        assert row["ratio_to_head"] == pytest.approx(row["u_var"] / row["head_var"])
    # the penalty check: held-out vs another quality's data (here the same random data)
    assert (
        main(["eval", "world-model", runs[0], "--episodes-per-env", "16", "--off-data", "random"])
        == 0
    )
    (alone,) = set((tmp_path / "tgw" / "eval").iterdir()) - {compared}
    rows = json.loads((alone / "penalty_calibration.json").read_text())
    assert "mlp:mlp" in json.loads((compared / "k_step_errors.json").read_text())  # kept
    assert "hopper" in rows["held-out"] and "halfcheetah" in rows["random"]
    assert set(rows) == {"held-out", "random"} and rows["random"]["hopper"]["uncertainty"] > 0


def test_world_model_run_resumes(random_data, tmp_path):
    cfg = config_for_scale("tiny", datasets=("hopper-random",))
    out = tmp_path / "run"
    short = config_for_scale("tiny", datasets=("hopper-random",))
    train_world_model(short, out, show_progress=False)
    # a finished run rerun is a no-op continuation, and the checkpoint step is the last step
    train_world_model(cfg, out, show_progress=False)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]
    with pytest.raises(GenworldError, match="different config"):
        train_world_model(
            config_for_scale("tiny", datasets=("hopper-random",), seed=1), out, show_progress=False
        )


def test_world_model_config_errors():
    with pytest.raises(GenworldError, match="--model 'gru' is unknown"):
        config_for_scale("tiny", model="gru")
    with pytest.raises(GenworldError, match="--scale 'huge'"):
        config_for_scale("huge")
    with pytest.raises(GenworldError, match="unknown environment 'hoper'"):
        config_for_scale("tiny", datasets=("hoper-medium",))


def test_ablation_flags_reach_the_tgw_config_and_refuse_the_mlp(random_data, tmp_path, capsys):
    base = ["train", "world-model", "--datasets", "hopper-random", "--scale", "tiny", "--quiet"]
    out = tmp_path / "no_prompt"
    assert main([*base, "--no-prompt", "--no-rssm", "--out", str(out)]) == 0
    tgw = json.loads((out / "config.json").read_text())["tgw"]
    assert tgw["use_prompt"] is False and tgw["use_stochastic"] is False
    assert main([*base, "--model", "mlp", "--no-prompt", "--out", str(tmp_path / "m")]) == 2
    assert "TGW ablations" in capsys.readouterr().err


def test_missing_datasets_are_built_from_the_shipped_policies(tiny_policies, tmp_path):
    from genworld.data.minari_io import read_metadata

    out = tmp_path / "wm"
    argv = ["train", "world-model", "--datasets", "hopper-medium,hopper-random"]
    assert main([*argv, "--scale", "tiny", "--out", str(out), "--quiet"]) != 0  # one env twice
    argv = ["train", "world-model", "--datasets", "hopper-medium", "--scale", "tiny"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    card = read_metadata("genworld/hopper/medium-v0")["genworld_card"]
    assert card["steps"] == config_for_scale("tiny").dataset_steps == 3_000
