"""A load run whose requests failed is not a measurement: the bench stops and names the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.bench_gateway import parse_wrk, require_answers

WRK_FAILING = """Running 8s test @ http://127.0.0.1:8090
  2 threads and 64 connections
  Latency Distribution
     50%  324.54ms
     99%  796.71ms
  1464 requests in 8.09s, 300.00KB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 1074
Requests/sec:    181.04
"""


def test_a_run_that_mostly_failed_stops_the_bench_naming_the_log() -> None:
    res = parse_wrk(WRK_FAILING)
    assert (res["requests"], res["non_2xx"], res["socket_errors"]) == (1464, 1074, 3)
    with pytest.raises(
        RuntimeError, match=r"baseline at c=64: 1077 of 1464 requests failed; see .*baseline.log"
    ):
        require_answers("baseline at c=64", res, Path("/tmp/x/baseline.log"))


def test_a_clean_run_or_a_stray_timeout_passes() -> None:
    require_answers("gateway at c=64", {"requests": 24420, "non_2xx": 0, "socket_errors": 3}, Path("g.log"))
    with pytest.raises(RuntimeError, match="0 of 0 requests"):
        require_answers("gateway at c=1", {"requests": 0}, Path("g.log"))
