"""The training loop's logs: an evaluation before the first step, and what a killed run
redoes."""

from __future__ import annotations

from genworld.train.loop import Hook, run_loop

from .test_prefix import Walk, _records


def test_a_start_hook_logs_step_0_once_and_a_killed_runs_records_are_redone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "eval.jsonl").write_text('{"step": 2, "x": -1.0}\n')  # killed before a checkpoint
    hooks = (Hook(2, lambda step, m: {"x": m.get("x", 0.0)}, log="eval.jsonl", at_start=True),)

    def run(steps):
        run_loop("walk", Walk(), out, steps=steps, seed=3, checkpoint_every=3, hooks=hooks,
                 show_progress=False)  # fmt: skip
        return _records(out / "eval.jsonl")

    first = run(6)
    assert [r["step"] for r in first] == [0, 2, 4, 6]
    assert first[0]["x"] == 0.0 and all(r["x"] > 0 for r in first[1:])  # -1 was redone
    assert [r["step"] for r in run(8)] == [0, 2, 4, 6, 8]  # a resumed run: no second step 0


def test_wall_seconds_carry_across_a_resume(tmp_path):
    from genworld.train.cells import cell_seconds
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint

    out = tmp_path / "run"
    hooks = (Hook(2, lambda step, m: {"x": 1.0}, log="eval.jsonl"),)
    run_loop("walk", Walk(), out, steps=4, seed=3, checkpoint_every=2, hooks=hooks,
             show_progress=False)  # fmt: skip
    first = _records(out / "eval.jsonl")
    assert all(r["wall_s"] >= 0 for r in first)
    _, state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert state["wall_s"] >= first[-1]["wall_s"]
    # a resumed run counts on from the checkpoint's seconds (pretend the first run took 100 s)
    _patch_wall(latest_checkpoint(out / "checkpoints"), 100.0)
    run_loop("walk", Walk(), out, steps=6, seed=3, checkpoint_every=2, hooks=hooks,
             show_progress=False)  # fmt: skip
    records = _records(out / "eval.jsonl")
    assert records[-1]["step"] == 6 and records[-1]["wall_s"] >= 100.0
    assert cell_seconds(records, setup=2.0) == round(2.0 + records[-1]["wall_s"], 1)
    assert cell_seconds([], setup=2.0) == 2.0


def _patch_wall(checkpoint, seconds: float) -> None:
    """Rewrite a checkpoint's ``wall_s`` (and its metadata checksum)."""
    import json

    from genworld.train.checkpoint import _meta_digest

    meta_file = checkpoint / "meta.json"
    meta = json.loads(meta_file.read_text())
    items = meta["state"]["__dict__"]
    for item in items:
        if item[0] == "wall_s":
            item[1] = seconds
    meta["meta_sha256"] = _meta_digest(meta)
    meta_file.write_text(json.dumps(meta))


def test_a_run_from_a_shared_prefix_counts_only_its_own_seconds(tmp_path):
    from genworld.train.checkpoint import latest_checkpoint
    from genworld.train.prefix import Prefix

    prefix = Prefix(2, tmp_path / "prefixes" / "p")
    hooks = (Hook(2, lambda step, m: {"x": 1.0}, log="eval.jsonl"),)
    for name in ("first", "second"):
        run_loop(name, Walk(), tmp_path / name, steps=4, seed=3, checkpoint_every=2,
                 hooks=hooks, show_progress=False, prefix=prefix)  # fmt: skip
        if name == "first":  # the prefix took 100 s to make
            _patch_wall(latest_checkpoint(prefix.folder / "checkpoints"), 100.0)
    assert _records(tmp_path / "second" / "eval.jsonl")[-1]["wall_s"] < 100.0
