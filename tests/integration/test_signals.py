"""Long-running commands stop gracefully on SIGTERM/SIGINT and exit 0 (supervisors read 143 as a crash)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from treeserve import procs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_gateway_stops_gracefully_with_status_0(gateway_stack: Any, demo_world: Any, sig: int) -> None:
    name = f"signal-{sig}"
    gw = gateway_stack.start_gateway(demo_world, name=name)
    assert gw.proc is not None
    r = httpx.post(
        f"{gw.url}/v1/models/churn-prediction/predict",
        json={"entities": [{"customer_id": demo_world.customer_ids(1)[0]}]},
        timeout=10,
    )
    assert r.status_code == 200
    os.kill(gw.proc.pid, sig)
    try:
        status = gw.proc.wait(timeout=30)
    finally:
        gw.stop()
    assert status == 0, gw.log_tail()
    files = (gateway_stack.root / name / "predlog" / "churn-prediction").glob("date=*/part-*.parquet")
    log = pd.concat([pd.read_parquet(f) for f in files])  # the graceful stop converted the log
    assert list(log["request_id"]) == [r.json()["request_id"]]


def test_sync_watch_stops_gracefully_with_status_0(tmp_path: Path) -> None:
    port = procs.free_port()
    env = {k: v for k, v in os.environ.items() if not (k.startswith("TREESERVE_") or k.startswith("MLFLOW_"))}
    env |= {
        "TREESERVE_HOME": str(tmp_path),
        "TREESERVE_SYNC__WEBHOOK_PORT": str(port),
        "TREESERVE_SYNC__POLL_INTERVAL_S": "600",
    }
    exe = Path(sys.executable).with_name("treeserve")
    proc = procs.start_background([str(exe), "sync", "--watch"], log_file=tmp_path / "sync.log", env=env)
    try:
        assert procs.wait_until(
            lambda: procs.http_ok(f"http://127.0.0.1:{port}/healthz"),
            timeout_s=60,
            alive=lambda: proc.poll() is None,
        ), (tmp_path / "sync.log").read_text()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            procs.stop_pid(proc.pid)
    assert status == 0, (tmp_path / "sync.log").read_text()[-2000:]
