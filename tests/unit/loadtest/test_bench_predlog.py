"""The prediction-log benchmark's CPU figure: gateway CPU per answered request."""

from __future__ import annotations

from loadtest.bench_predlog import _cpu_us_per_request


def test_cpu_per_request_is_the_measured_cpu_over_the_answered_requests() -> None:
    assert _cpu_us_per_request({"cpu_s": 2.5, "requests": 10_000}) == 250.0


def test_a_run_without_a_cpu_reading_counts_no_cpu() -> None:
    assert _cpu_us_per_request({"requests": 100}) == 0.0
