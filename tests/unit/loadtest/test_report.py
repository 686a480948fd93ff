"""Reading Locust's JSON back: totals, percentiles, SLO verdicts, report folders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loadtest.errors import LoadtestRunError
from loadtest.report import (
    evaluate_slo,
    format_summary,
    new_report_dir,
    percentile,
    read_summary,
    summarize,
    top_failure,
)


def _entry(
    name: str, times: dict[int, int], failures: int = 0, start: float = 100.0, last: float = 110.0
) -> dict:
    n = sum(times.values())
    return {
        "name": name,
        "method": "POST",
        "start_time": start,
        "last_request_timestamp": last,
        "num_requests": n,
        "num_none_requests": 0,
        "num_failures": failures,
        "total_response_time": float(sum(k * v for k, v in times.items())),
        "max_response_time": float(max(times)),
        "min_response_time": float(min(times)),
        "total_content_length": 0,
        # JSON turns the histogram keys into strings, exactly as Locust's file has them.
        "response_times": {str(k): v for k, v in times.items()},
        "num_reqs_per_sec": {},
        "num_fail_per_sec": {},
    }


def test_percentile_of_a_histogram() -> None:
    hist = {1.0: 90, 5.0: 9, 50.0: 1}
    assert percentile(hist, 0.5) == 1.0
    assert percentile(hist, 0.95) == 5.0
    assert percentile(hist, 0.99) == 5.0
    assert percentile(hist, 1.0) == 50.0
    assert percentile({}, 0.99) == 0.0


def test_summary_totals_add_up_over_request_names() -> None:
    entries = [
        _entry("predict single", {2: 900, 4: 95, 20: 5}),
        _entry("predict batch", {10: 90, 30: 10}, failures=4),
    ]
    s = summarize(entries)
    assert s.requests == 1100
    assert s.failures == 4
    assert s.error_rate == pytest.approx(4 / 1100)
    assert s.rps == pytest.approx(110.0)  # 1100 requests over 10 s
    assert s.total.p50_ms == 2.0
    assert s.total.p99_ms == 20.0
    assert [e.name for e in s.endpoints] == ["predict batch", "predict single"]
    assert s.endpoints[0].error_rate == pytest.approx(0.04)
    assert s.percentile_source == "locust"


def test_fine_histogram_wins_when_its_count_matches() -> None:
    entries = [_entry("predict single", {0: 100})]  # Locust rounded 0.3 ms down to 0
    s = summarize(entries, fine_buckets={"30": 99, "250": 1})  # 10 µs buckets: 0.305 ms, 2.505 ms
    assert s.percentile_source == "fine"
    assert s.total.p50_ms == pytest.approx(0.305)
    assert s.total.p99_ms == pytest.approx(0.305)
    assert percentile({0.305: 99, 2.505: 1}, 1.0) == pytest.approx(2.505)


def test_fine_histogram_ignored_when_counts_disagree() -> None:
    s = summarize([_entry("x", {3: 10})], fine_buckets={"30": 4})
    assert s.percentile_source == "locust"
    assert s.total.p99_ms == 3.0


def test_read_summary_from_report_folder(tmp_path: Path) -> None:
    (tmp_path / "stats.json").write_text(json.dumps([_entry("predict single", {1: 10})]))
    assert read_summary(tmp_path).requests == 10


def test_read_summary_without_report_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(LoadtestRunError, match=r"stats\.json"):
        read_summary(tmp_path)


def test_slo_verdicts() -> None:
    s = summarize([_entry("p", {5: 98, 40: 2}, failures=2)])
    assert evaluate_slo(s) == []
    assert evaluate_slo(s, slo_p99_ms=50, max_error_rate=0.05) == []
    p99_miss = evaluate_slo(s, slo_p99_ms=0.001)
    assert len(p99_miss) == 1 and "p99 40.000 ms > SLO 0.001 ms" in p99_miss[0]
    err_miss = evaluate_slo(s, max_error_rate=0.01)
    assert len(err_miss) == 1 and "error rate 2.00% (2/100)" in err_miss[0]
    assert len(evaluate_slo(s, slo_p99_ms=1, max_error_rate=0.0)) == 2


def test_a_run_that_never_reached_the_service_always_fails() -> None:
    assert evaluate_slo(summarize([])) == ["no request completed during the run"]
    all_failed = summarize([_entry("p", {1: 5}, failures=5)])
    assert evaluate_slo(all_failed) == ["every request failed (5/5)"]


def test_most_frequent_failure_is_read_from_the_csv(tmp_path: Path) -> None:
    (tmp_path / "stats_failures.csv").write_text(
        "Method,Name,Error,Occurrences\nPOST,predict single,HTTP 503: triton down,7\nPOST,predict raw,HTTP 422: bad,1\n"
    )
    assert top_failure(tmp_path) == "predict single: HTTP 503: triton down (×7)"
    assert top_failure(tmp_path / "nothing") == ""


def test_report_dirs_are_timestamped_and_never_reused(tmp_path: Path) -> None:
    now = datetime(2026, 11, 27, 9, 30, 5, tzinfo=UTC)
    a = new_report_dir(tmp_path / "reports", now=now)
    b = new_report_dir(tmp_path / "reports", now=now)
    assert a.name == "20261127T093005Z" and a.is_dir()
    assert b.name == "20261127T093005Z-2" and b.is_dir()


def test_summary_table_lists_each_name_and_the_aggregate() -> None:
    text = format_summary(summarize([_entry("predict single", {2: 10}), _entry("predict raw", {3: 10})]))
    assert "predict single" in text and "predict raw" in text and "Aggregated" in text


def test_headline_is_one_line_with_the_figures_users_read() -> None:
    line = summarize([_entry("predict single", {2: 99, 9: 1}, failures=1)]).headline()
    assert line == "100 requests in 10.0 s, 10.0 req/s, p50 2.00 ms, p95 2.00 ms, p99 2.00 ms, errors 1.00%"
