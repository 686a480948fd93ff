"""The HTTP API end to end over in-memory adapters: scores, flags, errors, safety, routing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from exporter.flavors import get_flavor
from tests.unit.gateway.fakes import BASE_RATE, FEATURES, MEDIANS, MODEL, model_probability
from treeserve.repository import read_model_config, render_config, update_routing

pytestmark = pytest.mark.anyio
URL = f"/v1/models/{MODEL}/predict"


async def test_entities_scored_with_store_features(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MODEL and body["model_version"] == "1"
        assert body["latency_ms"] >= 0
        (p,) = body["predictions"]
        assert p["entity"] == {"customer_id": "cust-000001"}
        assert p["score"] == pytest.approx(model_probability("1", [1.0, 2.0, 3.0]), abs=1e-6)
        assert p["risk_tier"] in {"low", "medium", "high"}
        assert p["imputed"] is False and p["fallback"] is False and p["fallback_reason"] is None


async def test_missing_feature_imputed_with_median_and_flagged(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000002"}]})
        (p,) = r.json()["predictions"]
        assert p["imputed"] is True and p["imputed_features"] == ["f_b"]
        assert p["score"] == pytest.approx(model_probability("1", [4.0, MEDIANS["f_b"], 0.5]), abs=1e-6)


async def test_cold_start_entity_gets_base_rate_fallback(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(
            URL, json={"entities": [{"customer_id": "cust-999999"}, {"customer_id": "cust-000001"}]}
        )
        cold, known = r.json()["predictions"]
        assert cold["fallback"] is True and cold["fallback_reason"] == "unknown_entity"
        assert cold["score"] == pytest.approx(BASE_RATE)
        assert known["fallback"] is False


async def test_fallback_policy_per_feature(make_gateway: Any) -> None:
    async with make_gateway(missing_policy={"f_c": "fallback"}) as h:
        r = await h.client.post(
            URL, json={"entities": [{"customer_id": "cust-000003"}, {"customer_id": "cust-000002"}]}
        )
        fb, imp = r.json()["predictions"]
        assert fb["fallback_reason"] == "missing_features:f_c" and fb["score"] == pytest.approx(BASE_RATE)
        assert imp["imputed_features"] == ["f_b"] and not imp["fallback"]


async def test_instances_checked_against_feature_list(make_gateway: Any) -> None:
    async with make_gateway() as h:
        ok = await h.client.post(URL, json={"instances": [{"f_a": 1, "f_b": 2.0, "f_c": 3}]})
        assert ok.status_code == 200
        (p,) = ok.json()["predictions"]
        assert p["entity"] is None
        assert p["score"] == pytest.approx(model_probability("1", [1, 2, 3]), abs=1e-6)
        bad = await h.client.post(URL, json={"instances": [{"f_a": 1, "nope": 2}]})
        assert bad.status_code == 422 and "nope" in bad.json()["message"]
        typed = await h.client.post(URL, json={"instances": [{"f_a": "x"}]})
        assert typed.status_code == 422 and "f_a" in typed.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"entities": []},
        {"entities": [{"user": "x"}]},
        {"entities": [{"customer_id": 5}]},
        {"entities": [{"customer_id": "bad id with spaces"}]},
        {"entities": [{"customer_id": "x" * 500}]},
        {"entities": [{"customer_id": "a"}], "instances": [{}]},
        {"entities": "cust-1"},
        [1, 2],
    ],
)
async def test_bad_requests_are_422_with_a_message(make_gateway: Any, body: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL, json=body)
        assert r.status_code == 422
        assert r.json()["error"] == "invalid_request" and r.json()["message"]


async def test_too_many_entities_refused(make_gateway: Any) -> None:
    async with make_gateway(max_entities=3) as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": f"c{i}"} for i in range(4)]})
        assert r.status_code == 422 and "1 to 3" in r.json()["message"]


async def test_unknown_model_is_404(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post("/v1/models/nope/predict", json={"entities": [{"customer_id": "a"}]})
        assert r.status_code == 404 and "nope" in r.json()["message"]
        assert (await h.client.get("/v1/models/nope")).status_code == 404


async def test_body_limit_is_413(make_gateway: Any) -> None:
    async with make_gateway(max_body_bytes=2048) as h:
        r = await h.client.post(URL, content=b'{"entities": [' + b" " * 4096 + b"]}")
        assert r.status_code == 413


async def test_api_keys(make_gateway: Any) -> None:
    async with make_gateway(api_keys=["s3cret", "other"]) as h:
        body = {"entities": [{"customer_id": "cust-000001"}]}
        assert (await h.client.post(URL, json=body)).status_code == 401
        wrong = await h.client.post(URL, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await h.client.post(URL, json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await h.client.get("/healthz")).status_code == 200


async def test_triton_down_is_503_with_retry_after_and_timeout_504(make_gateway: Any) -> None:
    async with make_gateway() as h:
        body = {"entities": [{"customer_id": "cust-000001"}]}
        h.triton.mode = "down"
        r = await h.client.post(URL, json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "Traceback" not in r.text
        ready = await h.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["triton"] != "ok"
        h.triton.mode = "timeout"
        assert (await h.client.post(URL, json=body)).status_code == 504
        h.triton.mode = "up"
        assert (await h.client.post(URL, json=body)).status_code == 200


async def test_online_store_down_is_503(make_gateway: Any) -> None:
    async with make_gateway() as h:
        h.features.down = True
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 503 and "online store" in r.json()["message"]


async def test_concurrent_requests_coalesced_and_each_gets_its_own_score(make_gateway: Any) -> None:
    rows = {f"c{i}": [float(i), float(i % 3), 1.0] for i in range(40)}
    async with make_gateway(rows=rows, coalesce_window_us=1000) as h:
        rs = await asyncio.gather(
            *(h.client.post(URL, json={"entities": [{"customer_id": f"c{i}"}]}) for i in range(40))
        )
        for i, r in enumerate(rs):
            assert r.status_code == 200
            assert r.json()["predictions"][0]["score"] == pytest.approx(
                model_probability("1", rows[f"c{i}"]), abs=1e-6
            )
        assert sum(h.features.calls) == 40 and len(h.features.calls) < 40
        assert len(h.triton.calls) < 40


async def test_models_endpoints(make_gateway: Any) -> None:
    async with make_gateway(routing={"champion": "1", "challenger": "2"}) as h:
        listed = (await h.client.get("/v1/models")).json()["models"]
        assert [m["name"] for m in listed] == [MODEL]
        info = (await h.client.get(f"/v1/models/{MODEL}")).json()
        assert info["routing"] == {"champion": "1", "challenger": "2"}
        assert info["features"] == list(FEATURES) and info["entity_keys"] == ["customer_id"]
        assert {v["version"] for v in info["versions"]} == {"1", "2"}
        assert (await h.client.get("/readyz")).json()["ready"] is True


async def test_skew_guard_refuses_mismatched_version(make_gateway: Any) -> None:
    async with make_gateway(version_features={"1": ["f_a", "f_c", "f_b"]}) as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 503 and "FeatureService" in r.json()["message"]
        ready = await h.client.get("/readyz")
        assert ready.status_code == 503
        assert "FeatureService" in ready.json()["checks"][f"contract:{MODEL}"]
        metrics = (await h.client.get("/metrics")).text
        assert f'treeserve_gateway_skew_guard_rejections_total{{model="{MODEL}",version="1"}}' in metrics


async def test_routing_change_is_picked_up(make_gateway: Any) -> None:
    async with make_gateway() as h:
        body = {"entities": [{"customer_id": "cust-000001"}]}
        assert (await h.client.post(URL, json=body)).json()["model_version"] == "1"
        gauge = f'treeserve_gateway_routing_generation{{model="{MODEL}"}}'
        generation = _gauge(await h.client.get("/metrics"), gauge)
        update_routing(h.home / "model_repository", MODEL, {"champion": "2"})
        await h.service.refresh()
        r = (await h.client.post(URL, json=body)).json()
        assert r["model_version"] == "2"
        assert _gauge(await h.client.get("/metrics"), gauge) == generation + 1
        assert r["predictions"][0]["score"] == pytest.approx(
            model_probability("2", [1.0, 2.0, 3.0]), abs=1e-6
        )


async def test_challenger_share_is_sticky_per_entity(make_gateway: Any) -> None:
    rows = {f"c{i}": [1.0, 1.0, 1.0] for i in range(60)}
    async with make_gateway(
        rows=rows, routing={"champion": "1", "challenger": "2"}, challenger_share=0.5
    ) as h:
        body = {"entities": [{"customer_id": f"c{i}"} for i in range(60)]}
        first = [p["model_version"] for p in (await h.client.post(URL, json=body)).json()["predictions"]]
        second = [p["model_version"] for p in (await h.client.post(URL, json=body)).json()["predictions"]]
        assert first == second and {"1", "2"} == set(first)
        routes = {p["route"] for p in (await h.client.post(URL, json=body)).json()["predictions"]}
        assert routes == {"champion", "challenger"}


async def test_prediction_log_has_one_row_per_prediction(make_gateway: Any, treeserve_home: Path) -> None:
    async with make_gateway(routing={"champion": "1", "challenger": "2"}, shadow=True) as h:
        ids = ["cust-000001", "cust-000002", "cust-999999"]
        for cid in ids:
            assert (await h.client.post(URL, json={"entities": [{"customer_id": cid}]})).status_code == 200
        r = await h.client.post(URL, json={"instances": [{"f_a": 1.0}]})
        assert r.status_code == 200
    files = sorted((treeserve_home / "var/predlog" / MODEL).glob("date=*/part-*.parquet"))
    assert files
    table = pq.read_table(files).to_pandas() if len(files) == 1 else None
    import pandas as pd

    table = pd.concat([pq.read_table(f).to_pandas() for f in files])
    served = table[table.route != "shadow"]
    assert len(served) == 4
    assert len(table[table.route == "shadow"]) == 4
    assert set(served.model_version) == {"1"} and set(table[table.route == "shadow"].model_version) == {"2"}
    assert set(served.entity_key.dropna()) == set(ids) and served.entity_key.isna().sum() == 1
    row = served[served.entity_key == "cust-000002"].iloc[0]
    assert pd.isna(row["f_b"]) and row["imputed"] == "f_b"  # logged BEFORE imputation
    cold = served[served.entity_key == "cust-999999"].iloc[0]
    assert cold["fallback"] == "unknown_entity"
    assert list(table.columns[:6]) == [
        "request_id",
        "timestamp",
        "model",
        "model_version",
        "route",
        "entity_key",
    ]
    assert str(table["timestamp"].dtype) == "datetime64[us, UTC]"


async def test_metrics_exposed(make_gateway: Any) -> None:
    async with make_gateway() as h:
        await h.client.post(URL, json={"entities": [{"customer_id": "cust-000002"}]})
        text = (await h.client.get("/metrics")).text
        assert "treeserve_gateway_requests_total" in text
        assert f'treeserve_gateway_imputations_total{{feature="f_b",model="{MODEL}"}}' in text
        assert 'endpoint="/v1/models/{model}/predict"' in text


def test_openapi_documents_the_api(treeserve_home: Path) -> None:
    from gateway.app import create_app
    from treeserve_app.settings import load_settings

    spec = create_app(load_settings(home=treeserve_home)).openapi()
    assert {
        "/v1/models/{model}/predict",
        "/v1/models",
        "/v1/models/{model}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(spec["paths"])
    body = spec["paths"]["/v1/models/{model}/predict"]["post"]["requestBody"]
    assert "entities" in json.dumps(body)


def _gauge(response: Any, sample: str) -> float:
    """The value of one sample line in a /metrics response."""
    for line in response.text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in /metrics")


async def test_routing_generation_of_a_config_without_the_counter(make_gateway: Any) -> None:
    """A config written before the counter existed is served; the gauge falls back to its write time."""
    async with make_gateway() as h:
        repo = h.home / "model_repository"
        model = read_model_config(repo, MODEL)
        legacy = replace(model.spec.with_routing({"champion": "2"}), routing_generation=0)
        (repo / MODEL / "config.pbtxt").write_text(render_config(legacy, get_flavor(model.flavor)))
        await h.service.refresh()
        body = {"entities": [{"customer_id": "cust-000001"}]}
        assert (await h.client.post(URL, json=body)).json()["model_version"] == "2"
        gauge = f'treeserve_gateway_routing_generation{{model="{MODEL}"}}'
        assert _gauge(await h.client.get("/metrics"), gauge) > 1e9  # Unix time of the write
