"""Wall time of ``genworld run --scale tiny`` and, when the medium behaviour policies are
shipped, of the quick start (``genworld run``, mini scale): subprocesses with fresh data."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from genworld.bench.common import BenchResult

QUICK_START_LIMIT_S = 15 * 60


def _timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "genworld.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"genworld {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def run(quick: bool = False, quick_start: bool = False) -> BenchResult:
    from genworld.data.build import shipped_policy_names

    res = BenchResult("end_to_end")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MINARI_DATASETS_PATH": f"{tmp}/datasets"}
        tiny = _timed(
            ["run", "--scale", "tiny", "--qualities", "random", "--out", f"{tmp}/tiny", "--quiet"],
            env,
        )
        res.figures["run_tiny_seconds"] = tiny
        res.notes.append("end_to_end: `genworld run --scale tiny --qualities random` (fresh data)")
        res.ratios.append(f"end_to_end/run-tiny: {tiny:.1f} s")
        have = shipped_policy_names()
        needed = {f"{e}-medium" for e in ("halfcheetah", "hopper", "walker2d")}
        if not quick_start:
            res.notes.append("end_to_end: quick start skipped (pass --quick-start; ~15 min)")
        elif not needed <= have:
            res.notes.append(
                f"end_to_end: quick start skipped, medium policies not shipped yet ({sorted(needed - have)})"
            )
        else:
            full = _timed(["run", "--out", f"{tmp}/quick", "--quiet"], env)
            res.figures["quick_start_seconds"] = full
            res.figures["ratio"] = full / QUICK_START_LIMIT_S
            res.ratios.append(
                f"end_to_end/quick-start: {full / 60:.1f} min = {full / QUICK_START_LIMIT_S:.2f}x "
                "the 15-minute budget"
            )
    return res
