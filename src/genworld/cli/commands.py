"""The ``genworld`` commands: each builds its config, makes one ``genworld.api`` call and prints
what it returned."""

from __future__ import annotations

import json
import os

from genworld.cli.options import overrides_from, print_config
from genworld.config import merge
from genworld.errors import GenworldError


def data_list(args) -> None:
    from genworld.api import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if args.markdown:
        from genworld.api import datasets_markdown

        print(datasets_markdown(rows))
        return
    print(f"{'dataset':<40} {'built':<6} {'steps':>10}  {'normalized return':>17}  note")
    for row in rows:
        built = "yes" if row["built"] else "-"
        steps = normalized = note = ""
        if row.get("steps") is not None:
            steps, normalized = f"{row['steps']:,}", f"{row['normalized_mean']:.1f}"
        elif row.get("missing_policies"):
            note = f"not buildable yet: needs policy {', '.join(row['missing_policies'])}"
        print(f"{row['dataset_id']:<40} {built:<6} {steps:>10}  {normalized:>17}  {note}".rstrip())


def data_build(args) -> None:
    from genworld.api import (
        DATASET_SCALES,
        all_dataset_ids,
        build_dataset,
        build_lanes,
        missing_policies,
    )

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
            steps=DATASET_SCALES[args.scale] if args.steps is None else args.steps,
            seed=args.seed,
            force=args.force,
            cached=args.all,
            workers=workers,
            show_progress=not args.quiet,
        )
        if card.get("cached"):
            print(f"{card['dataset_id']}: already built (cached; --force rebuilds it)")
            continue
        cut = card.get("budget_cut_episodes", 0)
        print(
            f"{card['dataset_id']}: {card['steps']} steps, {card['episodes']} episodes"
            + (
                f" ({cut} cut short by the step budget: see `genworld data info`)"
                if 2 * cut > card["episodes"]
                else ""
            )
            + f", normalized return {card['normalized_mean']:.1f} ± {card['normalized_std']:.1f}, "
            f"{card['build_steps_per_second']:.0f} steps/s"
        )
    if skipped:
        raise GenworldError(
            f"{len(skipped)} of {len(ids)} datasets not built, their behaviour policies are not "
            f"shipped yet: {'; '.join(skipped)}. Train them with `genworld data train-policy ENV`"
            " and `genworld data export-policies RUN`"
        )


def data_info(args) -> None:
    from genworld.api import dataset_info, info_card

    info = dataset_info(args.id)
    print(json.dumps(info, indent=2) if args.json else info_card(info))


def data_check(args) -> None:
    from genworld.api import check_dataset

    report = check_dataset(args.id)
    print(
        f"{report['dataset_id']}: OK ({report['episodes']} episodes, {report['steps']} steps, "
        f"normalized return {report['normalized_mean']:.1f})"
    )


def train_policy(args) -> None:
    from genworld.api import behaviour_config, train_policy

    cfg = behaviour_config(args.env, args.scale, steps=args.steps, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/policies/{args.env}-s{cfg.seed}"
    out = train_policy(cfg, out, show_progress=not args.quiet)
    print(f"trained {args.env}: {out} (export with `genworld data export-policies {out}`)")


def export_task_experts(args) -> None:
    from genworld.api import export_task_experts

    family = export_task_experts(args.run, args.dest)
    for index, (low, high) in sorted(family["reference_returns"].items(), key=lambda x: int(x[0])):
        print(f"{family['family']}-{index}: random {low:.1f}, expert {high:.1f}")


def export_policies(args) -> None:
    from genworld.api import export_policies

    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    cards = export_policies(args.run, args.dest, only=only)
    for name, card in cards.items():
        target = card["extra"].get("in_target")
        print(
            f"{card['env']}-{name}: step {card['train_steps']}, normalized "
            f"{card['eval_normalized']:.1f} (stochastic)"
            + (f", in target: {target}" if target is not None else "")
            + (
                f", {len(card['extra']['exploration_snapshots'])} slices (warm-up + snapshots)"
                if "exploration_snapshots" in card["extra"]
                else ""
            )
        )


def train_world_model(args) -> None:

    from genworld.api import train_world_model, world_model_config

    over = overrides_from(args)
    ablation = {"use_prompt": False} if args.no_prompt else {}
    ablation |= {"use_stochastic": False} if args.no_rssm else {}
    if ablation and over.get("model", "tgw") != "tgw":
        raise GenworldError(
            "--no-prompt and --no-rssm are TGW ablations: use them with --model tgw"
        )
    cfg = world_model_config(args.scale, **merge(over, {"tgw": ablation}))
    if printed(args, cfg):
        return
    out = args.out or f"runs/world_models/{cfg.model}__{'+'.join(cfg.datasets)}__s{cfg.seed}"
    out = train_world_model(cfg, out, show_progress=not args.quiet)  # DDP under torchrun
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"world model trained: {out} (evaluate with `genworld eval world-model {out}`)")


def pretrain_world_model(args) -> None:
    from genworld.api import pretrain_config, pretrain_world_model

    cfg = pretrain_config(args.scale, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/pretrain/rssm__{args.scale}__s{cfg.seed}"
    out = pretrain_world_model(cfg, out, show_progress=not args.quiet)  # DDP under torchrun
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"world model pre-trained: {out} (evaluate with `genworld eval world-model {out}`)")


def finetune(args) -> None:
    from genworld.api import finetune, finetune_config

    cfg = finetune_config(args.scale, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/finetune/{cfg.task}__{cfg.variant}__{args.scale}__s{cfg.seed}"
    result = finetune(cfg, out, show_progress=not args.quiet)
    print(result.markdown)
    print(f"fine-tuned: {result.out} (report.md, report.json, curve.png, eval.jsonl)")


def eval_world_model(args) -> None:
    from genworld.api import evaluate_world_model

    result = evaluate_world_model(
        args.runs, episodes_per_env=args.episodes_per_env, off_data=args.off_data
    )
    for path in result.files:
        if path.suffix == ".md":
            print(path.read_text())
    print(f"written: {', '.join(str(p) for p in result.files)} (and .json beside each .md)")


def run(args) -> None:
    from genworld.api import run, run_config

    cfg = run_config(args.scale, policy=args.policy, beta=args.beta, **overrides_from(args))
    if printed(args, cfg):
        return
    out = (
        args.out or f"runs/run__{cfg.setting}__{'+'.join(cfg.qualities)}__{cfg.scale}__s{cfg.seed}"
    )
    result = run(cfg, out, show_progress=not args.quiet)
    print(result.markdown)
    print(f"run directory: {result.out} ({result.summary['wall_seconds']:.0f} s)")


def table(args) -> None:
    from genworld.api import table, table_config

    cfg = table_config(args.scale, **table_options(args))
    files = "table.md, table.csv, table.json, profile_*.png"
    study(args, cfg, table, f"runs/table__{cfg.scale}", "table", files)


def study(args, cfg, command, out: str, kind: str, files: str) -> None:
    """The study commands' shared end: ``--print-config``, or the study (``--report-only``:
    the report of the cells finished so far) into ``--out`` (default ``out``), its Markdown
    report and where its ``files`` are."""
    if printed(args, cfg):
        return
    result = command(
        cfg, args.out or out, show_progress=not args.quiet, report_only=args.report_only
    )
    print(result.markdown)
    print(f"{kind} directory: {result.out} ({files})")


def bench(args) -> None:
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


def results(args) -> None:
    from genworld.api import results

    found = results(args.records).summary
    if args.markdown:
        print(found["markdown"], end="")
        return
    if args.json:
        print(json.dumps(found["studies"], indent=2, ensure_ascii=False))
        return
    for row in found["studies"]:
        print(f"{row['study']}  [{row['folder']}]\n  {row['result']}")
        print(f"  {row['protocol']}; code {row['code']}")
        if row["caveat"]:
            print(f"  read with: {row['caveat']}")


def algos_list(args) -> None:
    from genworld.api import algorithms

    rows = algorithms()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['source']:<10}  {row['builder']}")


def algos_check(args) -> int:
    from genworld.api import check_algorithm

    found = check_algorithm(args.name)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(f"{found['algo']} ({found['builder']})")
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        for check in found["checks"]:
            print(f"  {marks[check['ok']]}  {check['name']:<10}  {check['detail']}")
        verdict = "keeps the agent contract" if found["ok"] else "does not keep the contract"
        print(f"{found['algo']} {verdict}")
    return 0 if found["ok"] else 1


def status(args) -> None:
    from genworld.api import status

    found = [status(out).summary for out in args.out]  # every folder checked before printing
    if args.json:
        print(json.dumps(found[0] if len(found) == 1 else found, indent=2, ensure_ascii=False))
        return
    for summary in found:
        for line in status_lines(summary):
            print(line)


def status_lines(found: dict) -> list[str]:
    """The status of a study folder, a few lines for people."""
    counts = found["counts"]
    running = "running" if found["running"] else "not running"
    lines = [f"{found['folder']}: {found['command']}, {running}"]
    lines.append(
        f"  {found['planned']} cells: "
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n or state == "finished")
    )
    for model in found["models"]:
        if model["state"] != "finished":
            lines.append(
                f"  shared model {model['folder']}: step {model['step']:,} of {model['steps']:,}"
                + (" (training)" if model["state"] == "training" else "")
            )
    for row in found["cells"]:
        if row["state"] in ("training", "stopped", "failed"):
            detail = row.get("error") or (
                f"step {row['step']:,}" if row.get("step") is not None else "no step logged yet"
            )
            lines.append(f"  {row['state']}: {row['folder']} ({detail})")
    if found["hours_left"] is not None and found["planned"] > counts["finished"]:
        paces = ", ".join(
            f"{kind} {entry['mean_minutes']:g} min"
            for kind, entry in found["kinds"].items()
            if entry["mean_minutes"] is not None
        )
        unpaced = sum(
            e["planned"] - e["finished"]
            for e in found["kinds"].values()
            if e["mean_minutes"] is None
        )
        guess = (
            f"; {unpaced} cells of kinds with none finished at the mean of all" if unpaced else ""
        )
        running = counts["training"]  # one process (or worker) per training cell
        wall = (
            f"about {found['hours_left'] / running:.1f} hours at the {running} running now"
            if running
            else "divide by the processes that will run it"
        )
        lines.append(
            f"  left: about {found['hours_left']:g} hours of cell time (finished cells' mean: "
            f"{paces}{guess}); {wall}"
        )
    if found["elsewhere"]:
        lines.append(f"  also finished here: {found['elsewhere']} cells another command planned")
    if found["assumed"]:
        lines.append(
            "  planned with the defaults of " + ", ".join(found["assumed"]) + ": the folder "
            "does not record them (rerun its command once to record them)"
        )
    return lines


def unseen_config(args):
    """The ``UnseenConfig`` of ``genworld unseen``'s arguments (``--train-experts`` with
    ``--experts auto`` trains SAC experts for every family, ant-dir included)."""
    from genworld.api import unseen_config as config_for_scale

    experts = "sac" if args.train_experts and args.experts in (None, "auto") else args.experts
    return config_for_scale(
        args.scale,
        shipped_experts=not args.train_experts,
        experts=experts,
        **overrides_from(args),
    )


def unseen(args) -> None:
    from genworld.api import unseen

    cfg = unseen_config(args)
    out, files = (
        f"runs/unseen__{cfg.family}__{cfg.scale}",
        "unseen.md, unseen.json, unseen_tasks.png",
    )
    study(args, cfg, unseen, out, "unseen-task", files)


def scenarios(args) -> None:
    from genworld.api import scenarios, scenarios_config

    cfg = scenarios_config(args.scale, **overrides_from(args))
    out, files = (
        f"runs/scenarios__{cfg.study}__{cfg.scale}",
        "scenarios.md, scenarios.json, scenarios.png",
    )
    study(args, cfg, scenarios, out, "scenarios", files)


def wpt_study(args) -> None:
    from genworld.api import wpt_study, wpt_study_config

    cfg = wpt_study_config(args.scale, **overrides_from(args))
    files = "wpt_study.md, wpt_study.json, wpt_study.png"
    study(args, cfg, wpt_study, f"runs/wpt_study__{cfg.scale}", "wpt-study", files)


def table_options(args) -> dict:
    """The table config's overrides: the generated options and the ``--setting`` alias."""
    settings = tuple(x for x in args.setting.split(",") if x) if args.setting else None
    return {"settings": settings, "executor": args.executor, **overrides_from(args)}


def ablate(args) -> None:
    from genworld.api import ablate, ablation_config

    cfg = ablation_config(args.scale, **table_options(args))
    study(args, cfg, ablate, f"runs/ablate__{args.scale}", "ablation", "table.md, table.json")


def sweep(args) -> None:
    from genworld.api import sweep_beta, sweep_config

    try:
        values = tuple(float(v) for v in args.values.split(",") if v)
    except ValueError:
        raise GenworldError(f"--values {args.values!r}: give numbers, e.g. 0,0.5,1") from None
    cfg = sweep_config(values, args.scale, **table_options(args))
    study(
        args, cfg, sweep_beta, f"runs/sweep_beta__{args.scale}", "sweep", "table.md, beta_sweep.png"
    )


def agnostic_iql(args) -> None:
    from genworld.api import agnostic_iql_config, train_agnostic_iql

    if args.batch_size is not None and args.batch_size <= 0:
        raise GenworldError(f"--batch-size must be positive; got {args.batch_size}")
    agent = {"batch_size": args.batch_size} if args.batch_size is not None else {}
    cfg = agnostic_iql_config(scale=args.scale, agent=agent, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/agnostic_iql__{'+'.join(cfg.datasets)}__{cfg.scale}__s{cfg.seed}"
    records = train_agnostic_iql(cfg, out, show_progress=not args.quiet)
    if records:
        last = records[-1]
        print(
            f"agnostic-iql: {last['step']} updates, normalized score "
            f"{last['eval/normalized_score_mean']:.1f}; run directory: {out}"
        )


def agnostic_transfer(args) -> None:
    from genworld.api import agnostic_transfer as run
    from genworld.api import agnostic_transfer_config

    cfg = agnostic_transfer_config(scale=args.scale, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/agnostic_transfer__{cfg.target}__{cfg.scale}__s{cfg.seed}"
    result = run(cfg, out, show_progress=not args.quiet, report_only=args.report_only)
    s = result.summary["summary"]
    print(
        f"agnostic-transfer to {result.summary['target']}: last-{cfg.last_k} score "
        f"{s['finetune']['last_k']['mean']:.1f} fine-tuned vs "
        f"{s['scratch']['last_k']['mean']:.1f} from scratch (mean of "
        f"{len(result.summary['seeds'])} seed(s)); "
        f"report: {result.out / 'report.md'}"
    )


def agnostic_ablations(args) -> None:
    from genworld.api import agnostic_ablations as run
    from genworld.api import agnostic_ablations_config

    cfg = agnostic_ablations_config(scale=args.scale, **overrides_from(args))
    if printed(args, cfg):
        return
    result = run(cfg, args.out or f"runs/agnostic_ablations__{cfg.scale}__n{cfg.seeds}",
                 show_progress=not args.quiet, report_only=args.report_only)  # fmt: skip
    print(result.markdown)
    print(f"agnostic-ablations directory: {result.out} (report.md, report.json, curves.png)")


def agnostic_ppo(args) -> None:
    from genworld.api import agnostic_ppo_config, train_agnostic_ppo

    cfg = agnostic_ppo_config(scale=args.scale, **overrides_from(args))
    if printed(args, cfg):
        return
    out = args.out or f"runs/agnostic_ppo__{cfg.scale}__s{cfg.seed}"
    result = train_agnostic_ppo(cfg, out, show_progress=not args.quiet)
    if result:
        returns = ", ".join(f"{k} {v:.1f}" for k, v in result.items())
        print(f"agnostic-ppo: returns {returns}; run directory: {out}")


def printed(args, cfg) -> bool:
    """``--print-config``: print the resolved config as JSON (and run nothing)."""
    if getattr(args, "print_config", False):
        print_config(cfg)
        return True
    return False
