"""The prediction log against a real gateway process: kill -9 loses nothing it answered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/churn-prediction/predict"


async def answer_many(url: str, ids: list[str], *, concurrency: int) -> list[httpx.Response]:
    """One single-entity request per id, ``concurrency`` at a time."""
    queue = list(ids)
    out: list[httpx.Response] = []

    async def client(c: httpx.AsyncClient) -> None:
        while queue:
            cid = queue.pop()
            out.append(await c.post(PREDICT, json={"entities": [{"customer_id": cid}]}))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
    return out


def treeserve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("treeserve")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120)


def logged_rows(predlog_dir: Path) -> pd.DataFrame:
    files = sorted((predlog_dir / "churn-prediction").glob("date=*/part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_kill_9_loses_no_answered_row(gateway_stack: Any, demo_world: Any, fsync: str) -> None:
    name = f"kill9-{fsync}"
    predlog_dir = gateway_stack.root / name / "predlog"
    # Segments never rotate during the run: every answered row exists only in the write-ahead log.
    gw = gateway_stack.start_gateway(demo_world, name=name, predlog_fsync=fsync, predlog_segment_s=3600)
    assert gw.proc is not None
    ids = random.Random(7).choices(demo_world.customer_ids(5_000), k=400)
    try:
        responses = asyncio.run(answer_many(gw.url, ids, concurrency=32))
    finally:
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(timeout=10)
        gw.proc = None
    answered = {r.json()["request_id"] for r in responses if r.status_code == 200}
    assert len(answered) == len(ids)  # N answered (each response carries its own request_id)
    assert logged_rows(predlog_dir).empty  # nothing reached Parquet before the kill

    done = treeserve("predlog", "recover", "--dir", str(predlog_dir), env=gateway_stack.env(demo_world))
    assert done.returncode == 0, done.stderr
    assert f"recovered {len(ids)} rows" in done.stdout
    log = logged_rows(predlog_dir)
    assert len(log) == len(ids) and set(log["request_id"]) == answered
    assert log["request_id"].is_unique and log["score"].notna().all()
    again = treeserve("predlog", "recover", "--dir", str(predlog_dir), env=gateway_stack.env(demo_world))
    assert "recovered 0 rows" in again.stdout and len(logged_rows(predlog_dir)) == len(ids)


def test_unwritable_log_directory_answers_503_and_says_why(
    gateway_stack: Any, demo_world: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    gw = gateway_stack.start_gateway(
        demo_world, name="unwritable", wait_ready=False, predlog_dir=str(blocker / "predlog")
    )
    try:
        r = httpx.post(f"{gw.url}{PREDICT}", json={"entities": [{"customer_id": "cust-000001"}]}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"] == "predlog_unavailable" and "Not a directory" in r.json()["message"]
        ready = httpx.get(f"{gw.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "Not a directory" in ready.json()["checks"]["predlog"]
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
        assert "treeserve_gateway_predlog_writable 0.0" in metrics
        blocker.unlink()  # fixed by the operator: serving resumes without a restart
        assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
        ok = httpx.post(f"{gw.url}{PREDICT}", json={"entities": [{"customer_id": "cust-000001"}]}, timeout=10)
        assert ok.status_code == 200
    finally:
        gw.stop()
    log = logged_rows(blocker / "predlog")
    assert list(log["request_id"]) == [ok.json()["request_id"]]
