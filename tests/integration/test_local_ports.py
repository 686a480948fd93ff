"""Ports told once: a Triton started on custom ports is found by the sync and the gateway.

``treeserve triton start --http-port/--grpc-port/--metrics-port`` records where it listens; ``sync
--once`` and ``treeserve gateway`` run without any Triton address setting and still use it. After a
restart, ``triton start`` loads the routed versions itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.server import GatewayProcess
from treeserve.procs import free_port

pytestmark = pytest.mark.integration

TREESERVE = str(Path(sys.executable).parent / "treeserve")


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [TREESERVE, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"treeserve {' '.join(args)}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    return proc.stdout


def test_triton_on_custom_ports_is_found_without_settings(demo_world: Any, tmp_path: Path) -> None:
    env = demo_world.subprocess_env({"TREESERVE_HOME": str(tmp_path)})
    assert not any(
        k.startswith(("TREESERVE_TRITON__", "TREESERVE_SYNC__TRITON", "TREESERVE_GATEWAY__TRITON"))
        for k in env
    )
    ports = [str(free_port()) for _ in range(3)]
    start = ["triton", "start", "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    _run(start, env)
    gateway = None
    try:
        _run(["sync", "--once"], env)
        status = _run(["sync", "status", "--json"], env)
        assert f'"{demo_world.version}"' in status

        gateway = GatewayProcess(
            env=env, port=free_port(), grpc_port=free_port(), log_file=tmp_path / "gw.log"
        )
        gateway.start(timeout_s=90.0)
        customer = demo_world.customer_ids(1)[0]
        r = httpx.post(
            f"http://127.0.0.1:{gateway.port}/v1/models/{demo_world.model_name}/predict",
            json={"entities": [{"customer_id": customer}]},
            timeout=10.0,
        )
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == demo_world.version
        gateway.stop()
        gateway = None

        _run(["triton", "stop"], env)
        restarted = _run(start, env)
        assert f"loaded {demo_world.model_name}: ready versions [{demo_world.version}]" in restarted
    finally:
        if gateway is not None:
            gateway.stop()
        subprocess.run([TREESERVE, "triton", "stop"], env=env, capture_output=True, timeout=60, check=False)
