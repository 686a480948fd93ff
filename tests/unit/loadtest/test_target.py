"""A load test checks its target first and fails above 1% errors unless told otherwise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest.errors import LoadtestTargetError
from loadtest.report import evaluate_slo, summarize
from loadtest.runner import run_loadtest
from loadtest.target import check_target
from loadtest.workload import Workload
from tests.unit.loadtest.test_report import _entry
from treeserve.procs import free_port
from treeserve_app.settings import load_settings

WORKLOAD = Workload(model="churn-prediction", entity_key="customer_id", known_ids=["cust-000001"])
NOT_READY = {
    "triton": "ok",
    "model:churn-prediction": "version 1 of 'churn-prediction' is not ready in Triton",
}


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "not ready", "checks": NOT_READY}).encode()
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unready_gateway() -> Iterator[str]:
    """An HTTP endpoint answering /readyz 503 like a gateway whose model is not loaded (a thread)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_unready_gateway_is_refused_naming_the_failing_check(unready_gateway: str) -> None:
    with pytest.raises(
        LoadtestTargetError, match=r"not ready \(/readyz 503\): model:churn-prediction: version 1"
    ):
        check_target("gateway", unready_gateway, WORKLOAD)


def test_unreachable_targets_are_refused() -> None:
    port = free_port()
    with pytest.raises(LoadtestTargetError, match="not reachable"):
        check_target("gateway", f"http://127.0.0.1:{port}", WORKLOAD, timeout_s=2)
    with pytest.raises(LoadtestTargetError, match=r"gateway-grpc at 127\.0\.0\.1:\d+ is not reachable"):
        check_target("gateway-grpc", f"127.0.0.1:{port}", WORKLOAD, timeout_s=2)


def test_the_run_stops_before_locust_starts(unready_gateway: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with pytest.raises(LoadtestTargetError):
        run_loadtest(
            settings, host=unready_gateway, workload=WORKLOAD, report_dir=tmp_path / "r", duration="1s"
        )
    assert not (tmp_path / "r" / "locust.log").exists()


def test_without_an_explicit_limit_more_than_1_percent_errors_fails(tmp_path: Path) -> None:
    default = load_settings(home=tmp_path).loadtest.max_error_rate
    assert default == 0.01
    mostly_failed = summarize([_entry("p", {1: 10_000}, failures=9_977)])  # 99.77% errors
    (verdict,) = evaluate_slo(mostly_failed, max_error_rate=default)
    assert "error rate 99.77%" in verdict
    assert evaluate_slo(summarize([_entry("p", {1: 1000}, failures=10)]), max_error_rate=default) == []
