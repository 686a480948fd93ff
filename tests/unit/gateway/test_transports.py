"""HTTP and gRPC share one codec: the same API keys, the same error status and message; the
predict path the gateway serves is the one its OpenAPI document describes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import jsonschema_rs
import numpy as np
import pytest

from gateway import codec
from gateway.errors import (
    DeadlineExceededError,
    FeatureStoreUnavailableError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnknownModelError,
)
from gateway.routes import PREDICT_PATH
from tests.unit.gateway.fakes import MODEL
from treeserve.procs import free_port

pytestmark = pytest.mark.anyio
URL = PREDICT_PATH.format(model=MODEL)
KEYS = ["s3cret", "other"]


def _schema(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


async def test_openapi_describes_the_predict_path_that_is_served(make_gateway: Any) -> None:
    async with make_gateway() as h:
        spec = (await h.client.get("/openapi.json")).json()
        predict_paths = [p for p in spec["paths"] if p.endswith("/predict")]
        assert predict_paths == [PREDICT_PATH]
        op = spec["paths"][PREDICT_PATH]["post"]
        request_schema = op["requestBody"]["content"]["application/json"]["schema"]
        response_schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        error_schema = op["responses"]["422"]["content"]["application/json"]["schema"]
        assert {"entities", "instances"} <= set(request_schema["properties"])
        assert any("HTTPBearer" in s for s in op.get("security", []))

        body = {"entities": [{"customer_id": "cust-000001"}, {"customer_id": "cust-999999"}]}
        assert _schema(spec, request_schema).is_valid(body)
        r = await h.client.post(URL, json=body)
        assert r.status_code == 200
        _schema(spec, response_schema).validate(r.json())  # the served answer has the documented shape
        bad = await h.client.post(URL, json={"entities": "x"})
        assert bad.status_code == 422
        _schema(spec, error_schema).validate(bad.json())
        # No FastAPI route serves it: the one implementation is the middleware's codec path.
        assert not [r for r in h.app.routes if getattr(r, "path", "") == PREDICT_PATH]


class _Clients:
    def __init__(self, http: Any, grpc_url: str) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.http = http
        self.grpc = grpcclient.InferenceServerClient(grpc_url)

    async def http_status(
        self, authorization: str | None, model: str = MODEL, ids: Any = None
    ) -> tuple[int, Any]:
        headers = {"authorization": authorization} if authorization is not None else {}
        body = {"entities": [{"customer_id": i} for i in (ids or ["cust-000001"])]}
        r = await self.http.post(PREDICT_PATH.format(model=model), json=body, headers=headers)
        return r.status_code, r.json()

    async def grpc_status(
        self, authorization: str | None, model: str = MODEL, ids: Any = None
    ) -> tuple[Any, str]:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        values = ids or ["cust-000001"]
        inp = grpcclient.InferInput("customer_id", [len(values)], "BYTES")
        inp.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object))
        headers = {"authorization": authorization} if authorization is not None else None
        try:
            await self.grpc.infer(model, [inp], headers=headers)
        except InferenceServerException as e:
            return e.status(), e.message() or ""
        return "StatusCode.OK", ""


@pytest.fixture
async def clients(make_gateway: Any) -> AsyncIterator[tuple[Any, _Clients]]:
    from gateway.grpc_server import start_grpc_server

    async with make_gateway(api_keys=KEYS) as h:
        port = free_port()
        server = await start_grpc_server(h.service, host="127.0.0.1", port=port)
        c = _Clients(h.client, f"127.0.0.1:{port}")
        try:
            yield h, c
        finally:
            await c.grpc.close()
            await server.stop(grace=0)


AUTH = [
    ("Bearer s3cret", True),
    ("bearer other", True),
    ("BEARER s3cret", True),
    ("Bearer  s3cret ", True),
    ("Bearer nope", False),
    ("Bearer s3cret2", False),
    ("s3cret", False),
    ("Basic s3cret", False),
    ("Bearer", False),
    ("", False),
    (None, False),
]


async def test_the_same_keys_are_accepted_and_refused_by_http_and_grpc(clients: Any) -> None:
    _, c = clients
    for authorization, accepted in AUTH:
        http, http_body = await c.http_status(authorization)
        code, message = await c.grpc_status(authorization)
        assert (http == 200) is accepted, (authorization, http_body)
        assert (code == "StatusCode.OK") is accepted, (authorization, message)
        if not accepted:
            assert http == 401 and code == "StatusCode.UNAUTHENTICATED"
            assert message == http_body["message"] and http_body["error"] == "unauthorized"


async def test_errors_have_the_same_status_and_message_on_http_and_grpc(clients: Any) -> None:
    h, c = clients
    key = "Bearer s3cret"
    cases = {
        "unknown model": ({"model": "nope"}, 404, "StatusCode.NOT_FOUND"),
        "bad entity id": ({"ids": ["no spaces allowed"]}, 422, "StatusCode.INVALID_ARGUMENT"),
        "Triton down": ({}, 503, "StatusCode.UNAVAILABLE"),
    }
    for name, (kw, status, code) in cases.items():
        h.triton.mode = "down" if name == "Triton down" else "up"
        http, body = await c.http_status(key, **kw)
        grpc_code, message = await c.grpc_status(key, **kw)
        assert (http, grpc_code) == (status, code), name
        assert message == body["message"] and body["message"], name


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidRequestError("bad"), 422, grpc.StatusCode.INVALID_ARGUMENT),
        (PayloadTooLargeError("big"), 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UnauthorizedError("who"), 401, grpc.StatusCode.UNAUTHENTICATED),
        (UnknownModelError("m"), 404, grpc.StatusCode.NOT_FOUND),
        (FeatureStoreUnavailableError("down"), 503, grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceededError("slow"), 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_one_error_table_for_both_transports(error: Any, status: int, code: grpc.StatusCode) -> None:
    http_status, body, headers = codec.http_error(error, retry_after_s=3)
    assert http_status == status and codec.grpc_error(error) == (code, str(error))
    assert body == codec.error_json(error.kind, str(error))
    assert ("retry-after" in headers) is (status == 503)
    assert ("www-authenticate" in headers) is (status == 401)
