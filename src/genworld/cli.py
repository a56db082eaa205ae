"""``genworld`` command line: parses arguments, calls ``genworld.api``, prints results.

Every GenworldError becomes one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from genworld.errors import GenworldError


def _data_list(args) -> None:
    from genworld.api import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if args.markdown:
        from genworld.api import datasets_markdown

        print(datasets_markdown(rows))
        return
    for row in rows:
        built = "built" if row["built"] else "-"
        extra = ""
        if row.get("steps") is not None:
            extra = f"  steps={row['steps']:>8}  normalized={row['normalized_mean']:.1f}"
        elif row.get("missing_policies"):
            extra = f"  not buildable yet: needs policy {', '.join(row['missing_policies'])}"
        print(f"{row['dataset_id']:<40} {built:<6}{extra}")


SCALE_STEPS = {"tiny": 3_000, "mini": 100_000, "full": None}  # None: the D4RL size of the id


def _data_build(args) -> None:
    from genworld.api import all_dataset_ids, build_dataset, build_lanes, missing_policies

    if args.all == bool(args.ids):
        raise GenworldError("give dataset ids (hopper-medium ...) or --all, not both or neither")
    ids = [str(d) for d in all_dataset_ids()] if args.all else args.ids
    # default: one process per lane on a multi-core machine (a build whose segments all fit
    # one lane starts no pool: build_dataset decides)
    workers = args.workers if args.workers is not None else build_lanes()
    skipped = []
    for dataset_id in ids:
        # --all builds what the shipped policies allow, then says what is missing
        if args.all and (missing := missing_policies(dataset_id)):
            skipped.append(f"{dataset_id} (needs policy {', '.join(missing)})")
            continue
        card = build_dataset(
            dataset_id,
            steps=args.steps or SCALE_STEPS[args.scale],
            seed=args.seed,
            force=args.force,
            cached=args.all,
            workers=workers,
            show_progress=not args.quiet,
        )
        if card.get("cached"):
            print(f"{card['dataset_id']}: already built (cached; --force rebuilds it)")
            continue
        print(
            f"{card['dataset_id']}: {card['steps']} steps, {card['episodes']} episodes, "
            f"normalized return {card['normalized_mean']:.1f} ± {card['normalized_std']:.1f}, "
            f"{card['build_steps_per_second']:.0f} steps/s"
        )
    if skipped:
        raise GenworldError(
            f"{len(skipped)} of {len(ids)} datasets not built, their behaviour policies are not "
            f"shipped yet: {'; '.join(skipped)}. Train them with `genworld data train-policy ENV`"
            " and `genworld data export-policies RUN`"
        )


def _data_info(args) -> None:
    from genworld.api import dataset_info

    print(json.dumps(dataset_info(args.id), indent=2))


def _data_check(args) -> None:
    from genworld.api import check_dataset

    report = check_dataset(args.id)
    print(
        f"{report['dataset_id']}: OK ({report['episodes']} episodes, {report['steps']} steps, "
        f"normalized return {report['normalized_mean']:.1f})"
    )


def _train_policy(args) -> None:
    from genworld.api import behaviour_config, train_policy

    cfg = behaviour_config(
        args.env,
        args.scale,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        eval_episodes=args.eval_episodes,
    )
    out = train_policy(
        cfg, args.out or f"runs/policies/{args.env}-s{args.seed}", show_progress=not args.quiet
    )
    print(f"trained {args.env}: {out} (export with `genworld data export-policies {out}`)")


def _export_task_experts(args) -> None:
    from genworld.api import export_task_experts

    family = export_task_experts(args.run, args.dest)
    for index, (low, high) in sorted(family["reference_returns"].items(), key=lambda x: int(x[0])):
        print(f"{family['family']}-{index}: random {low:.1f}, expert {high:.1f}")


def _export_policies(args) -> None:
    from genworld.api import export_policies

    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    cards = export_policies(args.run, args.dest, only=only)
    for name, card in cards.items():
        print(
            f"{card['env']}-{name}: step {card['train_steps']}, normalized "
            f"{card['eval_normalized']:.1f} (stochastic), in target: {card['extra']['in_target']}"
        )


def _train_world_model(args) -> None:
    from genworld.api import train_world_model, world_model_config

    if (args.no_prompt or args.no_rssm) and args.model != "tgw":
        raise GenworldError(
            "--no-prompt and --no-rssm are TGW ablations: use them with --model tgw"
        )
    cfg = world_model_config(
        args.scale,
        model=args.model,
        datasets=tuple(args.datasets.split(",")),
        seed=args.seed,
        device=args.device,
        steps=args.steps,
        tgw={
            **({"use_prompt": False} if args.no_prompt else {}),
            **({"use_stochastic": False} if args.no_rssm else {}),
        },
    )
    out = args.out or f"runs/world_models/{args.model}__{'+'.join(cfg.datasets)}__s{args.seed}"
    out = train_world_model(cfg, out, show_progress=not args.quiet)  # DDP under torchrun
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"world model trained: {out} (evaluate with `genworld eval world-model {out}`)")


def _eval_world_model(args) -> None:
    from genworld.api import evaluate_world_model

    result = evaluate_world_model(
        args.runs, episodes_per_env=args.episodes_per_env, off_data=args.off_data
    )
    for path in result.files:
        if path.suffix == ".md":
            print(path.read_text())
    print(f"written: {', '.join(str(p) for p in result.files)} (and .json beside each .md)")


def _run(args) -> None:
    from genworld.api import run, run_config

    cfg = run_config(
        args.scale,
        envs=tuple(args.envs.split(",")),
        qualities=tuple(args.qualities.split(",")),
        setting=args.setting,
        seed=args.seed,
        device=args.device,
        policy=args.policy,
        beta=args.beta,
        threads=args.threads,
        deterministic=args.deterministic or None,
    )
    out = (
        args.out or f"runs/run__{cfg.setting}__{'+'.join(cfg.qualities)}__{cfg.scale}__s{cfg.seed}"
    )
    result = run(cfg, out, show_progress=not args.quiet)
    print(result.markdown)
    print(f"run directory: {result.out} ({result.summary['wall_seconds']:.0f} s)")


def _table(args) -> None:
    from genworld.api import table, table_config

    algos = tuple(x for x in args.algos.split(",") if x)
    cfg = table_config(args.scale, algos=algos, **_table_options(args))
    out = args.out or f"runs/table__{cfg.scale}"
    result = table(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print(result.markdown)
    print(f"table directory: {result.out} (table.md, table.csv, table.json, profile_*.png)")


def _bench(args) -> None:
    from genworld.api import bench

    bench(
        args.names,
        quick=args.quick,
        plot=args.plot,
        quick_start=args.quick_start,
        threads=args.threads,
        json_path=args.json,
    )
    if args.json:
        print(f"written: {args.json}")


def unseen_config(args):
    """The ``UnseenConfig`` of ``genworld unseen``'s arguments (``--train-experts`` with
    ``--experts auto`` trains SAC experts for every family, ant-dir included)."""
    from genworld.api import unseen_config as config_for_scale

    methods = tuple(x for x in args.methods.split(",") if x) if args.methods else None
    experts = "sac" if args.train_experts and args.experts == "auto" else args.experts
    return config_for_scale(
        args.scale,
        family=args.family,
        split=args.split,
        seeds=args.seeds,
        device=args.device,
        methods=methods,
        workers=args.workers,
        shipped_experts=not args.train_experts,
        experts=experts,
    )


def _unseen(args) -> None:
    from genworld.api import unseen

    cfg = unseen_config(args)
    out = args.out or f"runs/unseen__{cfg.family}__{cfg.scale}"
    result = unseen(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print(result.markdown)
    print(f"unseen-task directory: {result.out} (unseen.md, unseen.json, unseen_tasks.png)")


def _table_options(args) -> dict:
    split = lambda text: tuple(x for x in text.split(",") if x)  # noqa: E731
    return {
        "envs": split(args.envs),
        "qualities": split(args.qualities),
        "settings": split(args.setting) if args.setting else None,
        "seeds": args.seeds,
        "device": args.device,
        "workers": args.workers,
        "threads": args.threads,
        "executor": args.executor,
    }


def _ablate(args) -> None:
    from genworld.api import ablate, ablation_config

    cfg = ablation_config(args.scale, **_table_options(args))
    out = args.out or f"runs/ablate__{args.scale}"
    result = ablate(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print(result.markdown)
    print(f"ablation directory: {result.out}")


def _sweep(args) -> None:
    from genworld.api import sweep_beta, sweep_config

    try:
        values = tuple(float(v) for v in args.values.split(",") if v)
    except ValueError:
        raise GenworldError(f"--values {args.values!r}: give numbers, e.g. 0,0.5,1") from None
    cfg = sweep_config(values, args.scale, **_table_options(args))
    out = args.out or f"runs/sweep_beta__{args.scale}"
    result = sweep_beta(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print(result.markdown)
    print(f"sweep directory: {result.out} (beta_sweep.png)")


def _add_table_options(p: argparse.ArgumentParser, setting_default: str | None) -> None:
    p.add_argument("--envs", default="halfcheetah,hopper,walker2d")
    p.add_argument("--qualities", default="random,medium,medium-replay,medium-expert")
    p.add_argument("--setting", default=setting_default, help="multi, single or multi,single")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the table from the cells finished so far (a running or "
        "stopped run of the same command)",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="mini")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per cell (1 when cells share the cores; 2 for one worker on 2 cores)",
    )
    p.add_argument(
        "--executor",
        "--backend",
        dest="executor",
        choices=["auto", "local", "ray"],
        default="auto",
        help="where cells run with --workers > 1: ray (if installed) or a local process pool",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")


def _add_agnostic_parsers(subparsers) -> None:
    """Add ``agnostic-iql`` and ``agnostic-ppo`` to a subparsers object (``genworld train``)."""
    p = subparsers.add_parser(
        "agnostic-iql",
        help="DD-IQL: IQL with agnostic networks on several datasets (torchrun-ready, resumable)",
    )
    p.add_argument(
        "--datasets", default=None, help="comma list of dataset ids (default: the scale's)"
    )
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="mini")
    p.add_argument("--steps", type=int, default=0, help="gradient updates (default: the scale's)")
    p.add_argument("--eval-episodes", type=int, default=0)
    p.add_argument(
        "--batch-size", type=int, default=0, help="rows per update over all envs (default: preset)"
    )
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_agnostic_iql_command)
    p = subparsers.add_parser(
        "agnostic-ppo", help="DD-PPO: PPO with agnostic networks on several envs (torchrun-ready)"
    )
    p.add_argument("--envs", default=None, help="comma list: genworld envs or Gymnasium ids")
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="mini")
    p.add_argument("--total-timesteps", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_agnostic_ppo_command)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(x for x in (text or "").split(",") if x)


def _agnostic_iql_command(args) -> None:
    from genworld.api import agnostic_iql_config, train_agnostic_iql

    cfg = agnostic_iql_config(
        datasets=_split(args.datasets),
        scale=args.scale,
        steps=args.steps,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        agent={"batch_size": args.batch_size} if args.batch_size else {},
    )
    out = args.out or f"runs/agnostic_iql__{'+'.join(cfg.datasets)}__{cfg.scale}__s{cfg.seed}"
    records = train_agnostic_iql(cfg, out, show_progress=not args.quiet)
    if records:
        last = records[-1]
        print(
            f"agnostic-iql: {last['step']} updates, normalized score "
            f"{last['eval/normalized_score_mean']:.1f}; run directory: {out}"
        )


def _agnostic_ppo_command(args) -> None:
    from genworld.api import agnostic_ppo_config, train_agnostic_ppo

    cfg = agnostic_ppo_config(
        envs=_split(args.envs),
        scale=args.scale,
        total_timesteps=args.total_timesteps,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    out = args.out or f"runs/agnostic_ppo__{cfg.scale}__s{cfg.seed}"
    result = train_agnostic_ppo(cfg, out, show_progress=not args.quiet)
    if result:
        returns = ", ".join(f"{k} {v:.1f}" for k, v in result.items())
        print(f"agnostic-ppo: returns {returns}; run directory: {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genworld", description="Multi-environment offline RL with generalist world models."
    )
    parser.add_argument(
        "--matmul-precision",
        choices=["highest", "high", "medium"],
        default=None,
        help="float32 matmul precision: highest (IEEE, default) or medium (bfloat16 inputs, "
        "float32 accumulation: ~4x GEMM rate on AMX CPUs); also GENWORLD_MATMUL_PRECISION",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the main job: TGW world model + policy vs BC, with a report")
    run.add_argument(
        "--scale",
        choices=["tiny", "mini", "full"],
        default="mini",
        help="mini = the ≤15 min quick start on 2 CPU cores; full = paper scale (GPU)",
    )
    run.add_argument("--envs", default="halfcheetah,hopper,walker2d")
    run.add_argument(
        "--qualities",
        default="medium",
        help="comma list: random,medium,medium-replay,medium-expert,expert",
    )
    run.add_argument("--setting", choices=["multi", "single"], default="multi")
    run.add_argument(
        "--policy",
        choices=["per_env", "per_env_batched", "shared"],
        default=None,
        help="multi-env policy mode (default per_env: one SAC per env in the shared world model)",
    )
    run.add_argument("--beta", type=float, default=None, help="override β (risk tolerance)")
    run.add_argument("--out", default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto")
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 2; use 1 per run when several run at once)",
    )
    run.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic torch kernels: the same seed gives the same report",
    )
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=_run)

    table = sub.add_parser(
        "table", help="fill the paper's Table 1: algorithms x datasets x seeds (resumable)"
    )
    table.add_argument(
        "--algos",
        default="tgw,cql,mopo,morel,prompt-dt",
        help="algorithms or variants (tgw-no-prompt, tgw-beta=0.5, ...)",
    )
    _add_table_options(table, "multi")
    table.set_defaults(func=_table)

    p = sub.add_parser("bench", help="benchmarks, as ratios to references in the same run")
    p.add_argument(
        "names",
        nargs="*",
        help="matmul_peak, algos, world_model, imagination, data_build, end_to_end (default: all)",
    )
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--plot", default=None, help="scaling curves PNG (batch, envs, ensemble)")
    p.add_argument("--quick", action="store_true", help="short measurements (smoke)")
    p.add_argument("--quick-start", action="store_true", help="also time the ~15 min quick start")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_bench)

    p = sub.add_parser("unseen", help="unseen-task generalisation (cheetah-vel, ant-dir; Fig. 4)")
    p.add_argument("--family", choices=["cheetah-vel", "ant-dir"], default="cheetah-vel")
    p.add_argument("--split", choices=["paper", "prompt-dt"], default="paper")
    p.add_argument(
        "--methods",
        default=None,
        help="comma list of tgw, tgw-finetune, tgw-newr, prompt-dt, prompt-dt-finetune (the "
        "default: all five) and bc (behaviour cloning of each task's data, the floor); a "
        "finished --out takes more methods or seeds and trains only the cells it lacks",
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="mini")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--workers", type=int, default=1, help="experts and cells side by side (processes)"
    )
    p.add_argument(
        "--train-experts",
        action="store_true",
        help="train every task expert even where a shipped one has this scale's recipe",
    )
    p.add_argument(
        "--experts",
        choices=["auto", "sac", "turned"],
        default="auto",
        help="task experts: SAC per task, or (ant-dir) the shipped Ant expert turned into each "
        "task's direction; auto: turned for ant-dir, sac otherwise",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the report from the cells finished so far",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_unseen)

    p = sub.add_parser("ablate", help="TGW ablations (Table 2): w/o prompt, w/o RSSM, w/o ri")
    _add_table_options(p, None)
    p.set_defaults(func=_ablate)

    p = sub.add_parser("sweep", help="parameter sweeps (Fig. 5)")
    sweep_sub = p.add_subparsers(dest="sweep_command", required=True)
    p = sweep_sub.add_parser("beta", help="TGW score against β (risk tolerance, eq. 6)")
    p.add_argument("--values", default="0,0.1,0.5,1,2,5")
    _add_table_options(p, "multi")
    p.set_defaults(func=_sweep)

    train = sub.add_parser("train", help="train models")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    p = train_sub.add_parser("world-model", help="train TGW or the MLP ensemble (resumable)")
    p.add_argument("--model", default="tgw", help="tgw or mlp")
    p.add_argument("--datasets", default="halfcheetah-medium,hopper-medium,walker2d-medium")
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="mini")
    p.add_argument("--steps", type=int, default=None, help="gradient steps (overrides --scale)")
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-prompt", action="store_true", help="TGW ablation: current step only")
    p.add_argument("--no-rssm", action="store_true", help="TGW ablation: no stochastic state")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train_world_model)
    _add_agnostic_parsers(train_sub)  # agnostic-iql, agnostic-ppo (torchrun-ready)

    evaluate = sub.add_parser("eval", help="evaluate trained models")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    p = eval_sub.add_parser("world-model", help="k-step open-loop errors on held-out episodes")
    p.add_argument("runs", nargs="+", help="world-model run folders (first = data + output)")
    p.add_argument("--episodes-per-env", type=int, default=256, help="start states per env")
    p.add_argument(
        "--off-data",
        default=None,
        metavar="QUALITY",
        help="also check the model's uncertainty penalty against its one-step error on held-out "
        "data and on another quality's data of the same envs (e.g. random; built if missing, "
        "as many transitions as the model's data)",
    )
    p.set_defaults(func=_eval_world_model)

    data = sub.add_parser("data", help="build, list, inspect and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("list", help="all dataset ids and which are built")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="the built datasets as a Markdown table (returns, policy scores, build times)",
    )
    p.set_defaults(func=_data_list)
    p = data_sub.add_parser("build", help="build datasets from the shipped behaviour policies")
    p.add_argument("ids", nargs="*", help="hopper-medium or genworld/hopper/medium-v0")
    p.add_argument("--all", action="store_true", help="all 20 datasets (built ones are kept)")
    p.add_argument(
        "--scale",
        choices=["tiny", "mini", "full"],
        default="full",
        help="dataset size: tiny 3k, mini 100k (the quick start's), full = D4RL sizes (default)",
    )
    p.add_argument("--steps", type=int, default=None, help="transitions (overrides --scale)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes running the collection lanes (same bytes for any number; default: 2 on a "
        "multi-core machine for builds of 200k steps or more, else 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data_build)
    p = data_sub.add_parser("train-policy", help="train a behaviour policy with SAC (resumable)")
    p.add_argument("env")
    p.add_argument("--scale", choices=["tiny", "mini", "full"], default="full")
    p.add_argument("--steps", type=int, default=None, help="env steps (overrides --scale)")
    p.add_argument("--out", default=None, help="run folder (default runs/policies/ENV-sSEED)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train_policy)
    p = data_sub.add_parser("export-policies", help="pick medium/expert snapshots of a run")
    p.add_argument("run")
    p.add_argument("--dest", default=None, help="policy folder (default: shipped assets)")
    p.add_argument(
        "--only",
        default="medium,expert",
        help="which policies to write: medium (with its replay snapshots), expert, or both",
    )
    p.set_defaults(func=_export_policies)
    p = data_sub.add_parser(
        "export-task-experts", help="ship the task experts and references of an unseen run"
    )
    p.add_argument("run", help="a `genworld unseen` output folder")
    p.add_argument("--dest", default=None, help="default: the shipped assets (assets/tasks)")
    p.set_defaults(func=_export_task_experts)
    p = data_sub.add_parser("info", help="a dataset's card and reference scores")
    p.add_argument("id")
    p.set_defaults(func=_data_info)
    p = data_sub.add_parser("check", help="validate every episode of a dataset")
    p.add_argument("id")
    p.set_defaults(func=_data_check)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's stop) takes Ctrl-C's path: checkpoints, worker processes stopped
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        from genworld.api import configure_process

        # the bench keeps freed memory itself, after measuring peers without it
        configure_process(args.matmul_precision, keep_freed_memory=args.func is not _bench)
        args.func(args)
    except GenworldError as err:
        print(f"genworld: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"genworld: interrupted{f': {stop}' if str(stop) else ''}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
