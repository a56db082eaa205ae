"""`genworld bench`: the CLI contract in the default suite (cheap), each benchmark's quick mode
behind the `bench` marker (run with `pytest -m bench`)."""

import argparse
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
@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n not in ("end_to_end", "cmt")])
def test_each_benchmark_quick(name, tmp_path):
    results = run_benchmarks([name], quick=True, echo=lambda line: None)
    assert results[name]["ratios"], f"{name} printed no ratio line"


@pytest.mark.bench
def test_cmt_benchmark_quick():
    figures = run_benchmarks(["cmt"], quick=True, threads=1, echo=lambda line: None)["cmt"]
    assert len(figures["ratios"]) == 3  # pretraining mini and full, relabelling
    pretraining = figures["figures"]["pretraining"]
    assert set(pretraining) == {"mini", "full"}
    for scale in pretraining.values():
        assert scale["gflops_per_update"] > 0
        assert {"updates_per_s", "gflop_per_s", "fraction_of_matmul_peak"} <= scale.keys()
    relabelling = figures["figures"]["relabelling"]
    assert relabelling["states"] == relabelling["relabel_batch"] == 32  # mini preset
    for planner in ("batched", "one_at_a_time"):
        assert {"states_per_s", "gflops_per_state", "gflop_per_s"} <= relabelling[planner].keys()
    # the same searches, batched or not: the same FLOPs per state
    per_state = [relabelling[p]["gflops_per_state"] for p in ("batched", "one_at_a_time")]
    assert per_state[0] == pytest.approx(per_state[1], rel=1e-6)
    assert relabelling["ratio"] > 0


@pytest.mark.bench
def test_rssm_benchmark_quick():
    figures = run_benchmarks(["rssm"], quick=True, threads=1, echo=lambda line: None)["rssm"]
    rssm = figures["figures"]
    assert set(rssm["configs"]) == {"mini", "mini-categorical"}  # full sizes in full mode only
    for config in rssm["configs"].values():
        assert config["training"]["gflops_per_update"] > 0
        assert {"updates_per_s", "gflop_per_s", "fraction_of_matmul_peak"} <= config[
            "training"
        ].keys()
        imagination = config["imagination"]
        assert imagination["horizon"] == 16  # WPT's
        assert imagination["start_states"] == 16 * 33  # every posterior state of a mini batch
        assert imagination["ratio"] > 0
    sequential = rssm["sequential"]
    assert sequential["gru_steps_per_update"] == 32 and sequential["batch_size"] == 16
    assert (
        0
        < sequential["gru_steps_share_of_update"]
        < sequential["observe_forward_backward_share_of_update"]
    )
    peer = rssm["peer"]
    if peer["available"]:  # the sheeprl venv (.venv-sheeprl) exists
        assert set(peer["configs"]) == {"mini-categorical"}
        assert rssm["configs"]["mini-categorical"]["peer_training_ratio"] > 0
        assert len(figures["ratios"]) == 5
    else:
        assert peer["note"]
        assert "peer_training_ratio" not in rssm["configs"]["mini-categorical"]


def test_rssm_benchmark_skips_the_sheeprl_peer_without_its_venv(tmp_path, monkeypatch):
    from genworld.bench.common import BenchResult
    from genworld.bench.rssm import PEER_PYTHON_VAR, peer_figures

    monkeypatch.setenv(PEER_PYTHON_VAR, str(tmp_path / "no-venv" / "python"))
    res = BenchResult("rssm", {"configs": {"mini-categorical": {}}})
    peer_figures(res, {}, threads=1, iters=1)
    assert res.figures["peer"]["available"] is False
    assert res.notes[0].startswith("rssm: peer unavailable")
    assert res.figures["configs"]["mini-categorical"] == {}  # no ratio


def test_bench_help_names_every_benchmark():
    from genworld.cli import build_parser

    parser = build_parser()
    help_text = next(
        action.choices["bench"].format_help()
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    for name in BENCHMARKS:
        assert name in help_text, name


def test_cpu_attention_is_counted_as_torchs_sdpa_formula():
    import torch
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from genworld.bench.common import count_cpu_attention

    count_cpu_attention()
    count_cpu_attention()  # idempotent
    q = torch.randn(4, 2, 16, 8, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        F.scaled_dot_product_attention(q, q, q)
    assert forward.get_total_flops() == 2 * (2 * 4 * 2 * 16 * 16 * 8)  # QK^T and AV
    with FlopCounterMode(display=False) as both:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    assert both.get_total_flops() > forward.get_total_flops()


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
