"""What the HTTP and gRPC transports share: API key, request body, predict payloads and errors.

Both transports call these, so a key accepted on one is accepted on the other, a body is read
and parsed one way, and an error answers the same status and message on both::

    authorization "Bearer <key>"  -> check_api_key          (both; whitespace around the key ignored)
    ASGI body chunks              -> read_body               (HTTP; size limit, 413)
    JSON body                     -> parse_predict / render  (HTTP; entities or instances)
    GatewayError                  -> http_error / grpc_error (status + {"error", "message"} / code + message)

Nothing here validates with pydantic: the predict hot path parses with orjson and checks in the service.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import Any

import grpc
import orjson
from starlette.types import Receive

from gateway.errors import GatewayError, InvalidRequestError, PayloadTooLargeError, UnauthorizedError
from gateway.service import Prediction, PredictionResult, PredictionService

INTERNAL_ERROR = "internal error (see the gateway log)"
"""Message of an unexpected error (the details go to the log, never to the caller)."""

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


# ---- API key -------------------------------------------------------------------------------
def bearer_token(authorization: str | None) -> bytes:
    """The key of an ``authorization: Bearer <key>`` value (scheme case-insensitive, key stripped)."""
    value = (authorization or "").strip()
    if value[:7].lower() != "bearer " and value.lower() != "bearer":
        return b""
    return value[7:].strip().encode()


def check_api_key(keys: Sequence[bytes], authorization: str | None) -> None:
    """UnauthorizedError unless the value names a configured key (no keys: open)."""
    if not keys:
        return
    token = bearer_token(authorization)
    ok = False
    for key in keys:  # compare with every key: the time does not tell which one matched
        ok |= hmac.compare_digest(token, key)
    if not ok or not token:
        raise UnauthorizedError("missing or invalid API key (authorization: Bearer <key>)")


def request_id(value: str | None) -> str | None:
    """The caller's request id when it is safe to echo, else None (the service makes one)."""
    return value if value and _REQUEST_ID_RE.match(value) else None


# ---- HTTP body and predict payload ---------------------------------------------------------
async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The ASGI request body, refused with 413 beyond ``limit`` bytes (also without Content-Length)."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as e:
            raise InvalidRequestError("invalid Content-Length") from e
        if size > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("client disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_predict(body: bytes) -> tuple[list[Any] | None, list[Any] | None]:
    """(entities, instances) of a predict body; exactly one is a list."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(f"body is not valid JSON: {e.msg}") from e
    if not isinstance(payload, dict):
        raise InvalidRequestError('body must be an object with "entities" or "instances"')
    entities = payload.get("entities")
    instances = payload.get("instances")
    if len(payload) > 1 or (entities is None) == (instances is None):
        extra = sorted(set(payload) - {"entities", "instances"})[:5]
        hint = f" (unknown fields {extra})" if extra else ""
        raise InvalidRequestError(f'send exactly one of "entities" or "instances"{hint}')
    if entities is not None and not isinstance(entities, list):
        raise InvalidRequestError('"entities" must be a list')
    if instances is not None and not isinstance(instances, list):
        raise InvalidRequestError('"instances" must be a list')
    return entities, instances


def render_prediction(p: Prediction, entity: Any) -> dict[str, Any]:
    """One row of ``schemas.PredictResponse`` (explain rows extend it)."""
    return {
        "entity": entity,
        "score": p.score,
        "risk_tier": p.risk_tier,
        "label": p.label,
        "model_version": p.model_version,
        "route": p.route,
        "imputed": bool(p.imputed),
        "imputed_features": list(p.imputed),
        "fallback": bool(p.fallback),
        "fallback_reason": p.fallback or None,
    }


def render_result(result: PredictionResult, entities: list[Any] | None) -> dict[str, Any]:
    """The JSON shape of ``schemas.PredictResponse`` (built directly: no per-row model validation)."""
    preds = [
        render_prediction(p, entities[i] if entities is not None else None)
        for i, p in enumerate(result.predictions)
    ]
    return {
        "request_id": result.request_id,
        "model": result.model,
        "model_version": result.model_version,
        "latency_ms": round(result.latency_ms, 3),
        "predictions": preds,
    }


async def predict(
    service: PredictionService, model: str, body: bytes, rid: str | None
) -> tuple[bytes, PredictionResult]:
    """Parse a predict body, run the service, render the JSON answer."""
    entities, instances = parse_predict(body)
    if entities is not None:
        result = await service.predict_entities(model, entities, request_id=rid)
    else:
        result = await service.predict_instances(model, instances or [], request_id=rid)
    return orjson.dumps(render_result(result, entities)), result


# ---- errors ----------------------------------------------------------------------------------
def error_json(kind: str, message: str) -> bytes:
    """The body of every error answer (``schemas.ErrorBody``)."""
    return orjson.dumps({"error": kind, "message": message})


def http_error(e: GatewayError, retry_after_s: int) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, extra headers) of a gateway error: Retry-After on 503, a challenge on 401."""
    headers: dict[str, str] = {}
    if e.status_code == 503:
        headers["retry-after"] = str(retry_after_s)
    elif e.status_code == 401:
        headers["www-authenticate"] = "Bearer"
    return e.status_code, error_json(e.kind, str(e)), headers


def grpc_error(e: GatewayError) -> tuple[grpc.StatusCode, str]:
    """(status code, message) of a gateway error on gRPC: the HTTP status's counterpart, same message."""
    return _GRPC_CODES.get(e.status_code, grpc.StatusCode.INTERNAL), str(e)
