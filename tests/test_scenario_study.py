"""MrCoM's scenario adaptation and ``genworld scenarios`` (seed 002, Alg. 2, §5, App. C): the
adaptation agents through a model trained on other envs, the online variant, perturbed data and
env names, the study's config and plan, and (integration) the tiny multi study end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genworld.algos.mbpo import MBPOConfig
from genworld.algos.mrcom import MrCoMAgent, MrCoMAgentConfig
from genworld.algos.registry import AlgoContext, build_agent, resolve_variant
from genworld.algos.sac import SACConfig
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs.perturb import KINDS, Perturbation, perturb_episode_observations
from genworld.envs.registry import get_env_spec, make_env
from genworld.envs.scenarios import parse_scenario
from genworld.errors import GenworldError
from genworld.train.world_model_source import provide_world_model
from genworld.world_models.subset import EnvSubset, on_envs

from .conftest import random_episode, side_by_side
from .test_algos import toy_dataset

SMALL = MBPOConfig(rollout_every=2, rollout_batch=16, horizon=2, beta=0.0, real_ratio=0.5)
SMALL = MBPOConfig(**{**SMALL.__dict__, "sac": SACConfig(hidden=(16, 16), batch_size=16)})


def _toy_episodes(seed=0) -> dict:
    """toy_dataset()'s (spec, episodes) per env, drawn in the same order."""
    rng = np.random.default_rng(seed)
    out = {}
    for env in ("hopper", "halfcheetah"):
        spec = get_env_spec(env)
        episodes = [
            random_episode(rng, 30, spec.obs_dim, spec.act_dim, terminal=i % 2 == 0)
            for i in range(4)
        ]
        out[env] = (spec, episodes)
    return out


def _context(dataset, tmp_path, source=provide_world_model, task=None, overrides=None):
    return AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        seed=0,
        out=tmp_path,
        world_models=source,
        task=task,
        overrides=overrides or {},
    )


@pytest.fixture(scope="module")
def two_env_models(tmp_path_factory):
    """Tiny MrCoM and RSSM models trained on hopper + halfcheetah toy data."""
    data = toy_dataset()
    folder = tmp_path_factory.mktemp("models")
    models = {kind: _context(data, folder / kind).world_model(kind) for kind in ("mrcom", "rssm")}
    return data, models


# ------------------------------------------------------------------ adaptation agents
@pytest.mark.parametrize("method", ["mrcom", "rssm", "rssm-context"])
def test_adaptation_agent_on_one_env_of_a_two_env_model_round_trips(
    method, two_env_models, tmp_path
):
    """The study's path: a model trained on several envs, the agent on one env's data (the
    target's): update → act → state_dict → a fresh agent gives the same actions."""
    full, models = two_env_models
    target = toy_dataset(envs=("halfcheetah",), seed=3)
    algo, variant = resolve_variant(method)
    model = models["mrcom" if method == "mrcom" else "rssm"]

    def make(seed):
        torch.manual_seed(seed)
        ctx = _context(target, tmp_path, lambda c, n: model, overrides=variant)
        return build_agent(algo, ctx)

    agent = make(0)
    assert isinstance(agent.world_model, EnvSubset)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        metrics = agent.update(generator)
    assert metrics["rollout/transitions"] > 0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    obs = torch.zeros(4, target.obs_max)
    obs[:, :17] = target.envs[0].observations[:4]
    actions = agent.act(obs, torch.zeros(4, dtype=torch.int64))
    assert actions.shape == (4, 6) and actions.abs().max() <= 1
    other = make(1)
    other.load_state_dict(agent.state_dict())
    torch.testing.assert_close(other.act(obs, torch.zeros(4, dtype=torch.int64)), actions)


def test_env_subset_predicts_as_the_model_on_its_own_env(two_env_models):
    """One env of the model through :func:`on_envs` gives the model's own deterministic
    predictions for that env (cut to the env's widths)."""
    full, models = two_env_models
    model = models["mrcom"]
    assert on_envs(model, full) is model
    single = MultiEnvDataset([_toy_episodes()["halfcheetah"]])  # env 1 of ``full``
    view = on_envs(model, single)
    index = torch.tensor([3, 10, 25])
    actions = torch.rand(3, 6) * 2 - 1
    own = model.next(
        model.encode(full, torch.ones(3, dtype=torch.int64), index),
        None,
        actions,
        deterministic=True,
    )
    seen = view.next(
        view.encode(single, torch.zeros(3, dtype=torch.int64), index),
        None,
        actions,
        deterministic=True,
    )
    torch.testing.assert_close(seen.next_observations, own.next_observations[:, :17])
    torch.testing.assert_close(seen.extrinsic, own.extrinsic)
    with pytest.raises(GenworldError, match="covers"):
        on_envs(model, toy_dataset(envs=("walker2d",)))


def test_rssm_context_filters_history_the_context_free_one_does_not(two_env_models):
    full, models = two_env_models
    model = models["rssm"]
    env, index = torch.ones(2, dtype=torch.int64), torch.tensor([0, 12])
    trained = model.cfg.burn_in
    free, context = model.with_burn_in(0), model.with_burn_in(3)
    assert free.initial_deter is model.initial_deter  # weights shared, not copied
    assert model.cfg.burn_in == trained  # the trained model is unchanged
    a, b = free.encode(full, env, index), context.encode(full, env, index)
    torch.testing.assert_close(a.deter[0], b.deter[0])  # step 0 has no history to filter
    assert not torch.allclose(a.deter[1], b.deter[1])
    with pytest.raises(GenworldError, match="burn_in"):
        model.with_burn_in(model.cfg.seq_len)


def test_online_variant_adds_real_episodes_and_resumes_them(two_env_models, tmp_path):
    """``online_steps``: the policy's real steps join the data; the state round-trips them."""
    full, models = two_env_models
    cfg = MrCoMAgentConfig(mbpo=SMALL, online_steps=7, online_every=2)
    agent = MrCoMAgent(models["mrcom"], full, cfg, torch.device("cpu"), seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # collections at updates 0 and 2
        metrics = agent.update(generator)
    assert agent.collections == 2 and float(metrics["online/steps"]) == 14
    assert [sum(len(e) for e in eps) for eps in agent.collected] == [14, 14]
    assert len(agent.mbpo.dataset) == len(full) + 28
    state = agent.state_dict()
    other = MrCoMAgent(models["mrcom"], full, cfg, torch.device("cpu"), seed=0)
    other.load_state_dict(state)
    assert len(other.mbpo.dataset) == len(agent.mbpo.dataset)
    torch.testing.assert_close(
        other.mbpo.dataset.envs[0].observations, agent.mbpo.dataset.envs[0].observations
    )
    with pytest.raises(GenworldError, match="online_steps"):
        MrCoMAgentConfig(online_steps=-1).validate()


# ------------------------------------------------------------------ perturbed data and names
@pytest.mark.parametrize("kind", KINDS)
def test_perturbed_episode_matches_the_perturbed_env(kind):
    """Recorded observations perturbed offline == what the perturbed env gives, same seed."""
    p = Perturbation(kind, seed=3)
    plain, wrapped = make_env("hopper"), make_env("hopper", perturbation=p)
    raw = [plain.reset(seed=11)[0]]
    seen = [wrapped.reset(seed=11)[0]]
    for _ in range(5):
        action = np.full(3, 0.3, np.float32)
        raw.append(plain.step(action)[0])
        seen.append(wrapped.step(action)[0])
    np.testing.assert_allclose(perturb_episode_observations(np.array(raw), p, 11), np.array(seen))


def test_registry_names_perturbed_envs():
    spec = get_env_spec("dmc-cheetah-run@torso=1.2@obs=add-d")
    assert (spec.name, spec.obs_dim) == ("dmc-cheetah-run@torso=1.2@obs=add-d", 17 + 2)
    env = make_env("hopper@obs=msk-f")
    assert env.reset(seed=0)[0].shape == (11,)
    with pytest.raises(GenworldError, match="unknown perturbation"):
        get_env_spec("hopper@obs=blur")


# ------------------------------------------------------------------ the study's config and plan
def test_study_config_refuses_unknown_studies_and_methods_in_one_line():
    from genworld.api import scenarios_config

    for field, value, choices in (
        ("study", "tables", "multi, dynamics, perturb, single, behaviour, ablation"),
        (
            "methods",
            ("mrcom", "mamba"),
            "mrcom, tgw, rssm, rssm-context, cadm, mrcom-no-meta-state",
        ),
        ("envs", ("dmc-cartpole-swingup",), "dmc-cheetah-run"),
    ):
        with pytest.raises(GenworldError) as err:
            scenarios_config("tiny", **{field: value})
        assert "\n" not in str(err.value) and choices in str(err.value)
    with pytest.raises(GenworldError, match="varies the target speed, which dmc-hopper-stand"):
        scenarios_config("tiny", study="behaviour", envs=("dmc-hopper-stand",))
    assert scenarios_config("tiny", envs=("dmc-hopper-stand",)).envs == ("dmc-hopper-stand",)


def test_model_based_cells_scale_the_temperature_lr_with_their_budget():
    """Adam moves log α by about its lr per update: the default lr gives every budget the same
    reach (ALPHA_REACH nats over the cell's updates); a given lr wins."""
    from genworld.api import scenarios_config
    from genworld.train.scenarios import ALPHA_REACH, adaptation_overrides

    def alpha_lr(**fields):
        return adaptation_overrides(scenarios_config(**fields))["mbpo"]["sac"]["alpha_lr"]

    assert alpha_lr(scale="tiny", policy_updates=400) == ALPHA_REACH / 400
    assert alpha_lr(scale="mini") == pytest.approx(1e-3)  # 10 nats over 10,000 updates
    assert alpha_lr(scale="full") == pytest.approx(1e-4)
    assert alpha_lr(scale="tiny", policy_alpha_lr=3e-4) == 3e-4
    sac = adaptation_overrides(scenarios_config("mini"))["mbpo"]["sac"]
    assert (sac["init_alpha"], sac["bc_alpha"]) == (0.1, 2.5)  # the study's other settings
    with pytest.raises(GenworldError, match="policy_alpha_lr must be ≥ 0"):
        scenarios_config("tiny", policy_alpha_lr=-1.0)


def test_cli_refuses_an_unknown_study_with_exit_2(capsys):
    from genworld.cli import main

    assert main(["scenarios", "--study", "table9", "--scale", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "choose from multi, dynamics" in err


def test_study_plans_its_scenarios_and_cells():
    from genworld.api import scenarios_config
    from genworld.train.scenarios import cells, dataset_ids, groups, scenarios

    multi = scenarios_config("tiny", seeds=2)
    names = scenarios(multi, "dmc-cheetah-run")
    assert [len(names[k]) for k in ("train", "id", "ood")] == [2, 1, 1]
    ood = parse_scenario(names["ood"][0])
    assert not 0.5 <= ood.speed <= 1.0 and not 0.8 <= ood.torso <= 1.2
    assert len(cells(multi)) == 2 * 2 * 5  # seeds × (id, ood) × methods
    ood_only = scenarios_config("tiny", seeds=2, splits=("ood",))
    assert {c.split for c in cells(ood_only)} == {"ood"} and len(cells(ood_only)) == 2 * 5
    with pytest.raises(GenworldError, match="unknown split 'test'"):
        scenarios_config("tiny", splits=("test",))
    dynamics = scenarios(scenarios_config("tiny", study="dynamics"), "dmc-cheetah-run")
    assert {parse_scenario(n).speed for v in dynamics.values() for n in v} == {1.0}
    # Table 2 has all three domains: hopper-stand (no target speed) varies in dynamics only
    mini = scenarios_config("mini", study="dynamics")
    assert mini.envs == ("dmc-cheetah-run", "dmc-walker-walk", "dmc-hopper-stand")
    hopper = scenarios(mini, "dmc-hopper-stand")
    assert hopper == scenarios(scenarios_config("mini"), "dmc-hopper-stand")
    assert scenarios_config("mini", study="behaviour").envs == (
        "dmc-cheetah-run",
        "dmc-walker-walk",
    )
    behaviour = scenarios_config("tiny", study="behaviour")
    assert all(
        (parse_scenario(n) or parse_scenario(n + "@speed=1")).torso == 1.0
        for v in scenarios(behaviour, "dmc-cheetah-run").values()
        for n in v
    )
    assert [g.name for g in groups(behaviour)] == ["random", "medium", "mixed", "expert"]
    perturb = scenarios_config("tiny", study="perturb", seeds=1)
    assert {c.split for c in cells(perturb)} == {"id"} and len(cells(perturb)) == 4 * 5
    assert len(dataset_ids(perturb)) == 3  # training scenarios + the id target, shared
    # the model-free reference needs no world model
    from genworld.train.scenarios import model_kinds

    assert model_kinds(scenarios_config("tiny", methods=("td3bc", "mrcom", "rssm-context"))) == [
        "mrcom",
        "rssm",
    ]


def test_processes_sharing_a_study_train_each_world_model_once_and_split_the_cells(
    tmp_path, monkeypatch
):
    """Several `genworld scenarios` processes may share one --out: a world model is trained by
    the process holding its claim while another waits, then loads it; a cell another process
    holds is put off (None) or awaited, and a finished one is read, not adapted again."""
    import time

    import genworld.train.scenarios as study
    import genworld.train.world_model as wm
    from genworld.api import scenarios_config
    from genworld.utils.io import claim

    spans: list[tuple[float, float]] = []

    def fit(config, data, folder, show_progress=False):
        began = time.perf_counter()
        time.sleep(0.3)
        spans.append((began, time.perf_counter()))
        return "model"

    monkeypatch.setattr(wm, "fit_world_model", fit)
    cfg = scenarios_config("tiny", seeds=1, methods=("mrcom",))
    out = tmp_path / "study"
    side_by_side(lambda: study.world_model(cfg, out, "multi", "mrcom", data=object()))
    (first, second) = sorted(spans)
    assert second[0] >= first[1]  # one after the other, never side by side
    adapted: list = []

    def adapt(cfg, out, cell):
        adapted.append(cell.folder)
        (out / cell.folder).mkdir(parents=True, exist_ok=True)
        (out / cell.folder / "result.json").write_text(json.dumps({"cell": cell.folder}))
        return {"cell": cell.folder}

    monkeypatch.setattr(study, "adapt_cell", adapt)
    cell = study.cells(cfg)[0]
    folder = out / cell.folder
    with claim(folder.with_name(folder.name + ".claim"), wait=False):
        assert study.run_cell(cfg, out, cell) is None  # another process adapts it
    assert study.run_cell(cfg, out, cell) == {"cell": cell.folder}
    assert study.run_cell(cfg, out, cell, wait=True) == {"cell": cell.folder}
    assert adapted == [cell.folder]


def test_the_ablation_study_trains_mrcom_without_each_regulariser():
    from genworld.api import scenarios_config
    from genworld.train.scenarios import cells, world_model_config

    ablation = scenarios_config("tiny", study="ablation", seeds=1)
    assert ablation.methods == ("mrcom", "mrcom-no-meta-state", "mrcom-no-meta-value")
    assert {c.method for c in cells(ablation)} == set(ablation.methods)
    full, no_state, no_value = (world_model_config(ablation, m) for m in ablation.methods)
    assert (full.model, no_state.model, no_value.model) == ("mrcom",) * 3
    assert full.mrcom.meta_state_scale > 0 and full.mrcom.meta_value_scale > 0
    assert no_state.mrcom.meta_state_scale == 0 and no_state.mrcom.meta_value_scale > 0
    assert no_value.mrcom.meta_value_scale == 0 and no_value.mrcom.meta_state_scale > 0
    assert no_state.mrcom.d_model == full.mrcom.d_model  # the scale's sizes, merged deeply


@pytest.mark.integration
def test_tiny_multi_study_end_to_end(tmp_path):
    """The acceptance command: `genworld scenarios --study multi --scale tiny --seeds 1` writes
    its table, JSON and plot; a rerun resumes every finished cell."""
    from genworld.cli import main

    out = tmp_path / "multi"
    argv = ["scenarios", "--study", "multi", "--scale", "tiny", "--seeds", "1", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    # the study's datasets live in its folder, apart from other scales' of the same names
    assert list((out / "datasets").glob("genworld/dmc-*/*-v0"))
    assert not (tmp_path / "datasets").exists()  # the test's default store (conftest)
    report = json.loads((out / "scenarios.json").read_text())
    default = sorted(["mrcom", "rssm-context", "cadm", "rssm", "tgw"])
    assert [(r["split"], sorted(r["methods"])) for r in report["rows"]] == [
        ("id", default),
        ("ood", default),
    ]
    assert len(report["results"]) == 10
    assert all(np.isfinite(r["last_k"]) for r in report["results"])
    # each world model's k-step errors on its training and the held-out scenarios, per task
    errors = report["world_model_errors"]["multi"]
    # copy: the no-change predictor; the RSSM as each of its methods rolls it out
    assert sorted(errors) == ["cadm", "copy", "mrcom", "rssm", "rssm-context", "tgw"]
    for kind in errors.values():
        assert sorted(kind) == ["id", "ood", "train"]
        assert all(np.isfinite(e["obs_h5"]) for split in kind.values() for e in split.values())
    assert sorted(report["world_model_error_h5"]["multi"]["rssm"]) == ["id", "ood", "train"]
    assert (out / "scenarios.md").exists() and (out / "scenarios.png").stat().st_size > 0
    assert (
        "World models (updates × batch, steps a row): `cadm` " in (out / "scenarios.md").read_text()
    )
    done = {p: p.stat().st_mtime for p in out.glob("cells/**/result.json")}
    assert main([*argv, "--out", str(out), "--report-only"]) == 0
    assert main([*argv, "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime for p in out.glob("cells/**/result.json")} == done
    # the model-free reference: TD3+BC on the target's data alone, no world model
    assert main([*argv, "--out", str(out), "--methods", "mrcom,td3bc", "--splits", "ood"]) == 0
    results = json.loads((out / "scenarios.json").read_text())["results"]
    td3bc = [r for r in results if r["method"] == "td3bc"]
    assert len(td3bc) == 1 and td3bc[0]["world_model"] is None
    assert np.isfinite(td3bc[0]["last_k"])
    models = out / "world_models" / "multi"
    # a second seed adapts in its own seed's world model
    two = [a if a != "1" else "2" for a in argv]
    assert main([*two, "--out", str(out), "--methods", "mrcom", "--splits", "ood"]) == 0
    results = json.loads((out / "scenarios.json").read_text())["results"]
    (second,) = [r for r in results if r["method"] == "mrcom" and r["seed"] == 1]
    assert second["world_model"] == "world_models/multi/mrcom-seed1"
    assert json.loads((models / "mrcom-seed1" / "config.json").read_text())["seed"] == 1
    assert json.loads((models / "mrcom" / "config.json").read_text())["seed"] == 0
    # a cell of seed 1 made by code that shared seed 0's model is flagged in the report
    path = next(out.glob("cells/**/mrcom/seed1/result.json"))
    path.write_text(json.dumps({**second, "world_model": "world_models/multi/mrcom"}))
    assert (
        main([*two, "--out", str(out), "--methods", "mrcom", "--splits", "ood", "--report-only"])
        == 0
    )
    assert (
        "1 cells of seeds ≥ 1 adapted in seed 0's world model" in (out / "scenarios.md").read_text()
    )
    path.write_text(json.dumps(second))
    # world models and their errors only: no cell
    made = set(out.glob("cells/**/result.json"))
    assert main([*argv, "--out", str(out), "--methods", "cadm", "--cells", "false"]) == 0
    assert (models / "cadm" / "errors.json").exists()
    assert set(out.glob("cells/**/result.json")) == made
    # errors.json from before the training-scenario split gains it on the next run, unchanged
    path = models / "cadm" / "errors.json"
    held_out = {k: v for k, v in json.loads(path.read_text()).items() if k != "train"}
    path.write_text(json.dumps(held_out))
    assert main([*argv, "--out", str(out), "--methods", "cadm", "--cells", "false"]) == 0
    again = json.loads(path.read_text())
    assert sorted(again) == ["id", "ood", "train"] and {k: again[k] for k in held_out} == held_out


@pytest.mark.integration  # a tiny study's datasets and cells: out of the fast suite, CI runs it
def test_a_failing_cell_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """A cell that raises does not stop the others: the report holds those, the command ends
    in one line naming the failure, and a rerun retries just that cell."""
    import genworld.train.scenarios as study
    from genworld import api
    from genworld.errors import GenworldError

    adapt = study.adapt_cell

    def flaky(cfg, out, cell):
        if cell.split == "ood":
            raise FloatingPointError("non-finite model rollout")
        return adapt(cfg, out, cell)

    monkeypatch.setattr(study, "adapt_cell", flaky)
    cfg = api.scenarios_config("tiny", study="multi", seeds=1, methods=("td3bc",))
    out = tmp_path / "study"
    with pytest.raises(GenworldError, match=r"1 of 2 cells failed \(first: cells/multi/.*/ood/"):
        api.scenarios(cfg, out, show_progress=False)
    failures = list(out.glob("cells/**/error.json"))
    assert len(failures) == 1
    assert json.loads(failures[0].read_text())["error"] == (
        "FloatingPointError: non-finite model rollout"
    )
    assert len(json.loads((out / "scenarios.json").read_text())["results"]) == 1
    monkeypatch.setattr(study, "adapt_cell", adapt)
    assert len(api.scenarios(cfg, out, show_progress=False).summary["results"]) == 2
    assert not failures[0].exists()


def test_a_partial_report_compares_methods_on_the_same_finished_rows_and_whole_seeds():
    """A seed counts on a row once all the row's targets are finished, and a split's average
    takes only the rows every method has finished: a method that has run only its easy task is
    not averaged against another's every task."""
    from types import SimpleNamespace

    from genworld.reports.scenarios import row_stats, row_targets, row_text, split_averages

    def result(env, target, method, seed, score):
        return {"group": "multi", "env": env, "split": "ood", "target": target,
                "method": method, "seed": seed, "last_k": score}  # fmt: skip

    results = [
        *(result(e, t, "mrcom", 0, s) for e, s in (("a", 20), ("b", 50)) for t in ("t1", "t2")),
        result("a", "t1", "mrcom", 1, 90.0),  # seed 1 has one of row a's two targets
        *(result("a", t, "td3bc", 0, 30.0) for t in ("t1", "t2")),
        result("b", "t1", "td3bc", 0, 70.0),  # row b: one of two targets
    ]
    keys = [("multi", "a", "ood"), ("multi", "b", "ood")]
    rows = [
        {"split": "ood", "methods": {m: row_stats(results, k, m, 2, 2) for m in ("mrcom", "td3bc")}}
        for k in keys
    ]
    assert rows[0]["methods"]["mrcom"] == {
        "mean": 20.0, "std": 0.0, "n": 1, "partial": None, "seeds": {0: 20.0}
    }  # fmt: skip
    partial = rows[1]["methods"]["td3bc"]
    assert partial["n"] == 0 and partial["partial"] == {"mean": 70.0, "targets": 1}
    assert row_text(partial, 2, 2) == "70.0 (1 of 2 targets)"
    average = split_averages(rows, ["mrcom", "td3bc"], "ood")
    assert average == {
        "methods": {"mrcom": 20.0, "td3bc": 30.0}, "rows": 1, "of": 2, "without": []
    }  # fmt: skip
    # a method with no finished row (not run on this split) is left out, not blanking the others
    for row in rows:
        row["methods"]["tgw"] = row_stats(results, ("multi", "a", "ood"), "tgw", 2, 2)
    average = split_averages(rows, ["mrcom", "td3bc", "tgw"], "ood")
    assert (average["methods"]["mrcom"], average["methods"]["td3bc"]) == (20.0, 30.0)
    assert np.isnan(average["methods"]["tgw"]) and average["without"] == ["tgw"]
    # a method with more finished seeds on a row is averaged on the seeds all have finished
    more = [*results, *(result("a", t, "mrcom", 1, 90.0) for t in ("t2",))]
    row = {
        "split": "ood",
        "methods": {m: row_stats(more, keys[0], m, 2, 2) for m in ("mrcom", "td3bc")},
    }
    assert row["methods"]["mrcom"]["n"] == 2 and row["methods"]["mrcom"]["mean"] == 55.0
    assert split_averages([row], ["mrcom", "td3bc"], "ood")["methods"]["mrcom"] == 20.0
    cells = [SimpleNamespace(group="multi", env="a", split="ood", target=t) for t in "xyz"]
    assert row_targets(cells * 2, keys[0]) == 3


def test_the_claims_are_judged_on_the_seeds_every_target_has_with_paired_cis():
    """MrCoM ≥ RSSM + 5 out of distribution and each ablation below MrCoM: numbers on the seeds
    both methods finished on every target, a verdict once that is every seed; the error claim
    compares MrCoM with the context-free RSSM and CaDM."""
    from types import SimpleNamespace

    from genworld.reports.scenarios import error_claims, paired_claim_line, scenario_claims

    cfg = SimpleNamespace(seeds=2, methods=("mrcom", "rssm", "mrcom-no-meta-value"))
    cells = [SimpleNamespace(group="multi", env="e", split="ood", target=t) for t in "xy"]

    def result(method, target, seed, score):
        return {"group": "multi", "env": "e", "split": "ood", "target": target,
                "method": method, "seed": seed, "last_k": score}  # fmt: skip

    base = {"mrcom": 30.0, "rssm": 20.0, "mrcom-no-meta-value": 31.0}
    results = [result(m, t, 0, v) for m, v in base.items() for t in "xy"]
    results.append(result("mrcom", "x", 1, 40.0))  # seed 1 part-way: not compared yet
    claims = scenario_claims(cfg, cells, results)
    beats = claims["mrcom_beats_rssm_ood"]
    assert beats["averages"] == {"mrcom": 30.0, "rssm": 20.0} and beats["holds"] is None
    assert (beats["seeds"], beats["of_seeds"], beats["difference_ci"]) == (1, 2, None)
    assert "not judged yet (1 of 2 seeds on all 2 targets" in paired_claim_line(beats)
    results += [result("mrcom", "y", 1, 40.0), *(result(m, t, 1, v + 10.0) for m, v in base.items()
                if m != "mrcom" for t in "xy")]  # fmt: skip
    claims = scenario_claims(cfg, cells, results)
    beats, ablation = claims["mrcom_beats_rssm_ood"], claims["mrcom_beats_mrcom-no-meta-value_ood"]
    assert beats["holds"] is True and beats["difference_ci"] == [10.0, 10.0]
    assert ablation["holds"] is False and ablation["difference_ci"] == [-1.0, -1.0]
    assert "mrcom_beats_mrcom-no-meta-state_ood" not in claims  # not run
    table = {"multi": {"mrcom": {"ood": 0.4}, "rssm": {"ood": 0.5}, "cadm": {"ood": 0.7},
                       "rssm-context": {"ood": 0.3}}}  # fmt: skip
    lines, verdicts = error_claims(table)
    assert verdicts["multi/ood"]["holds"] is True and "rssm-context 0.300" in lines[0]


def test_the_behaviour_study_varies_only_the_world_models_data():
    """Its targets keep the study's quality whatever the group's, and its training scenarios,
    which share their dynamics, get random data of their own (seeds from their names)."""
    from genworld.api import scenarios_config
    from genworld.data.build import collection_seed, own_seeds
    from genworld.data.ids import parse_dataset_id
    from genworld.train.scenarios import dataset_ids, groups, scenarios, target_quality

    cfg = scenarios_config("tiny", study="behaviour")
    assert {target_quality(cfg, g) for g in groups(cfg)} == {"mixed"}
    ids = [parse_dataset_id(i) for i, _ in dataset_ids(cfg)]
    targets = scenarios(cfg, "dmc-cheetah-run")["id"]
    assert {d.quality for d in ids if d.env in targets} == {"mixed"}
    assert {d.quality for d in ids if d.env not in targets} == {
        "random",
        "medium",
        "mixed",
        "expert",
    }
    train = scenarios(cfg, "dmc-cheetah-run")["train"]
    seeds = {collection_seed(parse_dataset_id(f"{name}-random"), 0, 0) for name in train}
    assert len(seeds) == len(train) and 0 not in seeds
    multi = scenarios(scenarios_config("tiny"), "dmc-cheetah-run")["train"]
    assert not any(own_seeds(parse_dataset_id(f"{name}-mixed")) for name in multi)
    assert collection_seed(parse_dataset_id("hopper-medium"), 3, 1) == 3_001  # as before
    perturbed = parse_dataset_id(f"{train[0]}@obs=add-g-random")  # a perturbed id parses
    assert own_seeds(perturbed)


def test_a_speed_only_scenario_built_with_plain_seeds_is_refused_for_a_rebuild():
    from genworld.data.build import _needs_rebuild

    card = {"cached": True, "steps": 1_000, "dataset_id": "dmc-cheetah-run@speed=0.7-random"}
    assert _needs_rebuild(card, 1_000)  # built before its seeds came from its name
    assert not _needs_rebuild({**card, "own_seeds": True}, 1_000)
    assert not _needs_rebuild({**card, "dataset_id": "hopper-medium"}, 1_000)
