"""`genworld bench`: the CLI contract in the default suite (cheap), each benchmark's quick mode
behind the `bench` marker (run with `pytest -m bench`)."""

import json

import pytest

from genworld.bench import BENCHMARKS, run_benchmarks
from genworld.cli import main


def test_bench_writes_json_and_prints_ratio_lines_last(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "matmul_peak", "--quick", "--json", str(path)]) == 0
    figures = json.loads(path.read_text())
    assert figures["matmul_peak"]["gflops"] > 0
    assert {"commit", "command", "machine"} <= figures["provenance"].keys()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("matmul_peak: fp32 GEMM")


def test_unknown_benchmark_is_one_line_error(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@pytest.mark.bench
@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "end_to_end"])
def test_each_benchmark_quick(name, tmp_path):
    results = run_benchmarks([name], quick=True, echo=lambda line: None)
    assert results[name]["ratios"], f"{name} printed no ratio line"


def test_interleaved_rounds_measure_every_contender_in_rotated_order():
    import torch

    from genworld.bench.algos import interleaved, paired_ratio

    calls: list[tuple[str, str]] = []

    def contender(name):
        return lambda: calls.append((name, torch.get_float32_matmul_precision()))

    names = ("a", "b", "c")
    precisions = {"a": "highest", "b": "medium", "c": "highest"}
    before = torch.get_float32_matmul_precision()
    try:
        rates = interleaved({n: (contender(n), precisions[n]) for n in names}, 1e-4, 3, 2)
    finally:
        torch.set_float32_matmul_precision(before)
    assert {n: len(r) for n, r in rates.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(precision == precisions[name] for name, precision in calls)
    measured = [name for name, _ in calls[6:]]  # after 2 warm-up calls each
    firsts = [n for i, n in enumerate(measured) if i == 0 or measured[i - 1] != n]
    assert firsts == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    # the ratio is taken within each round: a machine twice as slow in round 2 cancels out
    assert paired_ratio([10.0, 5.0, 10.0], [5.0, 2.5, 4.0]) == 2.0
