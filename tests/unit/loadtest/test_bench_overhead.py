"""The gateway-overhead figures of BENCHMARKS.json: added p50 latency, CPU per request, ratios."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.bench import unmeasured_headlines
from loadtest.bench_adapters import adapt
from loadtest.bench_gateway import overhead_figures
from loadtest.bench_latency import CpuMeter, cpu_us_per_request, latency_summary, percentile
from loadtest.bench_report import KEY_OWNER, STABLE_KEYS, normalise_section

NEW_KEYS = (
    "gateway_http_vs_triton_rps_ratio_c64",
    "gateway_added_latency_p50_ms_c1",
    "gateway_cpu_us_per_request_c64",
)


def _raw() -> dict[str, Any]:
    return {
        "http": {"gateway": {"64": {"rps": 3000.0, "requests": 24000, "cpu_s": 12.0}}},
        "grpc": {
            "triton": {"64": {"rps": 6000.0, "requests": 48000, "cpu_s": 9.6}},
            "gateway": {"64": {"rps": 3000.0, "requests": 30000, "cpu_s": 15.0}},
        },
        "grpc_latency_c1": {
            "triton": {"rps": 1100.0, "p50_ms": 0.8, "p99_ms": 1.5, "concurrency": 1},
            "gateway": {"rps": 500.0, "p50_ms": 1.7, "p99_ms": 3.0, "concurrency": 1},
        },
    }


def test_percentiles_are_nearest_rank_of_the_measured_calls() -> None:
    ms = [float(i) for i in range(1, 101)]
    assert percentile(ms, 50) == 50.0 and percentile(ms, 99) == 99.0 and percentile(ms, 100) == 100.0
    s = latency_summary([x / 1e3 for x in ms], elapsed_s=2.0, errors=1)
    assert s["rps"] == 50.0 and s["p50_ms"] == 50.0 and s["p90_ms"] == 90.0 and s["failed"] == 1
    assert s["mean_ms"] == pytest.approx(50.5)
    assert "p50_ms" not in latency_summary([], elapsed_s=1.0)  # nothing answered: no percentile


def test_overhead_figures_compare_the_gateway_with_triton_alone() -> None:
    f = overhead_figures(_raw(), "64")
    assert f["gateway_added_latency_p50_ms_c1"] == pytest.approx(0.9)
    assert f["gateway_cpu_us_per_request_c64"] == 500.0  # 15 s / 30 000 requests
    assert f["gateway_http_cpu_us_per_request_c64"] == 500.0
    assert f["triton_cpu_us_per_request_c64"] == 200.0


def test_an_unmeasured_overhead_figure_is_none_and_fails_the_run() -> None:
    raw = _raw()
    del raw["grpc_latency_c1"]["triton"]["p50_ms"]
    raw["grpc"]["gateway"]["64"]["requests"] = 0
    f = overhead_figures(raw, "64")
    assert f["gateway_added_latency_p50_ms_c1"] is None and f["gateway_cpu_us_per_request_c64"] is None
    assert cpu_us_per_request(None, 10) is None
    doc = {k: 1.0 for k in STABLE_KEYS} | {k: None for k in f if k in STABLE_KEYS}
    failed = unmeasured_headlines(doc, ["gateway"])
    assert {line.split(":")[0] for line in failed} == {
        "gateway_added_latency_p50_ms_c1",
        "gateway_cpu_us_per_request_c64",
    }


def test_new_keys_are_headline_figures_of_the_gateway_bench() -> None:
    for key in NEW_KEYS:
        assert key in STABLE_KEYS and KEY_OWNER[key] == "gateway"
    raw = {**_raw(), **overhead_figures(_raw(), "64"), "gateway_http_vs_triton_rps_ratio_c64": 0.5}
    section = normalise_section("gateway", adapt("gateway", raw))
    for key in NEW_KEYS:
        assert section["metrics"][key] is not None
    latency_rows = [r for r in section["rows"] if r["load generator"] == "grpc.aio client"]
    assert [(r["server"], r["p50 ms"]) for r in latency_rows] == [("Triton alone", 0.8), ("gateway", 1.7)]


def test_cpu_meter_counts_from_its_start() -> None:
    reads = iter([2.0, 5.5])
    assert CpuMeter(lambda: next(reads)).start().stop() == 3.5
