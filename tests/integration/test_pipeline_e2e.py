"""End to end: drifted traffic through the gateway -> drift detected -> retrain -> gate -> new
champion served by Triton and answered by the gateway, with ``treeserve pipeline run``'s API.

A world of its own (model ``churn-drift-e2e``: the registry alias moves here), the session's
shared Triton, and a gateway child process stopped by PID.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import pyarrow.dataset as pads
import pytest

from gateway.server import GatewayProcess
from tests.fixtures.feast_data import world_env
from tests.fixtures.triton import served_world
from treeserve.procs import free_port, wait_until

pytestmark = pytest.mark.integration
MODEL = "churn-drift-e2e"


def _predict(url: str, ids: list[str]) -> httpx.Response:
    r = httpx.post(
        f"{url}/v1/models/{MODEL}/predict", json={"entities": [{"customer_id": i} for i in ids]}, timeout=30.0
    )
    assert r.status_code == 200, r.text
    return r


def _logged_rows(folder: Any) -> int:
    files = [p for p in folder.rglob("part-*.parquet")] if folder.exists() else []
    return pads.dataset(files).count_rows() if files else 0


def test_drifted_traffic_is_caught_and_a_retrained_champion_is_served(
    triton_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from training.api import generate_data, materialize
    from treeserve_app.commands.pipeline import sync_pass
    from treeserve_app.pipeline import run_pipeline

    home = tmp_path_factory.mktemp("pipeline-e2e")
    # v1: trained on the normal world, promoted, served
    settings, v1 = served_world(triton_server, home, MODEL, n_customers=1200, seed=21)

    predlog = home / "predlog"
    env = world_env(settings) | {
        "TREESERVE_EXPORTER__REPOSITORY": str(triton_server.repository),
        "TREESERVE_GATEWAY__TRITON__HTTP_URL": f"127.0.0.1:{triton_server.http_port}",
        "TREESERVE_GATEWAY__MODEL": MODEL,
        "TREESERVE_GATEWAY__PREDLOG_DIR": str(predlog),
        "TREESERVE_GATEWAY__PREDLOG_SEGMENT_S": "0.5",
        "OMP_NUM_THREADS": "1",
    }
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TREESERVE_", "MLFLOW_"))}
    gw = GatewayProcess(
        env=base | env, port=free_port(), grpc_port=free_port(), log_file=home / "gateway.log"
    )
    gw.start(timeout_s=90.0)
    try:
        # the population shifts: the new snapshot reaches the online store, traffic follows
        generate_data(settings, n_customers=1200, seed=22, drift=True)
        materialize(settings)
        ids = [f"cust-{i:06d}" for i in range(1200)]
        picks = random.Random(1).choices(ids, k=900)
        for start in range(0, len(picks), 100):
            assert _predict(gw.url, picks[start : start + 100]).json()["model_version"] == v1
        assert wait_until(lambda: _logged_rows(predlog) >= 900, timeout_s=20)

        run = run_pipeline(settings, drift_since="1d", sync=sync_pass, triton=triton_server.admin)

        steps = {s.name: s for s in run.steps}
        assert run.status != "failed", (run.failed_step, run.reason)
        assert steps["drift"].detail.get("verdict") == "drift", steps["drift"].reason
        assert {"order_count_90d", "support_tickets_30d"} <= set(steps["drift"].detail["drifted_columns"])
        v2 = steps["retrain"].detail["version"]
        assert steps["gate"].status == "ok" and steps["sync"].status == "ok"
        assert (run.serving_before, run.serving_after) == (v1, v2)
        assert steps["score"].detail["model_version"] == v2
        # the gateway picks the new routing up and answers with the new champion
        assert wait_until(lambda: _predict(gw.url, ids[:5]).json()["model_version"] == v2, timeout_s=20)
    finally:
        gw.stop()
