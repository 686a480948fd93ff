"""Locust against the real gateway and Triton: every request counted, SLO misses fail the command.

Uses the session's ``demo_world`` (trained champion, SQLite Feast) and ``gateway_stack`` (the
champion exported into a private repository, served by a private Triton); this module starts its
own gateway against them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pytest

from loadtest.runner import run_loadtest
from loadtest.settings import LoadtestMixSettings

pytestmark = pytest.mark.integration


@dataclass
class LoadtestTarget:
    """The gateway under test, the settings the load tests run with, and the child environment."""

    stack: Any
    world: Any
    settings: Any
    env: dict[str, str]
    gateway: Any = None
    predlog_dir: Path = Path()

    def start_gateway(self) -> None:
        self.gateway = self.stack.start_gateway(
            self.world, name="loadtest", predlog_dir=str(self.predlog_dir)
        )

    @property
    def triton_grpc_url(self) -> str:
        return f"127.0.0.1:{self.stack.triton.grpc_port}"


@pytest.fixture(scope="module")
def target(
    demo_world: Any, gateway_stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoadtestTarget]:
    """A gateway of this module's own (stopped by PID at the end) and load-test settings aimed at it."""
    root = tmp_path_factory.mktemp("loadtest")
    s = demo_world.settings
    settings = s.model_copy(
        update={
            "exporter": s.exporter.model_copy(update={"repository": gateway_stack.repository}),
            "loadtest": s.loadtest.model_copy(update={"reports_dir": root / "reports"}),
        }
    )
    env = gateway_stack.env(demo_world) | {"TREESERVE_LOADTEST__REPORTS_DIR": str(root / "reports")}
    t = LoadtestTarget(
        stack=gateway_stack, world=demo_world, settings=settings, env=env, predlog_dir=root / "predlog"
    )
    t.start_gateway()
    try:
        yield t
    finally:
        if t.gateway is not None:
            t.gateway.stop()


def _predict_requests_counted(gateway_url: str, transport: str) -> float:
    """Sum of the gateway's request counter for prediction calls of ``transport``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(gateway_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "treeserve_gateway_requests":
            continue
        for s in family.samples:
            endpoint = s.labels.get("endpoint", "")
            if (
                s.name.endswith("_total")
                and s.labels.get("transport") == transport
                and ("predict" in endpoint or endpoint == "ModelInfer")
            ):
                total += s.value
    return total


def _predlog_rows(folder: Path) -> int:
    files = sorted(folder.rglob("*.parquet"))
    return pads.dataset(files, format="parquet").count_rows() if files else 0


def test_locust_totals_equal_the_requests_the_gateway_counted(target: LoadtestTarget) -> None:
    before = _predict_requests_counted(target.gateway.url, "http")
    result = run_loadtest(
        target.settings, target="gateway", users=4, spawn_rate=4, duration="4s", host=target.gateway.url
    )

    stats = json.loads(result.json_path.read_text())
    locust_total = sum(e["num_requests"] for e in stats)
    assert locust_total > 0
    assert sum(e["num_failures"] for e in stats) == 0
    assert result.summary.requests == locust_total and result.passed
    assert {e["name"] for e in stats} <= {"predict single", "predict batch", "predict unknown", "predict raw"}
    assert _predict_requests_counted(target.gateway.url, "http") - before == locust_total
    for name in ("stats.json", "stats_stats.csv", "report.html", "summary.json"):
        assert (result.report_dir / name).is_file()
    assert result.report_dir.parent == target.settings.path(target.settings.loadtest.reports_dir)


def test_grpc_users_reach_the_gateway_and_triton_without_failures(target: LoadtestTarget) -> None:
    before = _predict_requests_counted(target.gateway.url, "grpc")
    gw = run_loadtest(
        target.settings,
        target="gateway-grpc",
        users=2,
        spawn_rate=2,
        duration="2s",
        host=target.gateway.grpc_url,
    )
    assert gw.summary.requests > 0 and gw.summary.failures == 0
    assert _predict_requests_counted(target.gateway.url, "grpc") - before == gw.summary.requests

    tr = run_loadtest(
        target.settings, target="triton", users=2, spawn_rate=2, duration="2s", host=target.triton_grpc_url
    )
    assert tr.summary.requests > 0 and tr.summary.failures == 0


def test_an_impossible_slo_fails_the_command_with_a_clear_message(target: LoadtestTarget) -> None:
    env = target.env
    proc = subprocess.run(
        [sys.executable, "-m", "treeserve_app.cli", "loadtest", "--target", "gateway", "--users", "2", "--duration", "2s",
         "--host", target.gateway.url, "--slo-p99-ms", "0.001"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "SLO missed: p99" in proc.stderr and "> SLO 0.001 ms" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Aggregated" in proc.stdout  # the summary table is still printed


def test_a_remote_host_is_refused_before_any_request(target: LoadtestTarget) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "treeserve_app.cli", "loadtest", "--host", "http://203.0.113.7:8080", "--duration", "1s"],
        env=target.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "refusing to load-test '203.0.113.7'" in proc.stderr


def test_every_prediction_is_in_the_log_after_a_single_entity_run(
    target: LoadtestTarget, tmp_path: Path
) -> None:
    # One row per request when no batches are sent: N Locust requests -> N prediction-log rows.
    settings = target.settings.model_copy(
        update={"loadtest": target.settings.loadtest.model_copy(update={"mix": LoadtestMixSettings(batch=0)})}
    )
    gateway = target.stack.start_gateway(
        target.world, name="loadtest-predlog", predlog_dir=str(tmp_path / "predlog")
    )
    try:
        result = run_loadtest(
            settings, target="gateway", users=2, spawn_rate=2, duration="2s", host=gateway.url
        )
    finally:
        gateway.stop()  # graceful: the prediction log is flushed
    assert result.summary.requests > 0 and result.summary.failures == 0
    assert _predlog_rows(tmp_path / "predlog") == result.summary.requests


def test_a_bench_world_removes_only_its_own_redis_keys() -> None:
    import uuid

    import redis

    from loadtest.bench_world import drop_redis_project

    project = f"lt_test_{uuid.uuid4().hex[:8]}"
    client: Any = redis.Redis()
    mine = [b"\x01entity-a" + project.encode(), b"\x01entity-b" + project.encode()]
    other = f"{project}_other_prefix_kept".encode()
    try:
        for k in [*mine, other]:
            client.hset(k, "f", "1")
        assert drop_redis_project("127.0.0.1:6379", project) == 2
        assert not any(client.exists(k) for k in mine)
        assert client.exists(other)
    finally:
        client.delete(*mine, other)
        client.close()
