"""N Triton servers x M gateways from one registry alias, on loopback: three Triton servers on one
shared repository (the third starts later, empty), two gateways and one ``sync --watch``, all on
free ports with their own state and stopped by PID, under steady load from 8 async clients.

(a) ``kill -9`` of one Triton costs no failed request, and the sync brings the restarted (empty)
server back in line without a manual step; (b) a promotion and a rollback under load cost no
failed request and every gateway answers with the new version (the mixed-version window is
printed); (c) a Triton started empty serves the routed version (the time is printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.triton_admin import TritonAdminClient
from gateway.server import GatewayProcess
from tests.fixtures.triton import private_triton
from treeserve import procs
from treeserve.repository import read_model_config

pytestmark = pytest.mark.integration
CLIENTS = 8


class Load:
    """``CLIENTS`` async clients spread over the gateways; every answer kept as
    (monotonic time, gateway index, status, model version or error)."""

    def __init__(self, urls: list[str], ids: list[str], model: str) -> None:
        self.urls, self.ids, self.path = urls, ids, f"/v1/models/{model}/predict"
        self.answers: list[tuple[float, int, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        deadline = time.monotonic() + 240  # bounded even if the test body fails
        async with httpx.AsyncClient(timeout=10.0) as c:

            async def client(k: int) -> None:
                i = k
                while not self._stop.is_set() and time.monotonic() < deadline:
                    i += CLIENTS
                    g = i % len(self.urls)
                    body = {"entities": [{"customer_id": self.ids[i % len(self.ids)]}]}
                    try:
                        r = await c.post(self.urls[g] + self.path, json=body)
                        what = r.json().get("model_version", "") if r.status_code == 200 else r.text[:200]
                        self.answers.append((time.monotonic(), g, r.status_code, what))
                    except httpx.HTTPError as e:
                        self.answers.append((time.monotonic(), g, 0, repr(e)))

            await asyncio.gather(*(client(k) for k in range(CLIENTS)))

    def count(self) -> int:
        return len(self.answers)

    def more(self, n: int, timeout_s: float = 60) -> bool:
        start = self.count()
        return procs.wait_until(lambda: self.count() >= start + n, timeout_s=timeout_s, interval_s=0.05)

    def failed(self) -> list[tuple[float, int, int, str]]:
        return [a for a in list(self.answers) if a[2] != 200]

    def every_gateway_answers(self, version: str, since: float) -> bool:
        last: dict[int, str] = {}
        for t, g, status, v in list(self.answers):
            if t >= since and status == 200:
                last[g] = v
        return len(last) == len(self.urls) and set(last.values()) == {version}

    def mixed_window_s(self, old: str, new: str, since: float) -> float:
        """From the first answer with ``new`` to the last answer with ``old`` (0 when none after)."""
        answers = [(t, v) for t, _, s, v in list(self.answers) if t >= since and s == 200]
        first_new = min((t for t, v in answers if v == new), default=None)
        if first_new is None:
            return float("nan")
        last_old = max((t for t, v in answers if v == old), default=first_new)
        return max(0.0, last_old - first_new)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def private_registry(world: Any, folder: Path) -> tuple[str, str]:
    """A copy of the demo world's MLflow (aliases move here only) with a second version of its
    champion registered; (tracking URI, new version)."""
    from mlflow import MlflowClient

    src = Path(world.settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    folder.mkdir(parents=True)
    shutil.copy(src, folder / "mlflow.db")  # artifacts stay where they are (read only)
    with sqlite3.connect(folder / "mlflow.db") as db:
        db.execute("PRAGMA wal_checkpoint")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(world.model_name, world.version)
    new = client.create_model_version(
        world.model_name, mv.source, run_id=mv.run_id, model_id=getattr(mv, "model_id", None)
    )
    return uri, str(new.version)


def routing(repository: Path, model: str) -> dict[str, str]:
    try:
        return dict(read_model_config(repository, model).routing)
    except Exception:
        return {}


def ready_on(url: str, model: str) -> set[str]:
    try:
        with TritonAdminClient(url, timeout_s=2.0) as c:
            return c.ready_versions(model)
    except Exception:
        return set()


@pytest.fixture
def tritons(tmp_path: Path) -> Iterator[list[Any]]:
    """Three Triton servers (not started) on one shared repository."""
    repository = tmp_path / "model_repository"
    repository.mkdir()
    servers = [private_triton(repository, tmp_path / f"triton-{k}") for k in range(3)]
    try:
        yield servers
    finally:
        for s in servers:
            pid = s.pid()
            s.stop(timeout_s=10.0)
            if pid:
                procs.stop_pid(pid, timeout_s=5.0)


def test_three_tritons_two_gateways_one_sync_under_load(
    demo_world: Any, tritons: list[Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    model, v1 = demo_world.model_name, demo_world.version
    uri, v2 = private_registry(demo_world, tmp_path / "mlflow")
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    a, b, c = tritons
    for server in (a, b):  # c stays down: the lists name a server that is not there yet
        server.start()
    env = demo_world.subprocess_env(
        {
            "TREESERVE_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": uri,
            "TREESERVE_MLFLOW__TRACKING_URI": uri,
            "TREESERVE_EXPORTER__REPOSITORY": str(a.repository),
            "TREESERVE_GATEWAY__MODEL": model,
        }
    )
    sync_env = {
        **env,
        "TREESERVE_SYNC__MODELS": json.dumps([model]),
        "TREESERVE_SYNC__TRITON_URLS": json.dumps([s.http_url for s in tritons]),
        "TREESERVE_SYNC__POLL_INTERVAL_S": "1",
        "TREESERVE_SYNC__HEALTH_INTERVAL_S": "0.5",
        "TREESERVE_SYNC__KEEP_CHAMPIONS": "1",
        "TREESERVE_SYNC__UNLOAD_GRACE_S": "1.5",
        "TREESERVE_SYNC__WEBHOOK_PORT": str(procs.free_port()),
    }
    exe = str(Path(sys.executable).with_name("treeserve"))
    sync = procs.start_background([exe, "sync", "--watch"], log_file=tmp_path / "sync.log", env=sync_env)
    gateways: list[GatewayProcess] = []
    try:
        assert procs.wait_until(
            lambda: routing(a.repository, model) == {"champion": v1},
            timeout_s=120,
            alive=lambda: sync.poll() is None,
        ), (tmp_path / "sync.log").read_text()[-3000:]
        assert v1 in ready_on(a.http_url, model) and v1 in ready_on(b.http_url, model)

        # An unreachable server in the list: the sync runs degraded and names it.
        status_file = tmp_path / "home" / "var" / "sync" / "status.json"
        assert procs.wait_until(status_file.exists, timeout_s=120, alive=lambda: sync.poll() is None)
        out = subprocess.run(
            [exe, "sync", "status", "--json", "--no-live"], env=sync_env, capture_output=True, text=True
        )
        report = json.loads(out.stdout)
        assert report["servers"][c.http_url.split("://")[-1]]["last_pass"]["up"] is False
        assert report["last_pass"]["result"] == "degraded"

        gw_env = {
            **env,
            "TREESERVE_GATEWAY__TRITON__GRPC_URLS": json.dumps([s.grpc_url for s in tritons]),
            "TREESERVE_GATEWAY__TRITON__BREAKER_RESET_S": "0.5",
            # A deadline for a shared 2-core machine that also loads models on three servers.
            "TREESERVE_GATEWAY__TRITON__TIMEOUT_S": "2",
            "TREESERVE_GATEWAY__ROUTING_POLL_INTERVAL_S": "0.5",
        }
        for k in range(2):
            folder = tmp_path / f"gateway-{k}"
            env_k = {**gw_env, "TREESERVE_GATEWAY__PREDLOG_DIR": str(folder / "predlog")}
            gateways.append(
                GatewayProcess(
                    env=env_k, port=procs.free_port(), grpc_port=0, log_file=folder / "gateway.log"
                )
            )
        starters = [threading.Thread(target=g.start, kwargs={"timeout_s": 120}) for g in gateways]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        ready = httpx.get(f"{gateways[0].url}/readyz", timeout=10).json()
        assert ready["ready"] and c.grpc_url.split("://")[-1] in ready["degraded"], ready

        with Load([g.url for g in gateways], demo_world.customer_ids(300), model) as load:
            assert load.more(100)

            # (c) a Triton started empty serves the routed version.
            c.start()
            t0 = time.monotonic()
            assert procs.wait_until(lambda: v1 in ready_on(c.http_url, model), timeout_s=60, interval_s=0.05)
            empty_to_serving_s = time.monotonic() - t0
            assert load.more(100)

            # (a) kill -9 one Triton under load; restarted, the sync brings it back in line.
            os.killpg(a.pid(), signal.SIGKILL)
            assert load.more(300)
            a.start()
            t0 = time.monotonic()
            assert procs.wait_until(lambda: v1 in ready_on(a.http_url, model), timeout_s=60, interval_s=0.05)
            restarted_to_serving_s = time.monotonic() - t0
            assert load.more(200)

            # (b) promotion and rollback under load.
            windows = {}
            for old, new in ((v1, v2), (v2, v1)):
                since = time.monotonic()
                registry.set_registered_model_alias(model, "champion", new)
                assert procs.wait_until(
                    lambda new=new, since=since: load.every_gateway_answers(new, since), timeout_s=90
                ), "not every gateway answers with the new version"
                assert load.more(100)
                windows[f"{old}->{new}"] = load.mixed_window_s(old, new, since)
            for s in (a, b, c):
                assert {v1, v2} <= ready_on(s.http_url, model), s.http_url
        failed = load.failed()
        print(
            f"\nmulti-Triton: {load.count()} requests, {len(failed)} failed; empty Triton -> serving "
            f"{empty_to_serving_s:.2f} s; killed+restarted Triton -> serving {restarted_to_serving_s:.2f} s; "
            f"mixed-version window {', '.join(f'{k}: {w:.3f} s' for k, w in windows.items())}"
        )
        assert failed == [], failed[:5]
        # Which trigger brought the restarted server back (the 0.5 s health probe or the 1 s poll)
        # is a race on a shared machine; that the probe wakes a pass is a unit test of
        # SyncService.needs_pass. Here: the sync alone brought it back (asserted above).
    finally:
        for g in gateways:
            g.stop()
        procs.stop_pid(sync.pid, timeout_s=15)
