"""KServe v2 gRPC transport with tritonclient.grpc.aio against the same service (in-process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.unit.gateway.fakes import MODEL, model_probability
from treeserve.procs import free_port

pytestmark = pytest.mark.anyio


async def test_tritonclient_calls_gateway_with_entity_ids(make_gateway: Any) -> None:
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    from gateway.grpc_server import start_grpc_server

    async with make_gateway() as h:
        port = free_port()
        server = await start_grpc_server(h.service, host="127.0.0.1", port=port)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready(MODEL)
            ids = np.array([b"cust-000001", b"cust-999999"], dtype=object)
            inp = grpcclient.InferInput("customer_id", [2], "BYTES")
            inp.set_data_from_numpy(ids)
            res = await client.infer(MODEL, [inp])
            scores = res.as_numpy("score")
            assert scores[0] == pytest.approx(model_probability("1", [1.0, 2.0, 3.0]), abs=1e-6)
            assert list(res.as_numpy("fallback_reason")) == [b"", b"unknown_entity"]
            assert res.get_response().model_version == "1"
            http = await h.client.post(
                f"/v1/models/{MODEL}/predict", json={"entities": [{"customer_id": "cust-000001"}]}
            )
            assert http.json()["predictions"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-12)
            bad = grpcclient.InferInput("user", [1], "BYTES")
            bad.set_data_from_numpy(np.array([b"x"], dtype=object))
            with pytest.raises(InferenceServerException, match="customer_id"):
                await client.infer(MODEL, [bad])
            with pytest.raises(InferenceServerException):
                await client.infer("nope", [inp])
        finally:
            await client.close()
            await server.stop(grace=0)
