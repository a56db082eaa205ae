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
