"""The gateway against real Triton, real Feast (SQLite and Redis online stores) and the real log."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from gateway.server import GatewayProcess
from treeserve import contract
from treeserve.procs import wait_until

pytestmark = pytest.mark.integration
UNKNOWN = ["cust-999991", "nobody-here"]


@pytest.fixture(scope="module")
def sqlite_gateway(gateway_stack: Any, demo_world: Any) -> Iterator[GatewayProcess]:
    proc = gateway_stack.start_gateway(demo_world, name="sqlite")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def redis_gateway(gateway_stack: Any, redis_demo_world: Any) -> Iterator[GatewayProcess]:
    proc = gateway_stack.start_gateway(redis_demo_world, name="redis")
    yield proc
    proc.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store_case(request: pytest.FixtureRequest) -> tuple[Any, GatewayProcess]:
    """(Feast world, its gateway) for both online stores."""
    if request.param == "sqlite":
        return request.getfixturevalue("demo_world"), request.getfixturevalue("sqlite_gateway")
    return request.getfixturevalue("redis_demo_world"), request.getfixturevalue("redis_gateway")


def random_entities(world: Any, n: int, seed: int) -> list[str]:
    ids = world.customer_ids(10_000)
    return random.Random(seed).sample(ids, n)


def sdk_features(world: Any, ids: list[str]) -> np.ndarray:
    """What Feast's own SDK returns for ``ids`` as the model sees it (TTL, encoding applied)."""
    from tests.fixtures.feast_data import sdk_features as read

    return np.asarray(read(world, ids))


def expected_scores(stack: Any, world: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The registered XGBoost model on the same features (median imputation; base rate when all missing)."""
    import mlflow
    import xgboost as xgb

    meta = json.loads(
        (stack.repository / stack.model / stack.version / contract.VERSION_METADATA_FILE).read_text()
    )
    medians = np.array([meta["medians"][f] for f in world.features])
    unknown = np.isnan(x).all(axis=1)
    imputed = np.where(np.isnan(x), medians, x)
    mlflow.set_tracking_uri(world.settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(world.settings.mlflow_tracking_uri)
    booster = mlflow.xgboost.load_model(f"models:/{stack.model}/{stack.version}")
    frame = pd.DataFrame(imputed.astype(np.float32), columns=world.features)
    if hasattr(booster, "predict_proba"):
        scores = booster.predict_proba(frame)[:, 1]
    else:
        scores = booster.predict(xgb.DMatrix(frame))
    scores = np.where(unknown, meta["base_rate"], scores)
    return scores, unknown, np.isnan(x).any(axis=1) & ~unknown


def predict(url: str, ids: list[str], **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/churn-prediction/predict",
        json={"entities": [{"customer_id": i} for i in ids]},
        timeout=10.0,
        **kw,
    )


def test_scores_equal_model_output_and_cold_start_flagged(
    store_case: tuple[Any, GatewayProcess], gateway_stack: Any
) -> None:
    world, gw = store_case
    ids = random_entities(world, 60, seed=1) + UNKNOWN
    r = predict(gw.url, ids)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == gateway_stack.model and body["model_version"] == gateway_stack.version
    got = np.array([p["score"] for p in body["predictions"]])
    want, unknown, partial = expected_scores(gateway_stack, world, sdk_features(world, ids))
    np.testing.assert_allclose(got, want, atol=1e-5)
    for p, cold, imp in zip(body["predictions"], unknown, partial, strict=True):
        assert p["fallback"] is bool(cold)
        assert (p["fallback_reason"] == "unknown_entity") is bool(cold)
        assert p["imputed"] is bool(imp)
    assert unknown[-2:].all() and partial.any(), "the demo data should have cold-start and partial rows"
    single = predict(gw.url, ids[:1]).json()["predictions"][0]["score"]
    assert single == pytest.approx(got[0], abs=1e-7)


@pytest.mark.parametrize("reader", ["direct", "sdk"])
def test_feature_reads_match_feast_sdk(store_case: tuple[Any, GatewayProcess], reader: str) -> None:
    from treeserve.features import DirectFeatureSource, FeastFeatureSource
    from treeserve.features.store import open_feature_store

    world, _ = store_case
    ids = random_entities(world, 300, seed=7) + UNKNOWN
    cls = DirectFeatureSource if reader == "direct" else FeastFeatureSource
    source = cls(open_feature_store(world.settings), store_name=world.settings.feast.online_store)
    features, keys = source.describe(world.feature_service)
    assert features == world.features and keys == ["customer_id"]
    want = sdk_features(world, ids)
    assert np.isnan(want).any() and not np.isnan(want).all()
    keys_ = [(i,) for i in ids]

    async def twice() -> list[np.ndarray]:  # the second read uses the direct reader's key cache
        return [await source.fetch(world.feature_service, keys_) for _ in range(2)]

    for got in asyncio.run(twice()):
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got[-2:]).all()


def test_grpc_entity_ids_give_the_same_scores_as_http(
    sqlite_gateway: GatewayProcess, demo_world: Any
) -> None:
    import tritonclient.grpc as grpcclient

    ids = random_entities(demo_world, 20, seed=3) + UNKNOWN[:1]
    client = grpcclient.InferenceServerClient(sqlite_gateway.grpc_url)
    assert client.is_server_ready() and client.is_model_ready("churn-prediction")
    inp = grpcclient.InferInput("customer_id", [len(ids)], "BYTES")
    inp.set_data_from_numpy(np.array([i.encode() for i in ids], dtype=object))
    res = client.infer("churn-prediction", [inp])
    http = predict(sqlite_gateway.url, ids).json()
    np.testing.assert_allclose(res.as_numpy("score"), [p["score"] for p in http["predictions"]], atol=1e-12)
    assert res.as_numpy("fallback_reason")[-1] == b"unknown_entity"
    assert res.get_response().model_version == http["model_version"]
    client.close()


def test_every_accepted_prediction_is_logged(gateway_stack: Any, demo_world: Any) -> None:
    gw = gateway_stack.start_gateway(demo_world, name="predlog", predlog_segment_rows=25)
    ids = random_entities(demo_world, 200, seed=5) + UNKNOWN
    sizes = [1, 3, 7, 1, 20, 2, 1, 50, 1, 5] * 3
    batches = [[ids[(k * 13 + j) % len(ids)] for j in range(n)] for k, n in enumerate(sizes)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=15.0) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/v1/models/churn-prediction/predict",
                        json={"entities": [{"customer_id": i} for i in b]},
                    )
                    for b in batches
                )
            )

    try:
        responses = asyncio.run(send_all())
    finally:
        gw.stop()
    assert all(r.status_code == 200 for r in responses)
    files = sorted(
        (gateway_stack.root / "predlog" / "predlog" / "churn-prediction").glob("date=*/part-*.parquet")
    )
    log = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(log) == sum(sizes)  # (rotation: one group commit may carry more than segment_rows)
    assert set(log["request_id"]) == {r.json()["request_id"] for r in responses}
    assert set(log["route"]) == {"champion"} and set(log["model_version"]) == {gateway_stack.version}
    # The logged features are the online values before imputation (null when missing).
    sample = log.drop_duplicates("entity_key").head(60)
    want = sdk_features(demo_world, list(sample["entity_key"]))
    np.testing.assert_array_equal(sample[demo_world.features].to_numpy(dtype=float), want)
    scores = {r.json()["request_id"]: [p["score"] for p in r.json()["predictions"]] for r in responses}
    for rid, group in log.groupby("request_id", sort=False):
        assert sorted(group["score"]) == pytest.approx(sorted(scores[rid]))


def test_skew_guard_refuses_a_mismatched_version(gateway_stack: Any, demo_world: Any, tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    shutil.copytree(gateway_stack.repository, repo)
    meta_path = repo / gateway_stack.model / gateway_stack.version / contract.VERSION_METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["features"] = list(reversed(meta["features"]))  # trained on another order than the FeatureService
    meta_path.write_text(json.dumps(meta))
    env = gateway_stack.env(demo_world, predlog_dir=str(tmp_path / "predlog"))
    env["TREESERVE_EXPORTER__REPOSITORY"] = str(repo)
    from treeserve.procs import free_port

    gw = GatewayProcess(env=env, port=free_port(), grpc_port=0, log_file=tmp_path / "gw.log")
    gw.start(timeout_s=90.0, wait_ready=False)
    try:
        ready = httpx.get(f"{gw.url}/readyz", timeout=10.0)
        assert ready.status_code == 503
        reason = ready.json()["checks"]["contract:churn-prediction"]
        assert "FeatureService" in reason and gateway_stack.version in reason
        r = predict(gw.url, demo_world.customer_ids(1))
        assert r.status_code == 503 and "FeatureService" in r.json()["message"]
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10.0).text
        assert (
            f'treeserve_gateway_skew_guard_rejections_total{{model="churn-prediction",version="{gateway_stack.version}"}} 1.0'
            in metrics
        )
    finally:
        gw.stop()


def test_openapi_fuzzing_gives_no_server_errors(sqlite_gateway: GatewayProcess, tmp_path: Path) -> None:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{sqlite_gateway.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "30",
        "--request-timeout",
        "10",
        "--generation-deterministic",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_triton_down_gives_503_then_recovers(
    sqlite_gateway: GatewayProcess, gateway_stack: Any, demo_world: Any
) -> None:
    ids = demo_world.customer_ids(3)
    assert predict(sqlite_gateway.url, ids).status_code == 200
    gateway_stack.triton.stop(timeout_s=15.0)
    try:
        r = predict(sqlite_gateway.url, ids)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] and "Triton" in r.json()["message"]
        assert httpx.get(f"{sqlite_gateway.url}/readyz", timeout=10.0).status_code == 503
    finally:
        gateway_stack.triton.start()
        gateway_stack.triton.load_model(gateway_stack.model)
        gateway_stack.triton.admin.wait_version_ready(gateway_stack.model, gateway_stack.version)
    assert wait_until(
        lambda: predict(sqlite_gateway.url, ids).status_code == 200, timeout_s=30, interval_s=0.2
    )
    assert httpx.get(f"{sqlite_gateway.url}/readyz", timeout=10.0).status_code == 200
