"""The explain endpoint against real Triton and real Feast: XGBoost's own contributions, reasons, fallbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.server import GatewayProcess
from tests.integration.test_gateway import UNKNOWN, random_entities, sdk_features
from treeserve import contract

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def explain_gateway(gateway_stack: Any, demo_world: Any) -> Iterator[GatewayProcess]:
    proc = gateway_stack.start_gateway(demo_world, name="explain")
    yield proc
    proc.stop()


def _booster(stack: Any, world: Any) -> Any:
    import mlflow

    mlflow.set_tracking_uri(world.settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(world.settings.mlflow_tracking_uri)
    model = mlflow.xgboost.load_model(f"models:/{stack.model}/{stack.version}")
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    best = getattr(model, "best_iteration", None)
    booster = booster[: best + 1] if best is not None else booster
    booster.feature_names = None
    return booster


def test_explanations_equal_xgboost_pred_contribs_with_flags(
    explain_gateway: GatewayProcess, gateway_stack: Any, demo_world: Any
) -> None:
    import xgboost as xgb

    ids = random_entities(demo_world, 40, seed=3) + UNKNOWN
    r = httpx.post(
        f"{explain_gateway.url}/v1/models/{gateway_stack.model}/explain?k=4",
        json={"entities": [{"customer_id": i} for i in ids]},
        timeout=20.0,
    )
    assert r.status_code == 200, r.text
    rows = r.json()["explanations"]
    meta = json.loads(
        (
            gateway_stack.repository
            / gateway_stack.model
            / gateway_stack.version
            / contract.VERSION_METADATA_FILE
        ).read_text()
    )
    features = list(demo_world.features)
    x = sdk_features(demo_world, ids)
    medians = np.array([meta["medians"][f] for f in features])
    seen = np.where(np.isnan(x), medians, x).astype(np.float32)
    booster = _booster(gateway_stack, demo_world)
    want = booster.predict(xgb.DMatrix(seen, missing=np.nan), pred_contribs=True)
    predictions = httpx.post(
        f"{explain_gateway.url}/v1/models/{gateway_stack.model}/predict",
        json={"entities": [{"customer_id": i} for i in ids]},
        timeout=20.0,
    ).json()["predictions"]
    for i, (row, p) in enumerate(zip(rows, predictions, strict=True)):
        assert row["score"] == pytest.approx(p["score"], abs=1e-6)  # what predict returns
        if ids[i] in UNKNOWN:
            assert row["fallback"] and row["contributions"] is None and row["reasons"] == []
            assert "no model explanation" in row["no_explanation"]
            continue
        got = np.array([row["contributions"][f] for f in features] + [row["bias"]])
        assert np.abs(got - want[i]).max() <= 1e-4
        assert len(row["reasons"]) <= 4
        ups = sorted(((c, f) for f, c in row["contributions"].items() if c > 0), reverse=True)[:4]
        assert [r_["feature"] for r_ in row["reasons"]] == [f for _, f in ups]
        for reason in row["reasons"]:
            j = features.index(reason["feature"])
            assert reason["value"] == pytest.approx(float(seen[i, j]), rel=1e-6)
            assert reason["imputed"] is (reason["feature"] in row["imputed_features"])
    assert any(r_["imputed"] for r_ in rows), "the demo data should have rows with imputed features"


def test_grpc_contributions_and_bad_k(
    explain_gateway: GatewayProcess, gateway_stack: Any, demo_world: Any
) -> None:
    import tritonclient.grpc as grpcclient

    bad = httpx.post(
        f"{explain_gateway.url}/v1/models/{gateway_stack.model}/explain?k=0",
        json={"entities": [{"customer_id": UNKNOWN[0]}]},
        timeout=10.0,
    )
    assert bad.status_code == 422 and "k" in bad.json()["message"]
    ids = random_entities(demo_world, 5, seed=4)
    client = grpcclient.InferenceServerClient(explain_gateway.grpc_url)
    try:
        inp = grpcclient.InferInput("customer_id", [len(ids)], "BYTES")
        inp.set_data_from_numpy(np.array([i.encode() for i in ids], dtype=object))
        res = client.infer(
            gateway_stack.model, [inp], outputs=[grpcclient.InferRequestedOutput("contributions")]
        )
        got = res.as_numpy("contributions")
    finally:
        client.close()
    http = httpx.post(
        f"{explain_gateway.url}/v1/models/{gateway_stack.model}/explain",
        json={"entities": [{"customer_id": i} for i in ids]},
        timeout=10.0,
    ).json()["explanations"]
    assert got.shape == (len(ids), 1, len(demo_world.features) + 1)
    for row, g in zip(http, got, strict=True):
        assert row["bias"] == pytest.approx(float(g[0, -1]), abs=1e-6)
        assert [row["contributions"][f] for f in demo_world.features] == pytest.approx(
            g[0, :-1].tolist(), abs=1e-6
        )


def test_batch_score_explain_writes_the_gateways_reasons_beside_the_score(
    explain_gateway: GatewayProcess, gateway_stack: Any, demo_world: Any, tmp_path: Any
) -> None:
    import random
    from datetime import date

    from drift.score_store import DuckDBScoreSink
    from drift.scoring import score_all

    s = demo_world.settings
    settings = s.model_copy(
        update={"exporter": s.exporter.model_copy(update={"repository": gateway_stack.repository})}
    )
    sink = DuckDBScoreSink(tmp_path / "scores.duckdb", "batch_scores")
    day = date(2026, 11, 28)
    score_all(settings, score_date=day, sink=sink, explain_k=3)
    table = sink.read_partition(demo_world.model_name, day).set_index("entity")
    ids = (
        random.Random(5).sample(table.index.tolist(), 60)
        + [e for e in table.index if table.loc[e, "reasons"] is None][:3]
    )
    r = httpx.post(
        f"{explain_gateway.url}/v1/models/{gateway_stack.model}/explain",
        json={"entities": [{"customer_id": i} for i in ids]},
        timeout=30.0,
    )
    assert r.status_code == 200, r.text
    for entity, online in zip(ids, r.json()["explanations"], strict=True):
        stored = table.loc[entity, "reasons"]
        assert table.loc[entity, "score"] == pytest.approx(online["score"], abs=1e-6)
        if online["fallback"]:
            assert stored is None  # no model explanation for a base-rate row
            continue
        batch = json.loads(stored)
        assert [b["feature"] for b in batch] == [o["feature"] for o in online["reasons"]]
        for b, o in zip(batch, online["reasons"], strict=True):
            assert b["imputed"] is o["imputed"] and b["value"] == pytest.approx(o["value"], rel=1e-6)
            assert b["contribution"] == pytest.approx(o["contribution"], abs=1e-4)
    score_all(settings, score_date=day, sink=sink)  # a rerun without --explain replaces the reasons too
    assert sink.read_partition(demo_world.model_name, day)["reasons"].isna().all()
