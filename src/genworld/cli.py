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
        from genworld.data.info import markdown_table

        print(markdown_table(rows))
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
    from genworld.api import all_dataset_ids, build_dataset

    if args.all == bool(args.ids):
        raise GenworldError("give dataset ids (hopper-medium ...) or --all, not both or neither")
    ids = [str(d) for d in all_dataset_ids()] if args.all else args.ids
    # default: one process per lane on a multi-core machine (a build whose segments all fit
    # one lane starts no pool: build_dataset decides)
    from genworld.data.build import LANES

    workers = args.workers if args.workers is not None else max(1, min(LANES, os.cpu_count() or 1))
    skipped = []
    for dataset_id in ids:
        if args.all:  # build what the shipped policies allow, then say what is missing
            from genworld.data.build import missing_policies

            if missing := missing_policies(dataset_id):
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
    from pathlib import Path

    from genworld.train.behaviour import SCALES, BehaviourConfig, train_behaviour_policy

    steps = args.steps or SCALES[args.scale]
    cfg = BehaviourConfig(
        env=args.env,
        total_steps=steps,
        seed=args.seed,
        device=args.device,
        learning_starts=min(5_000, steps // 3),
        snapshot_every=min(10_000, max(steps // 10, 1)),
        checkpoint_every=min(25_000, steps),
        eval_episodes=args.eval_episodes,
    )
    out = Path(args.out or f"runs/policies/{args.env}-s{args.seed}")
    train_behaviour_policy(cfg, out, show_progress=not args.quiet)
    print(f"trained {args.env}: {out} (export with `genworld data export-policies {out}`)")


def _export_task_experts(args) -> None:
    from pathlib import Path

    from genworld.train.unseen import export_task_experts

    family = export_task_experts(Path(args.run), Path(args.dest) if args.dest else None)
    for index, (low, high) in sorted(family["reference_returns"].items(), key=lambda x: int(x[0])):
        print(f"{family['family']}-{index}: random {low:.1f}, expert {high:.1f}")


def _export_policies(args) -> None:
    from pathlib import Path

    from genworld.data.build import policy_dir
    from genworld.train.behaviour import export_policies

    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    dest = Path(args.dest) if args.dest else policy_dir()
    cards = export_policies(Path(args.run), dest, only=only)
    for name, card in cards.items():
        print(
            f"{card['env']}-{name}: step {card['train_steps']}, normalized "
            f"{card['eval_normalized']:.1f} (stochastic), in target: {card['extra']['in_target']}"
        )


def _train_world_model(args) -> None:
    from pathlib import Path

    from genworld.train.world_model import config_for_scale, train_world_model

    if (args.no_prompt or args.no_rssm) and args.model != "tgw":
        raise GenworldError(
            "--no-prompt and --no-rssm are TGW ablations: use them with --model tgw"
        )
    cfg = config_for_scale(
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
    out = Path(
        args.out or f"runs/world_models/{args.model}__{'+'.join(cfg.datasets)}__s{args.seed}"
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: DDP, rank-sharded batches
        from genworld.train.distributed import train_world_model_ddp

        train_world_model_ddp(cfg, out, show_progress=not args.quiet)
    else:
        train_world_model(cfg, out, show_progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"world model trained: {out} (evaluate with `genworld eval world-model {out}`)")


def _eval_world_model(args) -> None:
    import json
    from pathlib import Path

    from genworld.eval.wm_metrics import error_table, evaluate_runs, plot_errors

    runs = [Path(r) for r in args.runs]
    named = evaluate_runs(runs, per_env=args.episodes_per_env)
    table = error_table(named)
    print(table)
    out = runs[0] / "eval"
    out.mkdir(exist_ok=True)
    (out / "k_step_errors.md").write_text(table + "\n")
    (out / "k_step_errors.json").write_text(json.dumps(named, indent=2))
    plot_errors(named, out / "k_step_errors.png")
    print(f"written: {out}/k_step_errors.md, .json, .png")
    if args.off_data:
        _penalty_calibration(runs[0], args.off_data, args.episodes_per_env, out)


def _penalty_calibration(run, quality: str, per_env: int, out) -> None:
    import json

    from genworld.data.build import ensure_built
    from genworld.data.ids import parse_dataset_id
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.eval.wm_metrics import calibration_table, penalty_calibration
    from genworld.train.world_model import load_trained

    _, model, train, held = load_trained(run)
    ids = [str(parse_dataset_id(f"{spec.name}-{quality}")) for spec in held.specs]
    for dataset_id, a, b in zip(ids, train.envs, held.envs, strict=True):
        ensure_built([dataset_id], steps=len(a) + len(b), show_progress=True)  # the model's size
    named = {
        "held-out": penalty_calibration(model, held, model.normalizer, per_env),
        quality: penalty_calibration(
            model, MultiEnvDataset.from_minari(ids), model.normalizer, per_env
        ),
    }
    table = calibration_table(named)
    print(table)
    (out / "penalty_calibration.md").write_text(table + "\n")
    (out / "penalty_calibration.json").write_text(json.dumps(named, indent=2))
    print(f"written: {out}/penalty_calibration.md, .json")


def _run(args) -> None:
    from pathlib import Path

    from genworld.train.pipeline import config_for_scale, run

    cfg = config_for_scale(
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
    out = Path(
        args.out or f"runs/run__{cfg.setting}__{'+'.join(cfg.qualities)}__{cfg.scale}__s{cfg.seed}"
    )
    report = run(cfg, out, show_progress=not args.quiet)
    print((out / "report.md").read_text())
    print(f"run directory: {out} ({report['wall_seconds']:.0f} s)")


def _table(args) -> None:
    from pathlib import Path

    from genworld.train.table import config_for_scale, run_table

    algos = tuple(x for x in args.algos.split(",") if x)
    cfg = config_for_scale(args.scale, algos=algos, **_table_options(args))
    out = Path(args.out or f"runs/table__{cfg.scale}")
    run_table(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print((out / "table.md").read_text())
    print(f"table directory: {out} (table.md, table.csv, table.json, profile_*.png)")


def _bench(args) -> None:
    from pathlib import Path

    from genworld.bench import run_benchmarks, write_json

    results = run_benchmarks(
        args.names,
        quick=args.quick,
        plot=Path(args.plot) if args.plot else None,
        quick_start=args.quick_start,
        threads=args.threads,
    )
    if args.json:
        write_json(results, Path(args.json))
        print(f"written: {args.json}")


def unseen_config(args):
    """The ``UnseenConfig`` of ``genworld unseen``'s arguments (``--train-experts`` with
    ``--experts auto`` trains SAC experts for every family, ant-dir included)."""
    from genworld.train.unseen import config_for_scale

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
    from pathlib import Path

    from genworld.train.unseen import run_unseen

    cfg = unseen_config(args)
    out = Path(args.out or f"runs/unseen__{cfg.family}__{cfg.scale}")
    run_unseen(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    print((out / "unseen.md").read_text())
    print(f"unseen-task directory: {out} (unseen.md, unseen.json, unseen_tasks.png)")


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
    from pathlib import Path

    from genworld.train.studies import ablate

    out = Path(args.out or f"runs/ablate__{args.scale}")
    ablate(
        out,
        scale=args.scale,
        show_progress=not args.quiet,
        report_only=args.report_only,
        **_table_options(args),
    )
    print((out / "table.md").read_text())
    print(f"ablation directory: {out}")


def _sweep(args) -> None:
    from pathlib import Path

    from genworld.train.studies import sweep_beta

    try:
        values = tuple(float(v) for v in args.values.split(",") if v)
    except ValueError:
        raise GenworldError(f"--values {args.values!r}: give numbers, e.g. 0,0.5,1") from None
    out = Path(args.out or f"runs/sweep_beta__{args.scale}")
    options = _table_options(args)
    sweep_beta(
        values,
        out,
        scale=args.scale,
        show_progress=not args.quiet,
        report_only=args.report_only,
        **options,
    )
    print((out / "table.md").read_text())
    print(f"sweep directory: {out} (beta_sweep.png)")


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
    from genworld.train.distributed import add_agnostic_parser

    add_agnostic_parser(train_sub)  # agnostic-iql, agnostic-ppo (torchrun-ready)

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
        from genworld.utils.allocator import keep_freed_memory
        from genworld.utils.device import PRECISION_ENV, set_matmul_precision

        if args.matmul_precision:  # for this process and the worker processes it starts
            os.environ[PRECISION_ENV] = args.matmul_precision
        set_matmul_precision(args.matmul_precision)
        if args.func is not _bench:  # the bench sets it after measuring peers without it
            keep_freed_memory()  # no page faults per step on large tensors (utils/allocator.py)
        args.func(args)
    except GenworldError as err:
        print(f"genworld: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genworld: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
