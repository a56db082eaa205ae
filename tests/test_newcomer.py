"""A newcomer's first hour and a hostile hour (issue 33): no silent wrong sizes, one-line errors
that name the fix instead of tracebacks, nothing written by a refused command, no silent
overwrites or races, no leftovers after faults, readable output. One test (or more) per class;
the end-to-end CLI and kill scenarios carry the integration marker."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from genworld.cli import main
from genworld.errors import GenworldError
from genworld.utils.io import check_or_write_config, claim


def _one_line_error(capsys, argv, *expected) -> str:
    """``genworld argv`` fails with exit 2 and one line on stderr holding every ``expected``."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("genworld: error:") and "\n" not in err, err
    for text in expected:
        assert text in err, (text, err)
    return err


def _fake_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A `genworld run` folder's config.json and its world model's (no training needed)."""
    from genworld.api import run_config, world_model_config

    run = tmp_path / "run"
    world_model = run / "random" / "multi" / "world_model"
    world_model.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(asdict(run_config("tiny"))))
    cfg = world_model_config("tiny", datasets=("hopper-random",))
    (world_model / "config.json").write_text(json.dumps(asdict(cfg)))
    return run, world_model


# ------------------------------------------------------------------ 1 silent wrong sizes
def test_a_dataset_smaller_than_its_scale_is_named_with_the_rebuild_command():
    from genworld.data.ids import size_warning
    from genworld.reports.table import datasets_used
    from genworld.train.table import config_for_scale

    assert size_warning("genworld/hopper/medium-v0", 100_000, 100_000, "mini") == ""
    warning = size_warning("genworld/hopper/medium-v0", 3_000, 100_000, "mini")
    assert "3,000 transitions" in warning and "100,000 the mini scale" in warning
    assert "`genworld data build genworld/hopper/medium-v0 --force --steps 100000`" in warning
    # a table records each dataset's id and size, and warns on the small ones
    cfg = config_for_scale("mini", envs=("hopper",), qualities=("medium",), algos=("bc",))
    data = [{"env": "hopper", "transitions": 3_000, "episodes": 4, "sha256": "ab"}]
    cell = {"datasets": ["genworld/hopper/medium-v0"], "data": data}
    datasets, warnings_ = datasets_used(cfg, [cell, cell])
    assert datasets["genworld/hopper/medium-v0"]["transitions"] == 3_000
    assert datasets["genworld/hopper/medium-v0"]["versions"] == 1
    assert len(warnings_) == 1 and "--force --steps 100000" in warnings_[0]
    # a table's protocol states the size: a larger dataset (built for another scale) is named too
    big = [{**data[0], "transitions": 1_000_000}]
    _, warnings_ = datasets_used(cfg, [{**cell, "data": big}])
    assert len(warnings_) == 1 and "1,000,000 transitions, not the 100,000" in warnings_[0]
    assert size_warning("genworld/hopper/medium-v0", 1_000_000, 100_000, "mini") == ""


def test_a_table_refuses_a_dataset_built_for_another_scale(tmp_path):
    """One id, two sizes: a table on a dataset of another size than its budget's stops before
    any cell, in one line naming the dataset, the rebuild and the separate store."""
    from genworld import api
    from genworld.data.build import ensure_built

    ensure_built(["hopper-random"], steps=400)
    cfg = api.table_config("tiny", envs=("hopper",), qualities=("random",), algos=("bc",), seeds=1)
    with pytest.raises(GenworldError) as err:
        api.table(cfg, tmp_path / "table", show_progress=False)
    message = str(err.value)
    assert "hopper-random has 400" in message and "\n" not in message
    assert "--steps 3000 --force" in message and "MINARI_DATASETS_PATH" in message
    assert not (tmp_path / "table").exists()  # nothing left behind


# ------------------------------------------------------------------ 2 one-line errors
def test_bad_seeds_counts_and_steps_are_one_line_errors(capsys):
    for argv, text in (
        (["run", "--scale", "tiny", "--seed", "-1"], "--seed must be a whole number from 0"),
        (["train", "world-model", "--seed", "4294967296"], "--seed must be"),
        (
            ["train", "world-model", "--seed", "99999999999999999999"],
            "--seed must be a whole number from 0 to 2,147,483,647; got 99999999999999999999",
        ),
        (["data", "train-policy", "hopper", "--seed", "-3"], "--seed must be"),
        (["table", "--seeds", "99999999999"], "--seeds must be from 1 to 1,000"),
        (["run", "--threads", "4096"], "--threads must be from 1 to 1,024"),
        (
            ["train", "agnostic-iql", "--scale", "tiny", "--steps", "0"],
            "--steps must be a positive",
        ),
        (["train", "agnostic-iql", "--scale", "tiny", "--steps", "-4"], "--steps must be"),
        (["train", "agnostic-ppo", "--total_timesteps", "0"], "--total_timesteps must be"),
        (["train", "agnostic-iql", "--batch-size", "0"], "--batch-size must be positive"),
        (["run", "--scale", "tiny", "--envs", ""], "--envs and --qualities must each name"),
        (["run", "--agent.mbpo.horizon", "99999999999999999999"], "too large (at most"),
    ):
        _one_line_error(capsys, [*argv, "--print-config"], text)
    _one_line_error(capsys, ["data", "build", "hopper-random", "--seed", "-1"], "--seed must be")


def test_wrong_folders_are_one_line_errors_naming_the_right_one(tmp_path, capsys):
    run, world_model = _fake_runs(tmp_path)
    _one_line_error(
        capsys,
        ["eval", "world-model", str(run)],
        "is a `genworld run` folder",
        f"give one of its world-model folders: {world_model}",
    )
    for n in ("0", "-1", "999999999"):
        argv = ["eval", "world-model", str(world_model), "--episodes-per-env", n]
        _one_line_error(capsys, argv, "--episodes-per-env must be between 1 and 100,000")
    for folder, text in (
        (tmp_path / "missing", "does not exist"),
        (run, "is a `genworld run` folder, not a `genworld data train-policy` one"),
        (world_model, "is a `genworld train world-model` folder"),
        (run / "random", "holds no config.json"),
    ):
        argv = ["data", "export-policies", str(folder), "--dest", str(tmp_path / "p")]
        _one_line_error(capsys, argv, text, "`genworld data train-policy ENV`")
    _one_line_error(
        capsys, ["data", "export-task-experts", str(run)], "not a `genworld unseen` one"
    )


def test_ray_executor_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    from genworld.train import table

    monkeypatch.setattr(table, "_ray_available", lambda: False)
    argv = ["table", "--scale", "tiny", "--envs", "hopper", "--qualities", "random"]
    argv += ["--algos", "bc", "--workers", "2", "--executor", "ray", "--out", str(tmp_path / "t")]
    _one_line_error(capsys, argv, "pip install -e '.[ray]'", "--executor local")
    assert not (tmp_path / "t").exists()  # refused before anything is written
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'ray = ["ray==' in pyproject  # the extra, pinned like the others


@pytest.mark.parametrize("damage", ["truncate", "pickle", "card"])
def test_a_corrupt_policy_file_is_one_line_naming_the_file(tiny_policies, capsys, damage):
    import pickle

    weights = tiny_policies / "hopper-medium.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:300])
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps({"weights": [1, 2]}))
    else:
        (tiny_policies / "hopper-medium.json").write_text("{not json")
    damaged = weights.name if damage != "card" else "hopper-medium.json"
    argv = ["data", "build", "hopper-medium", "--steps", "200", "--quiet"]
    _one_line_error(capsys, argv, "policy hopper-medium is corrupt", damaged, "retrain it")


def _enospc(*args, **kwargs):
    """What h5py does on a full disk: an OSError(ENOSPC), then another error while closing."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "main_data.hdf5")
    except OSError:
        raise RuntimeError("Disable slist on flush dest failure failed (errno = 28, ...)") from None


def test_a_full_disk_is_one_line_and_leaves_no_staging_folder(capsys, monkeypatch):
    from genworld.data import minari_io

    monkeypatch.setattr(minari_io, "_write_staged", _enospc)
    argv = ["data", "build", "hopper-random", "--steps", "200", "--quiet"]
    _one_line_error(capsys, argv, "no space left on device", "free disk space", "rerun")
    root = minari_io.datasets_root()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".genworld")]


def test_a_closed_pipe_ends_quietly(capsys, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["data", "list"]) == 141  # as a process killed by SIGPIPE
    assert capsys.readouterr().err == ""


def test_an_internal_error_is_one_line_naming_its_traceback_file(capsys, monkeypatch):
    from genworld.cli import commands

    def broken(args):
        raise KeyError("env")

    monkeypatch.delenv("GENWORLD_TRACEBACK", raising=False)
    monkeypatch.setattr(commands, "data_list", broken)
    assert main(["data", "list"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("genworld: internal error: KeyError") and "\n" not in err
    log = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "genworld data list" in log.read_text()
    log.unlink()


@pytest.mark.integration
def test_data_list_into_head_prints_no_traceback():
    shell = f"{sys.executable} -m genworld.cli data list --json | head -1"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[" and done.stderr == ""


# ------------------------------------------------------------------ 3 validate before writing
def test_a_refused_device_writes_nothing_and_an_unfinished_folder_is_taken_over(
    tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    argv = ["run", "--scale", "tiny", "--envs", "hopper", "--qualities", "random"]
    _one_line_error(capsys, [*argv, "--device", "cuda", "--out", str(out)], "--device cpu")
    assert not out.exists()
    # a folder whose run has no finished step yet is taken over by a corrected config ...
    from genworld.api import run_config

    check_or_write_config(out, run_config("tiny", seed=1))
    (out / "metrics.jsonl").write_text("")
    check_or_write_config(out, run_config("tiny", seed=2))
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    assert "no finished step" in capsys.readouterr().err
    # ... and refused once it has one
    (out / "random" / "multi" / "world_model" / "checkpoints" / "step_1").mkdir(parents=True)
    (out / "random" / "multi" / "world_model" / "checkpoints" / "step_1" / "meta.json").touch()
    with pytest.raises(GenworldError, match=r"of `genworld run` with a different config \(seed\)"):
        check_or_write_config(out, run_config("tiny", seed=3))


# ------------------------------------------------------------------ 4 overwrites and races
def test_an_unrelated_folder_with_a_report_is_refused_not_overwritten(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "report.json").write_text('{"mine": 1}')
    argv = ["run", "--scale", "tiny", "--envs", "hopper", "--qualities", "random"]
    _one_line_error(capsys, [*argv, "--out", str(foreign)], "no genworld config.json", "--out")
    assert (foreign / "report.json").read_text() == '{"mine": 1}'
    assert not (foreign / "config.json").exists()


def test_a_config_written_by_another_run_mid_check_is_not_taken_for_foreign_files(
    tmp_path, monkeypatch
):
    """Two runs starting on one --out: the other may write config.json between this run's
    look for it and its listing of the folder. That file is a run's, never a foreign one."""
    from genworld.api import run_config
    from genworld.utils import io

    out = tmp_path / "shared"
    out.mkdir()
    real = io._foreign_files

    def other_run_writes_first(folder):
        monkeypatch.setattr(io, "_foreign_files", real)  # the other run looks once, finds none
        io.check_or_write_config(folder, run_config("tiny", seed=1))
        return real(folder)

    monkeypatch.setattr(io, "_foreign_files", other_run_writes_first)
    io.check_or_write_config(out, run_config("tiny", seed=1))  # no error: the same config
    assert json.loads((out / "config.json").read_text())["seed"] == 1


FOLDER_COMMANDS = {
    "genworld run": ["run", "--scale", "tiny", "--envs", "hopper", "--qualities", "random"],
    "genworld train world-model": ["train", "world-model", "--scale", "tiny", "--datasets", "hopper-random"],
    "genworld data train-policy": ["data", "train-policy", "hopper", "--scale", "tiny"],
    "genworld train agnostic-iql": ["train", "agnostic-iql", "--scale", "tiny", "--datasets", "hopper-random"],
    "genworld train agnostic-ppo": ["train", "agnostic-ppo", "--scale", "tiny", "--envs", "hopper"],
    "genworld train agnostic-transfer": ["train", "agnostic-transfer", "--scale", "tiny"],
    "genworld train agnostic-ablations": ["train", "agnostic-ablations", "--scale", "tiny"],
    "genworld unseen": ["unseen", "--scale", "tiny", "--family", "cheetah-vel"],
    "genworld wpt-study": ["wpt-study", "--scale", "tiny", "--world_model", "runs/none"],
    "genworld scenarios": ["scenarios", "--scale", "tiny", "--envs", "dmc-cheetah-run"],
}  # fmt: skip
"""Every command that trains into one --out folder of its own (table-like studies share theirs
cell by cell instead: tests/test_table.py)."""


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
def test_a_second_process_on_one_folder_is_refused_while_the_first_holds_it(
    command, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    with claim(out / ".claim", wait=False) as held:  # as a first process of the command holds it
        assert held
        argv = [*FOLDER_COMMANDS[command], "--out", str(out)]
        _one_line_error(capsys, argv, f"another `{command}` is running", "another --out")
    assert [p.name for p in out.iterdir()] == [".claim"]  # nothing written, nothing trained


def test_each_world_model_evaluation_has_its_own_folder(tmp_path):
    from genworld.train.world_model import evaluation_folder

    run, a = _fake_runs(tmp_path)
    b = _fake_runs(tmp_path / "other")[1]  # also named world_model
    c = _fake_runs(tmp_path / "third")[1]
    folders = {
        evaluation_folder([a], off_data=None, per_env=256),
        evaluation_folder([a, b], off_data=None, per_env=256),
        evaluation_folder([a, c], off_data=None, per_env=256),
        evaluation_folder([a], off_data="random", per_env=256),
        evaluation_folder([a], off_data="random", per_env=16),
    }
    assert len(folders) == 5 and all(f.parent == a / "eval" for f in folders)
    assert evaluation_folder([a, b], off_data=None, per_env=256) in folders  # rerun: its own


# ------------------------------------------------------------------ 5 leftovers after faults
def test_stale_staging_folders_are_removed_and_a_live_writer_is_left_alone():
    from genworld.data.build import build_dataset
    from genworld.data.minari_io import datasets_root

    root = datasets_root()
    (root / ".genworld-staging-dead" / "genworld" / "hopper").mkdir(parents=True)
    (root / ".genworld-staging-dead" / "genworld" / "hopper" / "x.hdf5").write_bytes(b"\0" * 64)
    (root / ".genworld-old-dead").mkdir()
    (root / ".genworld-staging-live").mkdir()
    with claim(root / ".genworld-staging-live.lock", wait=False):  # its writer still runs
        card = build_dataset("hopper-random", steps=200, show_progress=False)
        assert card["steps"] == 200
        left = sorted(p.name for p in root.iterdir() if p.name.startswith(".genworld"))
    assert left == [".genworld-staging-live", ".genworld-staging-live.lock"]


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_sigkill_of_a_multi_process_build_leaves_no_worker_running(tmp_path):
    argv = ["data", "build", "halfcheetah-random", "--steps", "400000", "--workers", "2"]
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "genworld.cli", *argv, "--quiet"], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [
                k
                for k in _children(proc.pid)
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()
            ]
        assert len(workers) == 2, "the build started no lane workers"
        time.sleep(3)  # the lanes are collecting (400k steps: far more than this)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60  # the kernel ends them at once (a busy machine: later)
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, "lane workers outlived their killed parent"


# ------------------------------------------------------------------ 6 a fresh machine
ROOT = Path(__file__).parents[1]


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_installs_cpu_torch_from_an_index_and_insists_on_python_311(tmp_path):
    venv = tmp_path / "venv"
    dry = _make("-n", "-B", f"VENV={venv}", f"{venv}/.installed").stdout
    assert "-m venv" in dry and "--quiet" not in dry  # pip shows its progress
    torch_line = next(line for line in dry.splitlines() if "torch==2.13.0" in line)
    assert "--no-deps" in torch_line  # torch alone from PyTorch's index
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_line  # local wins
    gpu = _make(
        "-n", "-B", f"VENV={venv}", "TORCH_INDEX=https://example.invalid/cu", f"{venv}/.installed"
    )
    assert "--extra-index-url https://example.invalid/cu" in gpu.stdout
    missing = _make(f"VENV={venv}", f"PY={tmp_path / 'python3.11'}", f"{venv}/bin/python")
    assert missing.returncode != 0 and "needs Python 3.11: install it" in missing.stdout
    assert not venv.exists()  # no venv of another version is made
    (venv / "bin").mkdir(parents=True)  # a venv of another version is never reused
    (venv / "bin" / "python").symlink_to(shutil.which("false"))
    wrong = _make(f"VENV={venv}", "python-version")
    assert wrong.returncode != 0 and "not Python 3.11: remove it (make clean-venv)" in wrong.stdout


# ------------------------------------------------------------------ 7 readable output
def test_data_list_labels_its_columns_and_a_budget_cut_dataset_says_so(capsys):
    from genworld.data.info import budget_note, info_card

    assert main(["data", "list"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:4] == ["dataset", "built", "steps", "normalized"]
    card = {"budget_cut_episodes": 16, "normalized_mean_complete_episodes": None}
    note = budget_note(card, 16, 3_000)
    assert "16 of 16 episodes end where the 3,000-step budget ran out" in note
    assert "no episode is whole" in note
    assert budget_note({"budget_cut_episodes": 0}, 10, 10_000) == ""
    info = {"dataset_id": "d", "total_steps": 3_000, "total_episodes": 16, "path": "p"}
    assert "cut short" in info_card({**info, "card": card})


def test_numbers_agree_with_their_nouns():
    from genworld.reports.run import count

    assert count(1, "deterministic episode") == "1 deterministic episode"
    assert count(5, "evaluation") == "5 evaluations"


def test_a_bar_inside_a_bar_is_a_line_of_it_not_a_second_live_display():
    from genworld.utils import progress

    with progress.progress_bar("table cells", 2) as outer:
        with progress.progress_bar("cell", 5) as inner:  # rich allows one live display
            inner(5)
            assert len(progress._LIVE[-1].tasks) == 2
        assert len(progress._LIVE[-1].tasks) == 1  # the cell's line is gone when it ends
        outer(1)
    assert not progress._LIVE


def test_bars_in_a_log_are_timestamped_lines_with_counts_and_time_left(capsys):
    """Output that is not a terminal (a background job's log) gets lines, not a live display:
    each bar when it opens and when it completes, with its count and times."""
    from genworld.utils import progress

    with progress.progress_bar("table cells", 2) as outer:
        with progress.progress_bar("cell", 5) as inner:
            inner(5)
        outer(2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1].split(",")[0] for line in lines] == [
        "table cells 0/2 (0%)",
        "  cell 0/5 (0%)",
        "  cell 5/5 (100%)",
        "table cells 2/2 (100%)",
    ]
    assert all(line.startswith("[") and "elapsed" in line for line in lines)
    bars = progress._LineBars()  # a worker's bar, mirrored by polls until it closes
    task = bars.add_task("", total=3)
    for _ in range(3):
        bars.update(task, description="  cell", completed=3, total=3)
    assert capsys.readouterr().err.count("cell 3/3 (100%)") == 1


def test_a_resumed_bar_starts_at_the_work_done_before_and_times_only_the_rest(capsys):
    """A resumed cell (8,000 of 10,000 updates) or table (25 of 72 cells) opens at its count;
    its time left comes from the work done since, not from work it never timed."""
    from genworld.utils import progress

    with progress.progress_bar("cell", 10, done=8) as advance:
        assert progress._LIVE[-1].tasks[0].initial == 8
        advance(2)
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert lines[0].startswith("cell 8/10 (80%)") and "left" not in lines[0]
    assert lines[1].startswith("cell 10/10 (100%)")
    bars = progress._LineBars()
    task = bars.add_task("cell", total=10, completed=8)
    bars.advance(task, 1)
    line = bars.tasks[0]
    assert line.completed - line.initial == 1  # one unit of work timed, not nine


def test_resumed_jobs_run_only_the_unfinished_and_advance_once_each(tmp_path):
    from genworld.utils.parallel import finished, map_unfinished

    paths = [tmp_path / f"{i}.json" for i in range(4)]
    for i in (0, 2):
        paths[i].write_text(json.dumps({"job": i, "read": True}))
    done = finished(paths)
    assert sorted(done) == [0, 2]
    advanced = []
    results = map_unfinished(dict, [((("job", i),),) for i in range(4)], done, 1, advanced.append)
    assert results == [
        {"job": 0, "read": True},
        {"job": 1},
        {"job": 2, "read": True},
        {"job": 3},
    ]
    assert advanced == [1, 1]


def _worker_bar_file(steps: int) -> list:
    """A job for a pool worker: opens a bar (disabled, as a quiet cell's) and returns what the
    parent could read of it meanwhile."""
    from genworld.utils import progress

    with progress.progress_bar("cell", steps, enabled=False) as advance:
        advance(steps)
        with progress.progress_bar("world model", 3, enabled=False):
            path = Path(os.environ[progress.CHANNEL]) / f"{os.getpid()}.json"
            return json.loads(path.read_text())


def test_cells_in_worker_processes_show_their_progress_under_the_parents_bar():
    from genworld.utils import progress
    from genworld.utils.parallel import process_map

    with progress.progress_bar("table cells", 2) as outer:
        seen = process_map(_worker_bar_file, [(4,), (6,)], workers=2, advance=outer)
        assert len(progress._LIVE[-1].tasks) == 1  # the workers' lines are gone
    assert [[bar["description"] for bar in bars] for bars in seen] == [
        ["cell", "  world model"]
    ] * 2
    assert [bars[0]["total"] for bars in seen] == [4, 6]
    assert progress.CHANNEL not in os.environ


def test_the_parent_mirrors_each_worker_bar_and_drops_finished_ones(tmp_path):
    from genworld.utils import progress

    with progress.progress_bar("table cells", 2), progress.worker_bars() as poll:
        folder = Path(os.environ[progress.CHANNEL])
        bars = [{"description": "tgw medium s0", "completed": 300, "total": 1000}]
        (folder / "123.json").write_text(json.dumps(bars))
        poll()
        live = progress._LIVE[-1]
        line = [t for t in live.tasks if t.description == "  tgw medium s0"]
        assert len(line) == 1 and line[0].completed == 300 and line[0].total == 1000
        (folder / "123.json").unlink()  # the cell finished
        poll()
        assert [t.description for t in live.tasks] == ["table cells"]
    assert not folder.exists()


def test_run_names_its_folder_before_it_trains(tmp_path, capsys, monkeypatch):
    from genworld.train import pipeline

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run", stop)
    out = tmp_path / "run"
    argv = ["run", "--scale", "tiny", "--envs", "hopper", "--qualities", "random"]
    assert main([*argv, "--out", str(out)]) == 130
    assert f"genworld run: writing into {out}" in capsys.readouterr().out
