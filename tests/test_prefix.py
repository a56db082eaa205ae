"""Shared training prefixes (genworld.train.prefix): a run that starts from another run's first
steps ends exactly where it would have ended making them itself."""

from __future__ import annotations

import json

import pytest
import torch

from genworld.train.loop import Hook, run_loop
from genworld.train.prefix import RECORD, Prefix, prefix_of

from .conftest import untimed


class Walk:
    """A trainer whose every step draws from the sampling generator and torch's RNG."""

    def __init__(self):
        self.x = torch.zeros(3)
        self.steps = 0

    def step(self, generator):
        self.x += torch.rand(3, generator=generator) + torch.rand(3)
        self.steps += 1
        return {"x": float(self.x.sum())}

    def state_dict(self):
        return {"x": self.x.clone()}

    def load_state_dict(self, state):
        self.x = state["x"].clone()


def _run(out, prefix=None, steps=10):
    walk = Walk()
    log = Hook(2, lambda step, m: {"x": m["x"]}, log="eval.jsonl")
    torch.manual_seed(7)
    run_loop("walk", walk, out, steps=steps, seed=3, checkpoint_every=5, hooks=(log,),
             show_progress=False, prefix=prefix)  # fmt: skip
    return walk


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scores(path):
    """A log's records without their timing."""
    return untimed(_records(path))


def test_a_run_from_a_shared_prefix_ends_where_it_would_have(tmp_path):
    alone = _run(tmp_path / "alone")
    prefix = Prefix(4, tmp_path / "prefixes" / "p")
    first = _run(tmp_path / "first", prefix)
    assert torch.equal(first.x, alone.x) and first.steps == 10
    kept = _records(prefix.folder / "eval.jsonl")
    assert [r["step"] for r in kept] == [2, 4]  # the log up to the prefix's step only
    assert (prefix.folder / "checkpoints" / "step_000000004").is_dir()
    second = _run(tmp_path / "second", prefix)
    assert second.steps == 6  # the first 4 came from the prefix
    assert torch.equal(second.x, alone.x)
    assert _scores(tmp_path / "second" / "eval.jsonl") == _scores(tmp_path / "alone" / "eval.jsonl")
    assert json.loads((tmp_path / "second" / RECORD).read_text())["steps"] == 4
    assert not (tmp_path / "first" / RECORD).exists()


def test_a_run_with_its_own_checkpoint_resumes_from_it_not_from_the_prefix(tmp_path):
    prefix = Prefix(4, tmp_path / "p")
    _run(tmp_path / "first", prefix)
    _run(tmp_path / "second", steps=6)  # its own checkpoint at 6, no prefix
    resumed = _run(tmp_path / "second", prefix)
    assert resumed.steps == 4 and not (tmp_path / "second" / RECORD).exists()


def test_prefix_of_keys_the_folder_by_every_setting_it_is_given(tmp_path):
    class Agent:
        def __init__(self, beta):
            self.beta = beta

        def shared_prefix(self):
            return 8, {"lr": 1e-4}  # beta is read only after the prefix

    a = prefix_of(Agent(0.0), tmp_path, seed=0, data="d")
    assert a == prefix_of(Agent(50.0), tmp_path, seed=0, data="d")
    assert a.steps == 8 and a.folder.parent == tmp_path
    assert a != prefix_of(Agent(0.0), tmp_path, seed=1, data="d")
    assert prefix_of(object(), tmp_path, seed=0) is None


@pytest.mark.integration  # three tiny CMT cells twice (~40 s)
def test_cmt_variants_share_pretraining_and_score_as_if_alone(tmp_path):
    """cmt-no-pt and cmt-beta=0 start from cmt's pretraining; their records and final weights are
    the ones they reach when each trains alone."""
    from genworld.cli import main
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint

    argv = ["table", "--envs", "hopper", "--qualities", "medium", "--seeds", "1", "--scale",
            "tiny", "--quiet"]  # fmt: skip
    variants = ["cmt", "cmt-no-pt", "cmt-beta=0"]
    assert main([*argv, "--algos", ",".join(variants), "--out", str(tmp_path / "shared")]) == 0
    for v in variants:
        assert main([*argv, "--algos", v, "--out", str(tmp_path / f"alone-{v}")]) == 0
    for v in variants:
        cell = f"cells/medium/multi-multi/{v}/seed0/policy"
        shared, alone = tmp_path / "shared" / cell, tmp_path / f"alone-{v}" / cell
        assert (shared / RECORD).exists() == (v != "cmt")
        assert _scores(shared / "eval.jsonl") == _scores(alone / "eval.jsonl")
        a = load_checkpoint(latest_checkpoint(shared / "checkpoints"))[1]["agent"]["net"]
        b = load_checkpoint(latest_checkpoint(alone / "checkpoints"))[1]["agent"]["net"]
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration  # two tiny CMT cells (~15 s)
def test_a_cell_whose_prefix_another_process_is_making_is_put_off_then_starts_from_it(
    tmp_path, monkeypatch
):
    """While one worker makes cmt's pretraining, a second reaching cmt-no-pt of the same seed
    puts that cell off (None) instead of making the same steps beside it; later it starts
    from the prefix."""
    import threading

    from genworld.api import table_config
    from genworld.data.build import ensure_built
    from genworld.train import cells as cell_training
    from genworld.train.table import Cell, run_cell

    cfg = table_config(
        "tiny", envs=("hopper",), qualities=("medium",), algos=("cmt", "cmt-no-pt"), seeds=1
    )
    cfg.validate()
    ensure_built(["hopper-medium"], steps=cfg.budget.dataset_steps)
    out = tmp_path / "table"
    first, second = (Cell(a, "medium", "multi", "multi", ("hopper",), 0) for a in cfg.algos)
    real, answers = cell_training.train_cell, []

    def train_and_meet_the_other_worker(name, *args, **kwargs):
        if name.startswith("cmt "):  # the other worker (a thread: flock locks per open file)
            put_off = lambda: answers.append(run_cell(cfg, second, out, wait=False))  # noqa: E731
            other = threading.Thread(target=put_off)
            other.start()
            other.join()
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cell_training, "train_cell", train_and_meet_the_other_worker)
    assert run_cell(cfg, first, out, wait=False)["algo"] == "cmt"
    assert answers == [None]  # put off, nothing trained
    assert not (out / second.folder / "policy" / "checkpoints").exists()
    assert run_cell(cfg, second, out, wait=False)["algo"] == "cmt-no-pt"
    assert (out / second.folder / "policy" / RECORD).exists()  # started from cmt's pretraining


def test_making_a_prefix_is_one_process_at_a_time_and_a_resumed_run_goes_on(tmp_path):
    """A prefix's claim is held while it is made; a run with its own checkpoint goes on whether
    or not another process holds it, and holds it when it is free."""
    from genworld.train.prefix import making
    from genworld.utils.io import claim

    prefix = Prefix(4, tmp_path / "prefixes" / "p")
    lock = prefix.folder.with_name("p.claim")
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    (resumed / "checkpoints" / "step_000000002").mkdir(parents=True)
    with claim(lock, wait=False) as other:  # another process is making it
        assert other
        with making(prefix, fresh, wait=False) as free:
            assert not free
        with making(prefix, resumed, wait=False) as free:
            assert free
    with making(prefix, resumed, wait=False) as free, claim(lock, wait=False) as other:
        assert free and not other  # the resumed run holds it now
    (prefix.folder / "checkpoints" / "step_000000004").mkdir(parents=True)
    with claim(lock, wait=False), making(prefix, fresh, wait=False) as free:
        assert free  # made: nothing to wait for
