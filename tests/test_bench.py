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
