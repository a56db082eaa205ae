"""``genworld bench [NAME]``: the benchmark suite. Every figure is a ratio against a reference
measured in the same run (machines are noisy; absolute numbers are printed as notes).

Benchmarks are never run by the default tests; ``tests/test_bench.py`` runs each in its quick
mode behind the ``bench`` marker.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from genworld.bench.common import BenchResult
from genworld.errors import GenworldError
from genworld.utils.allocator import keep_freed_memory
from genworld.utils.io import save_figure
from genworld.utils.provenance import provenance

BENCHMARKS: dict[str, str] = {
    "matmul_peak": "genworld.bench.common:matmul_peak",
    "algos": "genworld.bench.algos:run",
    "world_model": "genworld.bench.world_model:run",
    "imagination": "genworld.bench.imagination:run",
    "data_build": "genworld.bench.data_build:run",
    "data_build_dmc": "genworld.bench.data_build:run_dmc",
    "end_to_end": "genworld.bench.end_to_end:run",
    "agnostic": "genworld.bench.agnostic:run",
    "scenario_models": "genworld.bench.scenario_models:run",
    "cmt": "genworld.bench.cmt:run",
    "rssm": "genworld.bench.rssm:run",
}


def _function(name: str) -> Callable[..., BenchResult]:
    if name not in BENCHMARKS:
        raise GenworldError(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    module, function = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_benchmarks(
    names: list[str] | None = None,
    *,
    quick: bool = False,
    plot: Path | None = None,
    quick_start: bool = False,
    threads: int = 2,
    echo: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run ``names`` (all by default); print notes then ratio lines; return JSON-able figures."""
    import torch

    torch.set_num_threads(threads)
    names = names or list(BENCHMARKS)
    for name in names:
        _function(name)  # unknown names fail before anything runs
    results = {}
    for name in names:
        if name != "algos":  # algos measures d3rlpy with the default allocator first
            keep_freed_memory()  # as the CLI runs genworld (utils/allocator.py)
        kwargs = {"quick": quick}
        if name == "world_model" and plot is not None:
            kwargs["scaling_curves"] = True
        if name == "end_to_end":
            kwargs["quick_start"] = quick_start
        result = _function(name)(**kwargs)
        for line in result.notes:
            echo(line)
        for line in result.ratios:
            echo(line)
        results[name] = asdict(result)
    if plot is not None and "world_model" in results:
        plot_scaling(results["world_model"]["figures"].get("scaling", {}), plot)
        echo(f"scaling plot: {plot}")
    return results


def write_json(results: dict, path: Path) -> None:
    from genworld.utils.io import atomic_write_bytes

    flat = {name: r["figures"] | {"ratios": r["ratios"]} for name, r in results.items()}
    flat["provenance"] = provenance()  # the code and machine behind every figure
    atomic_write_bytes(path, (json.dumps(flat, indent=2) + "\n").encode())


def plot_scaling(curves: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per scaling curve (batch size, env count, ensemble size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"batch": "batch size", "envs": "environments (tasks)", "ensemble": "ensemble size"}
    fig, axes = plt.subplots(
        1, max(1, len(curves)), figsize=(4 * max(1, len(curves)), 3.2), squeeze=False
    )
    for ax, (key, curve) in zip(axes[0], curves.items(), strict=False):
        xs = [int(x) for x in curve]
        ax.plot(xs, list(curve.values()), marker="o")
        ax.set_xlabel(labels.get(key, key))
        ax.set_ylabel("TGW training sequences/s")
        ax.grid(alpha=0.3)
    save_figure(fig, path)
