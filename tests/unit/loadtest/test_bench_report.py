"""BENCHMARKS.md / .json from a results dict; the suite's tolerant calling of other benches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest.bench import (
    call_with_available,
    derive_curve_metrics,
    resolve_bench,
    run_section,
    write_outputs,
)
from loadtest.bench_report import (
    STABLE_KEYS,
    build_json,
    fmt,
    markdown_table,
    median_min_max,
    normalise_section,
    not_measured,
    render_markdown,
)
from loadtest.charts import render_curves

MACHINE = {
    "cpu_model": "AMD EPYC",
    "usable_cores": 2,
    "memory_gib": 23.4,
    "os": "Linux 6",
    "python": "3.11.9",
}


def _gateway_section() -> dict[str, Any]:
    return {
        "title": "Gateway vs baseline vs Triton",
        "command": "python -m loadtest.bench --only gateway",
        "rows": [{"server": "gateway", "concurrency": 64, "req/s": median_min_max([4100.0, 3900.0, 4200.0])}],
        "curves": {
            "gateway": [
                {"concurrency": 64, "rps": 4000.0, "p99_ms": 30.0},
                {"concurrency": 1, "rps": 900.0, "p99_ms": 2.0},
            ],
            "baseline": [
                {"concurrency": 64, "rps": {"median": 800.0, "min": 700.0, "max": 850.0}, "p99_ms": 400.0}
            ],
            "triton": [{"concurrency": 64, "rps": 8000.0, "p99_ms": 10.0}],
        },
        "feature_coalesced_vs_per_request_ratio": 5.5,
    }


def test_median_min_max() -> None:
    assert median_min_max([3, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    with pytest.raises(ValueError):
        median_min_max([])


def test_cells_show_medians_with_their_range() -> None:
    assert fmt({"median": 812.4, "min": 790.0, "max": 840.2, "n": 3}) == "812 (790–840)"
    assert fmt({"median": 0.5, "min": 0.5, "max": 0.5, "n": 1}) == "0.5"
    assert fmt(None) == "—"
    assert fmt(12345.6) == "12 346"
    assert fmt(1.2e-7) == "1.20e-07"
    assert fmt("a|b") == "a\\|b"


def test_markdown_table_uses_the_union_of_columns() -> None:
    table = markdown_table([{"a": 1, "b": 2.5}, {"a": 3, "c": "x"}])
    assert table.splitlines()[0] == "| a | b | c |"
    assert table.splitlines()[3] == "| 3 | — | x |"


def test_stable_keys_come_from_metrics_top_level_keys_and_curves() -> None:
    section = normalise_section("gateway", _gateway_section())
    derive_curve_metrics(section)
    m = section["metrics"]
    assert m["feature_coalesced_vs_per_request_ratio"] == 5.5
    assert m["gateway_vs_baseline_rps_ratio_c64"] == pytest.approx(5.0)
    assert m["gateway_vs_triton_rps_ratio_c64"] == pytest.approx(0.5)
    assert m["gateway_p99_ms_c64"] == 30.0 and m["baseline_p99_ms_c64"] == 400.0


def test_reported_metrics_win_over_derived_ones() -> None:
    section = normalise_section("gateway", {**_gateway_section(), "metrics": {"gateway_p99_ms_c64": 28.0}})
    derive_curve_metrics(section)
    assert section["metrics"]["gateway_p99_ms_c64"] == 28.0


def test_missing_benchmarks_are_reported_not_invented() -> None:
    sections = {
        "gateway": normalise_section("gateway", _gateway_section()),
        "promotion": not_measured("loadtest/bench_promotion.py does not exist yet"),
    }
    derive_curve_metrics(sections["gateway"])
    doc = build_json(
        sections, machine=MACHINE, generated_at="2026-11-27 10:00 UTC", command="make bench", wall_time_s=600
    )
    assert list(doc)[: len(STABLE_KEYS)] == list(STABLE_KEYS)
    assert doc["promotion_latency_webhook_s"] is None
    assert doc["not_measured"]["promotion_latency_webhook_s"] == (
        "promotion: loadtest/bench_promotion.py does not exist yet"
    )
    assert doc["triton_dynamic_batching_speedup_c32"] is None
    assert doc["not_measured"]["triton_dynamic_batching_speedup_c32"] == "the triton benchmark was not run"
    assert doc["machine"]["usable_cores"] == 2
    json.dumps(doc)  # serialisable

    md = render_markdown(doc, chart_links={"gateway": ["docs/bench/gateway.png"]})
    assert "2 cores (AMD EPYC)" in md
    assert "| `gateway_vs_baseline_rps_ratio_c64` | 5.00 |" in md
    assert "not measured: loadtest/bench_promotion.py does not exist yet" in md
    assert "## Promotion latency (webhook vs poll)" in md
    assert "python -m loadtest.bench --only gateway" in md
    assert "4 100 (3 900–4 200)" in md
    assert "![gateway](docs/bench/gateway.png)" in md


def test_a_non_dict_result_is_not_measured() -> None:
    assert normalise_section("x", 3.0)["status"] == "not measured"


def test_bench_functions_get_only_the_arguments_they_name() -> None:
    def bench(settings: str, *, repeats: int = 1) -> dict[str, Any]:
        return {"settings": settings, "repeats": repeats}

    assert call_with_available(bench, {"settings": "s", "repeats": 5, "world": object()}) == {
        "settings": "s",
        "repeats": 5,
    }

    def needs_more(cluster: str) -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError, match="needs 'cluster'"):
        call_with_available(needs_more, {"settings": "s"})


def test_missing_module_or_failing_bench_becomes_a_reason() -> None:
    assert (
        resolve_bench("loadtest.bench_does_not_exist", "run")
        == "loadtest/bench_does_not_exist.py does not exist yet"
    )
    assert (
        resolve_bench("loadtest.bench_report", "run_nothing") == "loadtest.bench_report has no run_nothing()"
    )

    def broken() -> dict[str, Any]:
        raise RuntimeError("Triton did not start")

    section = run_section("triton", broken, {})
    assert section == {"status": "not measured", "reason": "RuntimeError: Triton did not start"}


def test_charts_and_reports_are_written(tmp_path: Path) -> None:
    png = render_curves(_gateway_section()["curves"], tmp_path / "c.png", title="t")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert render_curves({}, tmp_path / "none.png", title="t") is None

    sections = {"gateway": normalise_section("gateway", _gateway_section())}
    doc = write_outputs(sections, out_dir=tmp_path, command="make bench", wall_time_s=1.0)
    assert (tmp_path / "docs" / "bench" / "gateway.png").exists()
    assert json.loads((tmp_path / "BENCHMARKS.json").read_text())["charts"] == ["docs/bench/gateway.png"]
    assert "docs/bench/gateway.png" in (tmp_path / "BENCHMARKS.md").read_text()
    assert doc["machine"]["usable_cores"] >= 1
    # --out-dir need not exist yet: the run's figures are written, not lost to a traceback.
    write_outputs(sections, out_dir=tmp_path / "new" / "dir", command="make bench", wall_time_s=1.0)
    assert (tmp_path / "new" / "dir" / "BENCHMARKS.json").exists()


def test_gateway_results_become_rows_and_curves() -> None:
    from loadtest.bench_adapters import adapt

    raw = {
        "http": {
            "gateway": {
                "1": {"rps": 900.0, "p50_ms": 1.0, "p99_ms": 2.0},
                "64": {"rps": 4000.0, "p99_ms": 30.0},
            },
            "baseline": {"64": {"rps": 800.0, "p99_ms": 400.0, "non_2xx": 3}},
        },
        "grpc": {"triton": {"64": {"rps": 8000.0}}},
        "gateway_vs_baseline_rps_ratio_c64": 5.0,
        "online_store": "redis",
    }
    section = normalise_section("gateway", adapt("gateway", raw))
    assert section["metrics"]["gateway_vs_baseline_rps_ratio_c64"] == 5.0
    assert [p["concurrency"] for p in section["curves"]["gateway (HTTP, wrk)"]] == [1, 64]
    assert section["curves"]["Triton alone (gRPC, h2load)"] == [
        {"concurrency": 64, "rps": 8000.0, "p99_ms": None}
    ]
    baseline_row = next(r for r in section["rows"] if r["server"] == "baseline")
    assert baseline_row["errors"] == 3 and baseline_row["req/s"] == 800.0


def test_unknown_layouts_are_shown_as_a_flat_table() -> None:
    from loadtest.bench_adapters import adapt

    section = adapt("promotion", {"webhook": {"latency_s": {"median": 1.2, "min": 1.0, "max": 1.5}}, "n": 3})
    assert {"figure": "webhook.latency_s", "value": {"median": 1.2, "min": 1.0, "max": 1.5}} in section[
        "rows"
    ]
    assert {"figure": "n", "value": 3} in section["rows"]
