"""POST /v1/models/{model}/explain over in-memory adapters: contributions, reasons, flags, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.unit.gateway.fakes import (
    BASE_RATE,
    FEATURES,
    MEDIANS,
    MODEL,
    model_contributions,
    model_probability,
)
from treeserve.scoring import top_reasons

pytestmark = pytest.mark.anyio
URL = f"/v1/models/{MODEL}/explain"


async def test_explain_carries_the_prediction_contributions_bias_and_reasons(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MODEL and body["model_version"] == "1"
        (e,) = body["explanations"]
        assert e["entity"] == {"customer_id": "cust-000001"}
        assert e["score"] == pytest.approx(model_probability("1", [1.0, 2.0, 3.0]), abs=1e-6)
        assert e["risk_tier"] in {"low", "medium", "high"} and e["fallback"] is False
        want = model_contributions("1", [1.0, 2.0, 3.0])
        assert e["contributions"] == pytest.approx(dict(zip(FEATURES, want[:3], strict=True)), abs=1e-6)
        assert e["bias"] == pytest.approx(want[3], abs=1e-6)
        # f_a (+0.3) and f_c (+0.3) push the score up; f_b (-0.4) pulls it down and is no reason.
        assert [x["feature"] for x in e["reasons"]] == ["f_a", "f_c"]
        assert e["reasons"][0] == {
            "feature": "f_a",
            "value": 1.0,
            "imputed": False,
            "contribution": pytest.approx(0.3),
        }
        assert e["no_explanation"] is None
        assert h.triton.explain_calls == [("1", 1)]


async def test_imputed_features_are_flagged_in_reasons_with_the_value_the_model_saw(
    make_gateway: Any,
) -> None:
    async with make_gateway(routing={"champion": "2"}) as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000002"}]})
        (e,) = r.json()["explanations"]
        assert e["imputed_features"] == ["f_b"]
        reason = {x["feature"]: x for x in e["reasons"]}["f_b"]  # version 2 weighs f_b up
        assert reason == {
            "feature": "f_b",
            "value": MEDIANS["f_b"],
            "imputed": True,
            "contribution": pytest.approx(0.4 * MEDIANS["f_b"]),
        }


async def test_fallback_rows_say_no_model_explanation_exists(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(
            URL, json={"entities": [{"customer_id": "cust-999999"}, {"customer_id": "cust-000001"}]}
        )
        cold, known = r.json()["explanations"]
        assert cold["fallback"] is True and cold["score"] == pytest.approx(BASE_RATE)
        assert cold["contributions"] is None and cold["bias"] is None and cold["reasons"] == []
        assert "no model explanation" in cold["no_explanation"] and "unknown_entity" in cold["no_explanation"]
        assert known["contributions"] is not None and known["no_explanation"] is None


async def test_instances_and_k(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL + "?k=1", json={"instances": [{"f_a": 5, "f_b": None, "f_c": 1}]})
        assert r.status_code == 200, r.text
        (e,) = r.json()["explanations"]
        assert e["entity"] is None and [x["feature"] for x in e["reasons"]] == ["f_a"]


@pytest.mark.parametrize("k", ["0", "-1", "101", "two", "1.5"])
async def test_bad_k_is_422(make_gateway: Any, k: str) -> None:
    async with make_gateway() as h:
        r = await h.client.post(f"{URL}?k={k}", json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_request" and "k" in r.json()["message"]


@pytest.mark.parametrize(
    "body", [{}, {"entities": []}, {"entities": [{"customer_id": 5}]}, {"instances": [{"nope": 1}]}, [1]]
)
async def test_bad_bodies_are_422_like_predict(make_gateway: Any, body: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post(URL, json=body)
        assert r.status_code == 422 and r.json()["message"]


async def test_version_without_explainer_is_503_naming_it(make_gateway: Any) -> None:
    async with make_gateway(explainers=()) as h:
        r = await h.client.post(URL, json={"entities": [{"customer_id": "cust-000001"}]})
        assert r.status_code == 503 and r.json()["error"] == "explainer_unavailable"
        assert "version 1" in r.json()["message"] and r.headers["retry-after"]
        ok = await h.client.post(
            f"/v1/models/{MODEL}/predict", json={"entities": [{"customer_id": "cust-000001"}]}
        )
        assert ok.status_code == 200  # predictions do not depend on the explainer


async def test_unknown_model_is_404(make_gateway: Any) -> None:
    async with make_gateway() as h:
        r = await h.client.post("/v1/models/nope/explain", json={"entities": [{"customer_id": "a"}]})
        assert r.status_code == 404


def test_reasons_rank_positive_contributions_largest_first_ties_in_feature_order() -> None:
    phi = np.array([0.2, -1.0, 0.5, 0.2, 0.0])
    names = ("a", "b", "c", "d", "e")
    got = top_reasons(phi, np.arange(5.0), names, ("d",), 3)
    assert [(r.feature, r.value, r.imputed) for r in got] == [
        ("c", 2.0, False),
        ("a", 0.0, False),
        ("d", 3.0, True),
    ]
    assert top_reasons(phi, np.arange(5.0), names, (), 10)[-1].feature == "d"  # never a non-positive one
    assert top_reasons(-np.abs(phi), np.arange(5.0), names, (), 3) == []


async def test_grpc_model_infer_with_requested_output_contributions(make_gateway: Any) -> None:
    import tritonclient.grpc.aio as grpcclient

    from gateway.grpc_server import start_grpc_server
    from treeserve.procs import free_port

    async with make_gateway() as h:
        port = free_port()
        server = await start_grpc_server(h.service, host="127.0.0.1", port=port)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            ids = np.array([b"cust-000001", b"cust-999999"], dtype=object)
            inp = grpcclient.InferInput("customer_id", [2], "BYTES")
            inp.set_data_from_numpy(ids)
            outputs = [grpcclient.InferRequestedOutput(n) for n in ("contributions", "score")]
            res = await client.infer(MODEL, [inp], outputs=outputs)
            got = res.as_numpy("contributions")
            assert got.shape == (2, 1, len(FEATURES) + 1)
            assert got[0, 0] == pytest.approx(model_contributions("1", [1.0, 2.0, 3.0]), abs=1e-6)
            assert np.isnan(got[1]).all()  # the unknown entity has no model explanation
            assert res.as_numpy("score")[1] == pytest.approx(BASE_RATE)
            only = await client.infer(
                MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("contributions")]
            )
            assert [o.name for o in only.get_response().outputs] == ["contributions"]
        finally:
            await client.close()
            await server.stop(grace=0)
