"""``genworld`` command line: parses arguments, calls ``genworld.api``, prints results.

The options of every training command are generated from its config dataclass
(:mod:`genworld.cli.options`): ``--agent.mbpo.real_ratio 0.5``, each with its docstring and
default in ``--help``, and ``--print-config`` to see the resolved config without running. A
few hand-written options are aliases (``--setting``, ``--policy``, ``--beta``) or not config
fields (``--scale``, ``--out``, ``--quiet``, ``--report-only``).

Every GenworldError (and a full disk) becomes one line on stderr and exit code 2 (no
traceback); any other error one line naming the log file that holds its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from genworld.cli import commands
from genworld.cli.commands import unseen_config
from genworld.cli.options import add_config_options
from genworld.config import SCALE_NAMES
from genworld.errors import GenworldError
from genworld.utils.io import disk_full

__all__ = ["build_parser", "main", "unseen_config"]


def _scale(p: argparse.ArgumentParser, default: str = "mini", help: str | None = None) -> None:
    p.add_argument(
        "--scale",
        choices=SCALE_NAMES,
        default=default,
        help=help or "tiny (seconds, tests), mini (a 2-core CPU) or full (the paper's protocol)",
    )


def _common(p: argparse.ArgumentParser, report_only: bool = False) -> None:
    p.add_argument("--out", default=None, help="run folder (rerun on it to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if report_only:
        p.add_argument(
            "--report-only",
            action="store_true",
            help="train nothing: write the report from the cells (runs) finished so far (a "
            "running or stopped run of the same command, or a record copied to a folder)",
        )


def _table_aliases(p: argparse.ArgumentParser, setting_default: str | None = None) -> None:
    _scale(p)
    _common(p, report_only=True)
    p.add_argument(
        "--setting",
        default=setting_default,
        help="multi, single or multi,single (short for --settings)",
    )
    p.add_argument(
        "--executor",
        "--backend",
        dest="executor",
        choices=["auto", "local", "ray"],
        default=None,
        help="where cells run with --workers > 1: ray (if installed) or a local process pool "
        "(default: auto)",
    )


# ---------------------------------------------------------------- generated options
def _run_options(p):
    from genworld.api import run_config
    from genworld.train.pipeline import RunConfig

    add_config_options(p, RunConfig, defaults=run_config("mini"))


def _table_options(p, skip=()):
    from genworld.api import table_config
    from genworld.train.table import TableConfig

    add_config_options(p, TableConfig, skip=skip, defaults=table_config("mini"))


def _unseen_options(p):
    from genworld.api import unseen_config
    from genworld.train.unseen import UnseenConfig

    add_config_options(p, UnseenConfig, skip=("shipped_experts",), defaults=unseen_config("mini"))


def _scenarios_options(p):
    from genworld.api import scenarios_config
    from genworld.train.scenarios import ScenarioStudyConfig

    add_config_options(p, ScenarioStudyConfig, defaults=scenarios_config("mini"))


def _wpt_study_options(p):
    from genworld.api import wpt_study_config
    from genworld.train.wpt_study import WPTStudyConfig

    add_config_options(p, WPTStudyConfig, skip=("scale",), defaults=wpt_study_config("mini"))


def _world_model_options(p):
    from genworld.api import world_model_config
    from genworld.train.world_model import WorldModelTrainConfig

    add_config_options(p, WorldModelTrainConfig, defaults=world_model_config("mini"))


def _pretrain_options(p):
    from genworld.api import pretrain_config
    from genworld.train.pretrain import FIXED_FIELDS
    from genworld.train.world_model import WorldModelTrainConfig

    add_config_options(
        p, WorldModelTrainConfig, skip=FIXED_FIELDS, defaults=pretrain_config("mini")
    )


def _finetune_options(p):
    from genworld.api import finetune_config
    from genworld.train.finetune import FinetuneConfig

    add_config_options(p, FinetuneConfig, skip=("scale",), defaults=finetune_config("mini"))


def _behaviour_options(p):
    from genworld.train.behaviour import BehaviourConfig

    add_config_options(p, BehaviourConfig, skip=("env", "total_steps"))


def _agnostic_iql_options(p):
    from genworld.train.dd_iql import AgnosticIQLRunConfig

    add_config_options(p, AgnosticIQLRunConfig, skip=("agent", "scale"))


def _agnostic_transfer_options(p):
    from genworld.train.transfer import AgnosticTransferConfig

    add_config_options(p, AgnosticTransferConfig, skip=("scale",))


def _agnostic_ablations_options(p):
    from genworld.train.agnostic_ablations import AgnosticAblationsConfig

    add_config_options(p, AgnosticAblationsConfig, skip=("scale",))


def _agnostic_ppo_options(p):
    from genworld.train.dd_ppo import AgnosticPPORunConfig

    add_config_options(p, AgnosticPPORunConfig, skip=("ppo", "scale"))


GENERATED: dict[tuple[str, ...], Callable[[argparse.ArgumentParser], None]] = {
    ("run",): _run_options,
    ("table",): _table_options,
    ("ablate",): lambda p: _table_options(p, skip=("algos",)),
    ("sweep", "beta"): lambda p: _table_options(p, skip=("algos",)),
    ("unseen",): _unseen_options,
    ("scenarios",): _scenarios_options,
    ("wpt-study",): _wpt_study_options,
    ("train", "world-model"): _world_model_options,
    ("pretrain", "world-model"): _pretrain_options,
    ("finetune",): _finetune_options,
    ("train", "agnostic-iql"): _agnostic_iql_options,
    ("train", "agnostic-ppo"): _agnostic_ppo_options,
    ("train", "agnostic-transfer"): _agnostic_transfer_options,
    ("train", "agnostic-ablations"): _agnostic_ablations_options,
    ("data", "train-policy"): _behaviour_options,
}
"""Commands whose options come from a config dataclass. They are generated for the command
being parsed only, so that ``genworld data list`` does not import the training stack."""


def _command_path(argv: list[str]) -> tuple[str, ...]:
    """The subcommand words of ``argv`` (``("train", "world-model")``)."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    return tuple(words[:2])


# ---------------------------------------------------------------- the parser
class _Parser(argparse.ArgumentParser):
    """An argparse parser that takes options only as spelled: a prefix of a long option is an
    error, so ``--seed`` on a command that only has ``--seeds`` is refused rather than read as it.
    Subcommand parsers are of the same class (``add_subparsers`` uses the parent's type)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole ``genworld`` parser; the generated options are added to the subcommand that
    ``argv`` names (all of them when ``argv`` is None)."""
    parser = _Parser(
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
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    p = parsers["run",] = sub.add_parser(
        "run", help="the main job: TGW world model + policy vs BC, with a report"
    )
    _scale(p, help="mini = the ≤15 min quick start on 2 CPU cores; full = paper scale (GPU)")
    _common(p)
    p.add_argument("--policy", default=None, help="short for --agent.mbpo.policy")
    p.add_argument("--beta", type=float, default=None, help="short for --agent.mbpo.beta (β)")
    p.set_defaults(func=commands.run)

    p = parsers["table",] = sub.add_parser(
        "table", help="fill the paper's Table 1: algorithms x datasets x seeds (resumable)"
    )
    _table_aliases(p)
    p.set_defaults(func=commands.table)

    p = sub.add_parser("bench", help="benchmarks, as ratios to references in the same run")
    p.add_argument(
        "names",
        nargs="*",
        help="matmul_peak, algos, world_model, imagination, data_build, data_build_dmc, "
        "end_to_end, agnostic, scenario_models, cmt, rssm (default: all)",
    )
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--plot", default=None, help="scaling curves PNG (batch, envs, ensemble)")
    p.add_argument("--quick", action="store_true", help="short measurements (smoke)")
    p.add_argument("--quick-start", action="store_true", help="also time the ~15 min quick start")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=commands.bench)

    p = sub.add_parser("results", help="the headline results, from the study records")
    p.add_argument("--records", default=None, help="records folder (default: docs/results)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--markdown", action="store_true", help="the table docs/RESULTS.md shows")
    view.add_argument("--json", action="store_true", help="every row as JSON")
    p.set_defaults(func=commands.results)

    p = sub.add_parser(
        "status",
        help="a study folder's cells: finished, failed, training, stopped, waiting; time left",
    )
    p.add_argument(
        "out",
        nargs="+",
        help="the --out folders of table, ablate, sweep, unseen, scenarios or wpt-study commands "
        "(running or stopped)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the whole status, every cell, as JSON (a list with several folders)",
    )
    p.set_defaults(func=commands.status)

    p = parsers["unseen",] = sub.add_parser(
        "unseen",
        help="unseen-task generalisation (cheetah-vel, ant-dir; Fig. 4) and CMT's meta-RL "
        "ablations (ant-fwd-back; seed 001 Fig. 5)",
    )
    _scale(p)
    _common(p, report_only=True)
    p.add_argument(
        "--train-experts",
        action="store_true",
        help="train every task expert even where a shipped one has this scale's recipe",
    )
    p.add_argument(
        "--experts",
        choices=["auto", "sac", "turned"],
        default=None,
        help="task experts: SAC per task, or (ant-dir) the shipped Ant expert turned into each "
        "task's direction; auto (the default): turned for ant-dir, sac otherwise",
    )
    p.set_defaults(func=commands.unseen)

    p = parsers["scenarios",] = sub.add_parser(
        "scenarios",
        help="MrCoM's studies on DMC scenarios (seed 002): --study multi|dynamics|perturb|"
        "single|behaviour",
    )
    _scale(p)
    _common(p, report_only=True)
    p.set_defaults(func=commands.scenarios)

    p = parsers["wpt-study",] = sub.add_parser(
        "wpt-study",
        help="WPT's comparison (seed 004): scratch / P / P+ER / P+ER+G on target tasks × seeds, "
        "learning curves with CIs (resumable)",
    )
    _scale(p)
    _common(p, report_only=True)
    p.set_defaults(func=commands.wpt_study)

    p = parsers["ablate",] = sub.add_parser(
        "ablate", help="TGW ablations (Table 2): w/o prompt, w/o RSSM, w/o ri"
    )
    _table_aliases(p)
    p.set_defaults(func=commands.ablate)

    p = sub.add_parser("sweep", help="parameter sweeps (Fig. 5)")
    sweep_sub = p.add_subparsers(dest="sweep_command", required=True)
    p = parsers["sweep", "beta"] = sweep_sub.add_parser(
        "beta", help="TGW score against β (risk tolerance, eq. 6)"
    )
    p.add_argument("--values", default="0,0.1,0.5,1,2,5", help="β values, comma-separated")
    _table_aliases(p, "multi")
    p.set_defaults(func=commands.sweep)

    train = sub.add_parser("train", help="train models")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    p = parsers["train", "world-model"] = train_sub.add_parser(
        "world-model", help="train TGW or the MLP ensemble (resumable; DDP under torchrun)"
    )
    _scale(p)
    _common(p)
    p.add_argument("--no-prompt", action="store_true", help="TGW ablation: current step only")
    p.add_argument("--no-rssm", action="store_true", help="TGW ablation: no stochastic state")
    p.set_defaults(func=commands.train_world_model)
    p = parsers["train", "agnostic-iql"] = train_sub.add_parser(
        "agnostic-iql",
        help="DD-IQL: IQL with agnostic networks on several datasets (torchrun-ready, resumable)",
    )
    _scale(p)
    _common(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per update over all envs (default: the scale's preset)",
    )
    p.set_defaults(func=commands.agnostic_iql)
    p = parsers["train", "agnostic-ppo"] = train_sub.add_parser(
        "agnostic-ppo", help="DD-PPO: PPO with agnostic networks on several envs (torchrun-ready)"
    )
    _scale(p)
    _common(p)
    p.set_defaults(func=commands.agnostic_ppo)
    p = parsers["train", "agnostic-transfer"] = train_sub.add_parser(
        "agnostic-transfer",
        help="pretrain agnostic IQL on some envs, fine-tune on a held-out env of other sizes "
        "vs from scratch (resumable; report and plot)",
    )
    _scale(p)
    _common(p, report_only=True)
    p.set_defaults(func=commands.agnostic_transfer)
    p = parsers["train", "agnostic-ablations"] = train_sub.add_parser(
        "agnostic-ablations",
        help="the agnostic agent vs its Bi-GRU-encoder ablation, the env-specific agent and "
        "matched single-env IQL on the same datasets (resumable; report, ratio with a CI, plot)",
    )
    _scale(p)
    _common(p, report_only=True)
    p.set_defaults(func=commands.agnostic_ablations)

    pretrain = sub.add_parser("pretrain", help="reward-free pre-training (WPT)")
    pretrain_sub = pretrain.add_subparsers(dest="pretrain_command", required=True)
    p = parsers["pretrain", "world-model"] = pretrain_sub.add_parser(
        "world-model",
        help="pre-train the RSSM without rewards on several embodiments' data (WPT eq. 1; "
        "resumable)",
    )
    _scale(p)
    _common(p)
    p.set_defaults(func=commands.pretrain_world_model)

    p = parsers["finetune",] = sub.add_parser(
        "finetune",
        help="fine-tune a pre-trained RSSM online on a target task (WPT: p, p+er, p+er+g, "
        "scratch; resumable)",
    )
    _scale(p)
    _common(p)
    p.set_defaults(func=commands.finetune)

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
    p.set_defaults(func=commands.eval_world_model)

    _data_parsers(sub, parsers)
    _algos_parsers(sub)
    wanted = (
        GENERATED
        if argv is None
        else {k: GENERATED[k] for k in [_command_path(argv)] if k in GENERATED}
    )
    for path, add in wanted.items():
        add(parsers[path])
    return parser


def _algos_parsers(sub) -> None:
    algos = sub.add_parser(
        "algos", help="the algorithms --algos takes, and a contract check for your own"
    )
    algos_sub = algos.add_subparsers(dest="algos_command", required=True)
    p = algos_sub.add_parser(
        "list", help="genworld's algorithms, registered plugins and named variants"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.algos_list)
    p = algos_sub.add_parser(
        "check",
        help="build, update, act, checkpoint and play an episode with an algorithm on two "
        "envs of different sizes (exit 1 when a check fails)",
    )
    p.add_argument("name", help="a name of `genworld algos list` (plugins: GENWORLD_ALGOS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.algos_check)


def _data_parsers(sub, parsers: dict) -> None:
    data = sub.add_parser("data", help="build, list, inspect and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("list", help="all dataset ids and which are built")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="the built datasets as a Markdown table (returns, policy scores, build times)",
    )
    p.set_defaults(func=commands.data_list)
    p = data_sub.add_parser("build", help="build datasets from the shipped behaviour policies")
    p.add_argument("ids", nargs="*", help="hopper-medium or genworld/hopper/medium-v0")
    p.add_argument("--all", action="store_true", help="all 20 datasets (built ones are kept)")
    _scale(
        p,
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
    p.set_defaults(func=commands.data_build)
    p = parsers["data", "train-policy"] = data_sub.add_parser(
        "train-policy", help="train a behaviour policy with SAC (resumable)"
    )
    p.add_argument("env")
    _scale(p, default="full")
    p.add_argument("--steps", type=int, default=None, help="env steps (overrides --scale)")
    _common(p)
    p.set_defaults(func=commands.train_policy)
    p = data_sub.add_parser("export-policies", help="pick medium/expert snapshots of a run")
    p.add_argument("run")
    p.add_argument("--dest", default=None, help="policy folder (default: shipped assets)")
    p.add_argument(
        "--only",
        default="medium,expert",
        help="which policies to write: medium (with its replay snapshots), expert, or both",
    )
    p.set_defaults(func=commands.export_policies)
    p = data_sub.add_parser(
        "export-task-experts", help="ship the task experts and references of an unseen run"
    )
    p.add_argument("run", help="a `genworld unseen` output folder")
    p.add_argument("--dest", default=None, help="default: the shipped assets (assets/tasks)")
    p.set_defaults(func=commands.export_task_experts)
    p = data_sub.add_parser("info", help="a dataset's card and reference scores")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="the whole card as JSON")
    p.set_defaults(func=commands.data_info)
    p = data_sub.add_parser("check", help="validate every episode of a dataset")
    p.add_argument("id")
    p.set_defaults(func=commands.data_check)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # SIGTERM (a scheduler's stop) takes Ctrl-C's path: checkpoints, worker processes stopped
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = build_parser(_strip_global(argv)).parse_args(argv)
        from genworld.api import configure_process

        # the bench keeps freed memory itself, after measuring peers without it
        configure_process(args.matmul_precision, keep_freed_memory=args.func is not commands.bench)
        code = args.func(args)  # a command returns an exit code only to fail without an error
    except GenworldError as err:
        print(f"genworld: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"genworld: interrupted{f': {stop}' if str(stop) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `genworld data list | head`: the reader has all it wanted
        _silence_stdout()
        return 141  # as a process killed by SIGPIPE
    except Exception as err:
        if full := disk_full(err):  # not a bug: the fix is the user's
            print(f"genworld: error: {full}", file=sys.stderr)
            return 2
        if os.environ.get(TRACEBACK_ENV):
            raise
        return _internal_error(err, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code or 0


TRACEBACK_ENV = "GENWORLD_TRACEBACK"
"""Set (to anything) to get internal errors as a Python traceback instead of one line and a log."""


def _internal_error(err: Exception, argv: list[str]) -> int:
    """One line for a bug (exit 1); its traceback goes to a log file the line names."""
    import tempfile
    import time
    import traceback
    from pathlib import Path

    log = (
        Path(tempfile.gettempdir())
        / f"genworld-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    )
    text = f"genworld {' '.join(argv)}\n\n" + "".join(traceback.format_exception(err))
    try:
        log.write_text(text)
        where = f"the traceback is in {log}"
    except OSError:
        where = f"rerun with {TRACEBACK_ENV}=1 for the traceback"
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    print(
        f"genworld: internal error: {type(err).__name__}{f': {reason}' if reason else ''} "
        f"({where}; please report it)",
        file=sys.stderr,
    )
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into the closed pipe
    does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output)
        pass


def _strip_global(argv: list[str]) -> list[str]:
    """``argv`` without the global options before the subcommand."""
    out = list(argv)
    while out and out[0].startswith("--matmul-precision"):
        out = out[1:] if "=" in out[0] else out[2:]
    return out


if __name__ == "__main__":
    sys.exit(main())
