"""Outside faults under load heal without a gateway restart: Triton killed and restarted, Redis
stopped and restarted (private servers, stopped by PID); 503 + Retry-After meanwhile, never 500."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.server import GatewayProcess
from tests.fixtures.feast_data import feast_world, teardown_feast
from tests.fixtures.triton import private_triton
from treeserve import procs

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/churn-prediction/predict"


class Load:
    """``clients`` concurrent single-entity requests in a thread until stopped; every answer kept."""

    def __init__(self, url: str, ids: list[str], *, clients: int = 8) -> None:
        self.url, self.ids, self.clients = url, ids, clients
        self.answers: list[tuple[int, str, str]] = []
        """(status, error kind, Retry-After header)"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0) as c:

            async def client(k: int) -> None:
                i = k
                while not self._stop.is_set():
                    i += self.clients
                    body = {"entities": [{"customer_id": self.ids[i % len(self.ids)]}]}
                    r = await c.post(PREDICT, json=body)
                    kind = r.json().get("error", "") if r.status_code != 200 else ""
                    self.answers.append((r.status_code, kind, r.headers.get("retry-after", "")))

            await asyncio.gather(*(client(k) for k in range(self.clients)))

    def seen(self, status: int, kind: str | None = None) -> int:
        """How many answers had ``status`` (and error ``kind``)."""
        return sum(1 for s, k, _ in list(self.answers) if s == status and (kind is None or k == kind))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def circuit_state(gw: GatewayProcess) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    m = re.search(r"^treeserve_gateway_circuit_state\{[^}]*\} ([\d.]+)$", text, re.M)
    assert m, "no circuit_state metric"
    return float(m.group(1))


def ready(gw: GatewayProcess) -> tuple[int, dict[str, str]]:
    r = httpx.get(f"{gw.url}/readyz", timeout=10)
    return r.status_code, r.json().get("checks", {})


def start_gateway(stack: Any, world: Any, folder: Path, **env: str) -> GatewayProcess:
    full = stack.env(world, predlog_dir=str(folder / "predlog"))
    full["TREESERVE_GATEWAY__TRITON__BREAKER_RESET_S"] = "0.5"
    full.update(env)
    return GatewayProcess(
        env=full, port=procs.free_port(), grpc_port=0, log_file=folder / "gateway.log"
    ).start(timeout_s=90)


@pytest.fixture
def own_triton(gateway_stack: Any, tmp_path: Path) -> Iterator[Any]:
    """A Triton of this test only (it gets killed), serving a copy of the stack's repository."""
    repository = tmp_path / "model_repository"
    shutil.copytree(gateway_stack.repository, repository)
    server = private_triton(repository, tmp_path / "triton")
    server.start()
    server.load_model(gateway_stack.model)
    server.admin.wait_version_ready(gateway_stack.model, gateway_stack.version)
    try:
        yield server
    finally:
        server.stop(timeout_s=15.0)
        pid = server.pid()
        if pid:
            procs.stop_pid(pid, timeout_s=5.0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_killed_and_restarted_under_load(
    gateway_stack: Any, demo_world: Any, own_triton: Any, tmp_path: Path, protocol: str
) -> None:
    # Both transports: HTTP's kept-alive connections go stale with the kill, gRPC's channel reconnects.
    port = own_triton.http_port if protocol == "http" else own_triton.grpc_port
    gw = start_gateway(
        gateway_stack,
        demo_world,
        tmp_path,
        TREESERVE_GATEWAY__TRITON__PROTOCOL=protocol,
        **{f"TREESERVE_GATEWAY__TRITON__{protocol.upper()}_URL": f"127.0.0.1:{port}"},
    )
    model, version = gateway_stack.model, gateway_stack.version
    try:
        with Load(gw.url, demo_world.customer_ids(500)) as load:
            assert procs.wait_until(lambda: load.seen(200) > 50, timeout_s=60)
            pid = own_triton.pid()
            os.killpg(pid, signal.SIGKILL)
            assert procs.wait_until(lambda: load.seen(503) > 20, timeout_s=60)
            assert procs.wait_until(lambda: circuit_state(gw) != 0, timeout_s=30)
            assert ready(gw)[0] == 503

            # Triton back, but empty (explicit model control): answering is not serving.
            own_triton.start()
            assert procs.wait_until(lambda: ready(gw)[1].get("triton") == "ok", timeout_s=60)
            refused = load.seen(503, "triton_unavailable")
            assert procs.wait_until(lambda: load.seen(503, "triton_unavailable") > refused + 5, timeout_s=60)
            status, checks = ready(gw)
            assert status == 503 and "not ready" in checks[f"model:{model}"]
            assert circuit_state(gw) != 0  # the breaker agrees with readiness: not closed

            served = load.seen(200)
            own_triton.load_model(model)
            own_triton.admin.wait_version_ready(model, version)
            assert procs.wait_until(lambda: load.seen(200) > served + 50, timeout_s=60)
            assert ready(gw)[0] == 200 and circuit_state(gw) == 0
        answers = Counter(s for s, _, _ in load.answers)
        assert set(answers) <= {200, 503}, answers  # never a 500 (nor a 504 past the deadline)
        assert all(ra for s, _, ra in load.answers if s == 503)
    finally:
        gw.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``redis-server`` on a free port whose data survives a stop (saved on SIGTERM)."""
    port = procs.free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    cmd = [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--save", "3600 1", "--appendonly", "no", "--protected-mode", "no",
    ]  # fmt: skip
    state: dict[str, Any] = {"port": port, "cmd": cmd, "log": folder / "redis.log"}

    def start() -> subprocess.Popen[bytes]:
        proc = procs.start_background(cmd, log_file=state["log"])
        assert procs.wait_until(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                == "PONG"
            ),
            timeout_s=30,
            alive=lambda: proc.poll() is None,
        )
        state["proc"] = proc
        return proc

    state["start"] = start
    start()
    try:
        yield state
    finally:
        procs.stop_pid(state["proc"].pid, timeout_s=10)


def test_redis_stopped_and_restarted_under_load(
    gateway_stack: Any, demo_world: Any, private_redis: dict[str, Any], tmp_path: Path
) -> None:
    world = feast_world(
        demo_world,
        project=f"ts_{uuid.uuid4().hex[:10]}",
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{private_redis['port']}",
        registry_uri=f"sqlite:///{tmp_path / 'registry.db'}",
    )
    gw = start_gateway(gateway_stack, world, tmp_path)
    try:
        with Load(gw.url, world.customer_ids(500)) as load:
            assert procs.wait_until(lambda: load.seen(200) > 50, timeout_s=60)
            redis = private_redis["proc"]
            procs.stop_pid(redis.pid, timeout_s=20)  # SIGTERM: Redis saves, then exits
            redis.wait(timeout=10)
            assert procs.wait_until(lambda: load.seen(503, "feature_store_unavailable") > 20, timeout_s=60)
            status, checks = ready(gw)
            assert status == 503 and any(
                k.startswith("online_store") and v != "ok" for k, v in checks.items()
            )

            private_redis["start"]()
            served = load.seen(200)
            assert procs.wait_until(lambda: load.seen(200) > served + 50, timeout_s=60)
            assert ready(gw)[0] == 200
        answers = Counter(s for s, _, _ in load.answers)
        assert set(answers) <= {200, 503}, answers
        assert all(ra for s, _, ra in load.answers if s == 503)
    finally:
        gw.stop()
        teardown_feast(world.settings)
