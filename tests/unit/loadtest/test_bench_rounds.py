"""Interleaved rounds: a ratio of the same moment, robust to a neighbour that slows every server."""

from __future__ import annotations

from typing import Any

from loadtest.bench_adapters import adapt
from loadtest.bench_gateway import overhead_figures
from loadtest.bench_report import normalise_section
from loadtest.bench_rounds import difference, merged, ratio, run_rounds, spread


def test_every_server_runs_once_per_round_and_the_order_rotates() -> None:
    calls: list[tuple[int, str]] = []

    def run(name: str) -> Any:
        def call(r: int) -> dict[str, Any]:
            calls.append((r, name))
            return {"rps": 1.0}

        return call

    rounds = run_rounds({n: run(n) for n in ("a", "b", "c")}, rounds=4)
    assert len(rounds) == 4 and all(set(rnd) == {"a", "b", "c"} for rnd in rounds)
    firsts = [calls[3 * r][1] for r in range(4)]
    assert firsts == ["a", "b", "c", "a"]  # none always runs first


def test_a_slow_moment_moves_both_sides_and_leaves_the_ratio() -> None:
    # The machine halves everyone's throughput in round 2: the per-round ratio does not move.
    speed = [1.0, 1.0, 0.5, 1.0]
    rounds = [{"triton": {"rps": 4000 * s}, "gateway": {"rps": 2000 * s}} for s in speed]
    s = spread(ratio(rounds, "gateway", "triton"))
    assert s == {"median": 0.5, "min": 0.5, "max": 0.5}
    assert spread([]) == {"median": None, "min": None, "max": None}
    lat = [{"triton": {"p50_ms": t}, "gateway": {"p50_ms": t + 0.8}} for t in (0.9, 1.8, 1.0)]
    assert spread(difference(lat, "gateway", "triton", "p50_ms"))["median"] == 0.8


def test_merged_rounds_sum_counts_and_cpu_and_take_medians_of_the_rest() -> None:
    points = [
        {"rps": 100.0, "requests": 200, "cpu_s": 0.1, "concurrency": 64},
        {"rps": 300.0, "requests": 600, "cpu_s": 0.3, "concurrency": 64},
        {"rps": 200.0, "requests": 400, "cpu_s": 0.2, "concurrency": 64},
    ]
    m = merged(points)
    assert (m["rps"], m["requests"], m["cpu_s"], m["concurrency"], m["rounds"]) == (200.0, 1200, 0.6, 64, 3)
    # a round whose CPU was not read: no CPU figure (requests and CPU must cover the same rounds)
    assert merged([*points[:2], {"rps": 1.0, "requests": 5}])["cpu_s"] is None


def test_the_added_latency_is_the_median_of_per_round_differences() -> None:
    rounds = [
        {"triton": {"p50_ms": 0.9}, "gateway": {"p50_ms": 1.8}},
        {"triton": {"p50_ms": 2.0}, "gateway": {"p50_ms": 2.7}},  # a busy round: both slower
        {"triton": {"p50_ms": 1.0}, "gateway": {"p50_ms": 2.0}},
    ]
    raw = {
        "grpc_latency_c1_rounds": rounds,
        "grpc_latency_c1": {"triton": {"p50_ms": 1.0}, "gateway": {"p50_ms": 2.0}},
    }
    f = overhead_figures(raw, "64")
    assert f["gateway_added_latency_p50_ms_c1"] == 0.9
    assert (f["gateway_added_latency_p50_ms_c1_min"], f["gateway_added_latency_p50_ms_c1_max"]) == (0.7, 1.0)


def test_the_report_quotes_each_round_figure_with_its_spread() -> None:
    raw = {
        "rounds": 4,
        "gateway_vs_triton_rps_ratio_c64": 0.5,
        "gateway_vs_triton_rps_ratio_c64_min": 0.45,
        "gateway_vs_triton_rps_ratio_c64_max": 0.55,
    }
    notes = " ".join(normalise_section("gateway", adapt("gateway", raw))["notes"])
    assert (
        "4 interleaved rounds" in notes
        and "`gateway_vs_triton_rps_ratio_c64` 0.5 (rounds 0.45–0.55)" in notes
    )
