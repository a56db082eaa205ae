"""Peer check: genworld's CQL and IQL against d3rlpy 2.8's on the same genworld dataset.

Both libraries train on the *same* Minari dataset (built by genworld if missing), with the same
networks (CQL: 3x256 actor and critics, IQL: 2x256), batch 256, the same number of updates, the
same hyper-parameters (below) and the *same* evaluation (genworld's ``evaluate_agent``:
deterministic actions, episode ``i`` seeded ``seed * 1000 + i``, D4RL-normalised score, mean of
the last ``last_k`` evaluations). Updates/s count training time only (no evaluation).

    make peers   # .venv-peers: d3rlpy==2.8.1 with gymnasium 1.0.0 (its pin), never a runtime dependency
    .venv-peers/bin/python benchmarks/peer_check.py --datasets halfcheetah-medium,hopper-medium \
        --algos cql,iql --seeds 3 --scale mini --out runs/peer_check
    # a genworld config variant against the same d3rlpy cells (its own cells and report row):
    .venv-peers/bin/python benchmarks/peer_check.py --datasets halfcheetah-medium --algos cql \
        --genworld-set update_order=joint --out runs/peer_check

Budgets are ``genworld table``'s (``train/table.py`` BUDGETS: mini = 10k updates, an evaluation
every 1k, 5 episodes, last 3, 100k-transition datasets). Each finished (library, algo, dataset,
seed) cell is a JSON file under ``--out``; rerunning skips them (a killed cell restarts).

Settings passed to d3rlpy so that both run the same algorithm:

- CQL (genworld ``algos/cql.py``: CORL's hyper-parameters, d3rlpy's actor lr and design
  choices): actor lr 1e-4, critic lr 3e-4, entropy-temperature lr 1e-4, conservative weight 10,
  10 sampled actions, no Lagrange (d3rlpy ``alpha_learning_rate=0``: its ``alpha`` stays 1, the
  threshold is then a constant), standardised observations.
- IQL (genworld ``algos/iql.py``): lr 3e-4, expectile 0.7, temperature 3, weights clipped at 100,
  rewards scaled by 1000 / (max - min episode return) (d3rlpy ``ReturnBasedRewardScaler``), actor
  lr cosine-decayed to 0 over the run, standardised observations.

Known differences left in place (each library's own design): genworld's CQL follows d3rlpy
on the six choices where d3rlpy and CORL differ (mean-action backup, critic-first order, hard
log-std clamp, temperature loss, PyTorch init of critics and actor; ``algos/cql.py``; CORL's are
one ``--genworld-set`` each, e.g. ``update_order=joint``); d3rlpy steps the temperature before
the actor's loss reads it;
d3rlpy's IQL fits dataset actions with an *unsquashed* Gaussian mean and acts with ``tanh`` of
it (``NormalPolicy``: ``ActionOutput(mu, tanh(mu), logstd)``), and clamps the log-std at -5,
where genworld (as CORL and ikostrikov) puts the ``tanh`` inside the likelihood and clamps at -20.
Both IQL actors have a state-independent log-std.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genworld.algos.registry import AlgoContext, build_agent
from genworld.data.build import ensure_built
from genworld.data.ids import parse_dataset_id
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.eval.rollout import evaluate_agent
from genworld.train.checkpoint import resume_point, save_checkpoint
from genworld.train.table import BUDGETS, Budget
from genworld.utils.io import atomic_write_json

HIDDEN = {"cql": (256, 256, 256), "iql": (256, 256)}
NO_D3RLPY = (
    "d3rlpy is not installed in this venv: it lives in .venv-peers (d3rlpy 2.8.1 pins gymnasium "
    "1.0.0); build it with `make peers` and run with .venv-peers/bin/python"
)
BATCH = 256


def load(dataset_id: str, budget: Budget) -> MultiEnvDataset:
    ensure_built([dataset_id], steps=budget.dataset_steps)
    return MultiEnvDataset.from_minari([dataset_id])


def _evaluate(act, dataset: MultiEnvDataset, budget: Budget, seed: int, step: int) -> dict:
    spec = dataset.specs[0]
    returns = evaluate_agent(act, [spec], budget.eval_episodes, seed * 1000)[spec.name]
    return {"step": step, "score": float(spec.normalized_score(returns.mean()))}


def variant_name(settings: dict | None) -> str:
    """The library label of genworld cells trained with config ``settings``: ``genworld`` or
    e.g. ``genworld+target_action=mean`` (its own cells and its own report row)."""
    return "genworld" + "".join(f"+{k}={v}" for k, v in sorted((settings or {}).items()))


def parse_settings(pairs: list[str]) -> dict:
    """``["KEY=VALUE", ...]`` → a dict; values are JSON where they parse (numbers, booleans)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"peer_check: --genworld-set {pair!r}: use KEY=VALUE")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def train_genworld(
    algo: str,
    dataset: MultiEnvDataset,
    budget: Budget,
    seed: int,
    settings: dict | None = None,
    folder: Path | None = None,
) -> dict:
    torch.manual_seed(seed)
    overrides: dict = {"hidden": HIDDEN[algo], "batch_size": BATCH}
    if algo == "iql":
        overrides["actor_lr_decay_steps"] = budget.updates
    overrides.update(settings or {})
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="full",
        seed=seed,
        overrides=overrides,
    )
    agent = build_agent(algo, ctx)
    generator = torch.Generator().manual_seed(seed)

    def set_state(state: dict) -> None:
        agent.load_state_dict(state["agent"])
        generator.set_state(state["generator"])

    hooks = (lambda: {"agent": agent.state_dict(), "generator": generator.get_state()}, set_state)
    return _loop(lambda: agent.update(generator), agent.act, dataset, budget, seed, hooks, folder)


def d3rlpy_dataset(dataset: MultiEnvDataset):
    import d3rlpy

    env = dataset.envs[0]
    ends = (env.steps_left == 1).numpy()
    terminals = env.terminations.numpy().astype(bool) & ends
    return d3rlpy.dataset.MDPDataset(
        env.observations.numpy(),
        env.actions.numpy(),
        env.rewards.numpy()[:, None],
        terminals.astype(np.float32),
        timeouts=(ends & ~terminals).astype(np.float32),
    )


def d3rlpy_algo(algo: str, budget: Budget, seed: int):
    import d3rlpy

    d3rlpy.seed(seed)
    encoder = d3rlpy.models.encoders.VectorEncoderFactory(list(HIDDEN[algo]))
    common = {
        "batch_size": BATCH,
        "actor_encoder_factory": encoder,
        "critic_encoder_factory": encoder,
        "observation_scaler": d3rlpy.preprocessing.StandardObservationScaler(),
    }
    if algo == "cql":
        return d3rlpy.algos.CQLConfig(
            **common,
            actor_learning_rate=1e-4,
            critic_learning_rate=3e-4,
            temp_learning_rate=1e-4,
            alpha_learning_rate=0.0,
            conservative_weight=10.0,
            n_action_samples=10,
        ).create(device="cpu:0")
    schedule = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=budget.updates)
    return d3rlpy.algos.IQLConfig(
        **common,
        value_encoder_factory=encoder,
        actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=schedule),
        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        expectile=0.7,
        weight_temp=3.0,
        max_weight=100.0,
    ).create(device="cpu:0")


def d3rlpy_state(model) -> dict:
    """Every module's and optimiser's state dict of a d3rlpy algorithm (no pickle)."""
    modules = model.impl.modules
    return {
        f.name: getattr(modules, f.name).state_dict()
        for f in dataclasses.fields(modules)
        if getattr(modules, f.name) is not None
    }


def load_d3rlpy_state(model, state: dict) -> None:
    modules = model.impl.modules
    for name, value in state.items():
        getattr(modules, name).load_state_dict(value)


def train_d3rlpy(
    algo: str, dataset: MultiEnvDataset, budget: Budget, seed: int, folder: Path | None = None
) -> dict:
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    data = d3rlpy_dataset(dataset)
    model = d3rlpy_algo(algo, budget, seed)
    build_scalers_with_transition_picker(model, data)  # what d3rlpy's fit() does first
    model.build_with_dataset(data)
    np.random.seed(seed)  # d3rlpy samples batches with numpy's global generator
    act_dim = dataset.specs[0].act_dim

    def act(obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(model.predict(obs[:, : dataset.specs[0].obs_dim].numpy()))[
            :, :act_dim
        ]

    def set_state(state: dict) -> None:
        load_d3rlpy_state(model, state["modules"])
        np.random.set_state(state["numpy"])

    hooks = (lambda: {"modules": d3rlpy_state(model), "numpy": np.random.get_state()}, set_state)
    return _loop(
        lambda: model.update(data.sample_transition_batch(BATCH)),
        act,
        dataset,
        budget,
        seed,
        hooks,
        folder,
    )


def _loop(update, act, dataset: MultiEnvDataset, budget: Budget, seed: int, hooks, folder) -> dict:
    """Train ``budget.updates`` steps with an evaluation every ``eval_every``; with ``folder``,
    checkpoint there after each evaluation (``hooks``: get / set the library's state, RNGs
    included) and resume from the newest checkpoint, so a killed cell loses at most one
    evaluation interval."""
    get_state, set_state = hooks
    records, train_seconds, first = [], 0.0, 1
    resumed = resume_point(folder) if folder is not None else None
    if resumed is not None:
        first, state = resumed[0] + 1, resumed[1]
        set_state(state["library"])
        torch.set_rng_state(state["torch_rng"])
        records, train_seconds = json.loads(state["records"]), state["train_seconds"]
    for step in range(first, budget.updates + 1):
        start = time.perf_counter()
        update()
        train_seconds += time.perf_counter() - start
        if step % budget.eval_every == 0 or step == budget.updates:
            records.append(_evaluate(act, dataset, budget, seed, step))
            if folder is not None and step < budget.updates:
                state = {
                    "library": get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "records": json.dumps(records),
                    "train_seconds": train_seconds,
                }
                save_checkpoint(folder, step, state, keep=1)
    last = [r["score"] for r in records[-budget.last_k :]]
    return {
        "last_k": float(np.mean(last)),
        "best": max(r["score"] for r in records),
        "records": records,
        "updates_per_s": budget.updates / train_seconds,
    }


def run(
    datasets,
    algos,
    seeds: int,
    scale: str,
    out: Path,
    libraries=("genworld", "d3rlpy"),
    settings: dict | None = None,
):
    """Train the missing cells; ``settings`` (genworld config overrides) make the genworld cells
    a variant (``variant_name``), compared with the same d3rlpy cells. The report covers every
    cell under ``out``, earlier variants included."""
    budget = BUDGETS[scale]
    loaded = {dataset_id: load(dataset_id, budget) for dataset_id in datasets}
    for algo in algos:  # algorithm-major: a cheap algorithm finishes on every dataset first
        for dataset_id, dataset in loaded.items():
            for seed in range(seeds):
                for lib in libraries:
                    name = variant_name(settings) if lib == "genworld" else lib
                    path = out / "cells" / f"{name}__{algo}__{dataset_id}__s{seed}.json"
                    if path.exists():
                        continue
                    print(f"peer_check: {name} {algo} {dataset_id} seed {seed} ...", flush=True)
                    partial = out / "partial" / path.stem  # checkpoints of the unfinished cell
                    if lib == "genworld":
                        cell = train_genworld(algo, dataset, budget, seed, settings, partial)
                    else:
                        cell = train_d3rlpy(algo, dataset, budget, seed, partial)
                    cell.update(library=name, algo=algo, dataset=dataset_id, seed=seed)
                    atomic_write_json(path, cell)
                    shutil.rmtree(partial, ignore_errors=True)
    wanted = {(a, d) for a in algos for d in datasets}
    results = [
        r
        for r in (json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json")))
        if (r["algo"], r["dataset"]) in wanted and r["seed"] < seeds
    ]
    return write_report(results, budget, scale, out)


def difference_ci(ours: list[float], theirs: list[float]) -> str:
    """``mean(ours) - mean(theirs)`` with a Welch-t 95% interval (— below 2 runs a side)."""
    diff = statistics.mean(ours) - statistics.mean(theirs) if ours and theirs else float("nan")
    if len(ours) < 2 or len(theirs) < 2:
        return "—" if np.isnan(diff) else f"{diff:+.1f} [—]"
    from scipy import stats

    va, vb = statistics.variance(ours) / len(ours), statistics.variance(theirs) / len(theirs)
    se = (va + vb) ** 0.5
    if se == 0:
        return f"{diff:+.1f} [{diff:+.1f}, {diff:+.1f}]"
    dof = (va + vb) ** 2 / (va**2 / (len(ours) - 1) + vb**2 / (len(theirs) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return f"{diff:+.1f} [{diff - half:+.1f}, {diff + half:+.1f}]"


TAIL = 5
"""The report's second, steadier figure: the mean of the last ``TAIL`` evaluations."""


def tail_mean(cells: list[dict]) -> str:
    """Mean over seeds of each cell's last ``TAIL`` evaluation scores (— without records)."""
    tails = [[r["score"] for r in c["records"][-TAIL:]] for c in cells if c.get("records")]
    return f"{statistics.mean(statistics.mean(t) for t in tails):.1f}" if tails else "—"


def label(algo: str, variant: str) -> str:
    """``cql`` for genworld's defaults, ``cql (target_action=mean)`` for a variant."""
    extra = variant.removeprefix("genworld").lstrip("+").replace("+", ", ")
    return f"{algo} ({extra})" if extra else algo


def write_report(results: list[dict], budget: Budget, scale: str, out: Path) -> str:
    def stats(values):
        return (statistics.mean(values), statistics.pstdev(values)) if values else (np.nan, 0.0)

    rows = [
        "| dataset | algo | genworld score | d3rlpy score | within spread | difference [95% CI] "
        f"| last {TAIL}: genworld / d3rlpy | genworld upd/s | d3rlpy upd/s | speed ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["dataset"], r["algo"], r["library"]) for r in results if r["library"] != "d3rlpy"}
    )
    for dataset_id, algo, variant in keys:
        cell = {
            lib: [
                r
                for r in results
                if (r["dataset"], r["algo"], r["library"]) == (dataset_id, algo, lib)
            ]
            for lib in (variant, "d3rlpy")
        }
        (gm, gs), (dm, ds) = (stats([r["last_k"] for r in cell[lib]]) for lib in cell)
        gu, du = (stats([r["updates_per_s"] for r in cell[lib]])[0] for lib in cell)
        if abs(gm - dm) <= max(gs, ds, 1e-9):
            within = "yes"
        else:
            within = "no: genworld " + ("higher" if gm > dm else "lower")
        diff = difference_ci(*([r["last_k"] for r in cell[lib]] for lib in cell))
        tail = " / ".join(tail_mean(cell[lib]) for lib in cell)
        rows.append(
            f"| {dataset_id} | {label(algo, variant)} | {gm:.1f} ± {gs:.1f} "
            f"(n={len(cell[variant])}) | "
            f"{dm:.1f} ± {ds:.1f} (n={len(cell['d3rlpy'])}) | {within} | {diff} | {tail} | {gu:.1f} | "
            f"{du:.1f} | {gu / du:.2f}x |"
        )
    text = "\n".join(
        [
            f"# Peer check: genworld vs d3rlpy 2.8.1 ({scale})",
            "",
            f"Datasets regenerated by genworld (not D4RL's), {budget.dataset_steps} transitions; "
            f"{budget.updates} updates, batch {BATCH}; score = D4RL-normalised return, mean of "
            f"the last {budget.last_k} evaluations ({budget.eval_episodes} episodes each, every "
            f"{budget.eval_every} updates), mean ± std over seeds. 'within spread': the means "
            "differ by at most the larger seed std (std over seeds, population form); "
            "'difference': genworld minus d3rlpy with a Welch-t 95% interval (sample std). "
            f"'last {TAIL}': the mean over seeds of the last {TAIL} evaluations' mean, a steadier "
            "figure where scores swing between evaluations (hopper). "
            "Updates/s: training time only, same process.",
            "",
            *rows,
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_check.md").write_text(text)
    atomic_write_json(out / "peer_check.json", {"results": results})
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="halfcheetah-medium,hopper-medium")
    parser.add_argument("--algos", default="cql,iql")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", choices=list(BUDGETS), default="mini")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/peer_check")
    parser.add_argument(
        "--genworld-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override genworld's algorithm config (e.g. update_order=joint); those cells are a "
        "variant 'genworld+KEY=VALUE' with its own report row against the same d3rlpy cells",
    )
    args = parser.parse_args(argv)
    settings = parse_settings(args.genworld_set)
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        print(f"peer_check: {NO_D3RLPY}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    for name in args.datasets.split(","):
        parse_dataset_id(name)
    text = run(
        [x for x in args.datasets.split(",") if x],
        [x for x in args.algos.split(",") if x],
        args.seeds,
        args.scale,
        Path(args.out),
        settings=settings,
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
