"""HTTP routes: parse, call the service, render. Nothing here knows Feast or Triton."""

from __future__ import annotations

import hmac
import re
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway import metrics, schemas
from gateway.catalog import ModelView
from gateway.errors import InvalidRequestError, PayloadTooLargeError, UnauthorizedError
from gateway.service import PredictionResult, PredictionService

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_bearer = HTTPBearer(auto_error=False, description="API key (only when gateway.api_keys is set).")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorBody, "description": text}
    for code, text in (
        (401, "Missing or wrong API key."),
        (404, "Unknown model."),
        (413, "Body too large."),
        (422, "The request does not match the model's contract."),
        (503, "Triton or the online store is down, or the version is refused (Retry-After)."),
        (504, "Triton did not answer within the deadline."),
    )
}


def _service(request: Request) -> PredictionService:
    return request.app.state.service  # type: ignore[no-any-return]


def check_api_key(keys: list[bytes], authorization: str | None) -> None:
    """401 unless ``Authorization: Bearer <key>`` names a configured key (constant-time compare)."""
    if not keys:
        return
    value = authorization or ""
    token = (value[7:] if value[:7].lower() == "bearer " else "").strip().encode()
    ok = False
    for key in keys:  # compare with every key: the time does not tell which one matched
        ok |= hmac.compare_digest(token, key)
    if not ok:
        raise UnauthorizedError("missing or invalid API key (Authorization: Bearer <key>)")


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """FastAPI dependency form of ``check_api_key`` (also documents the scheme in OpenAPI)."""
    check_api_key(request.app.state.api_keys, request.headers.get("authorization"))


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=_ERRORS)


def request_id_of(request: Request) -> str | None:
    """The caller's X-Request-ID when it is safe to echo, else None (the service makes one)."""
    rid = request.headers.get("x-request-id")
    return rid if rid and _REQUEST_ID_RE.match(rid) else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (also without Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLargeError(f"request body over {limit} bytes")
        except ValueError as e:
            raise InvalidRequestError("invalid Content-Length") from e
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def render_result(result: PredictionResult, entities: list[Any] | None) -> dict[str, Any]:
    """The JSON shape of PredictResponse (built directly: no per-row model validation)."""
    preds = []
    for i, p in enumerate(result.predictions):
        preds.append(
            {
                "entity": entities[i] if entities is not None else None,
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
        )
    return {
        "request_id": result.request_id,
        "model": result.model,
        "model_version": result.model_version,
        "latency_ms": round(result.latency_ms, 3),
        "predictions": preds,
    }


@v1.post(
    "/models/{model}/predict",
    response_model=schemas.PredictResponse,
    summary="Score entities (ids) or instances (features)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.PredictRequest.model_json_schema()}},
        }
    },
)
async def predict(model: str, request: Request) -> Response:
    """Score 1..max_entities entities by id, or instances that already carry their features."""
    service = _service(request)
    body = await read_body(request, service.settings.max_body_bytes)
    payload, result = await predict_payload(service, model, body, request_id_of(request))
    request.state.model_version = result.model_version
    return Response(payload, media_type="application/json", headers={"x-request-id": result.request_id})


async def predict_payload(
    service: PredictionService, model: str, body: bytes, request_id: str | None
) -> tuple[bytes, PredictionResult]:
    """Parse a predict body, run the service, render the JSON answer (shared by the fast path)."""
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
    if entities is not None:
        if not isinstance(entities, list):
            raise InvalidRequestError('"entities" must be a list')
        result = await service.predict_entities(model, entities, request_id=request_id)
    else:
        if not isinstance(instances, list):
            raise InvalidRequestError('"instances" must be a list')
        result = await service.predict_instances(model, instances, request_id=request_id)
    return orjson.dumps(render_result(result, entities)), result


def model_info(view: ModelView) -> dict[str, Any]:
    """The JSON shape of ModelInfo."""
    aliases: dict[str, list[str]] = {}
    for alias, version in view.routing.items():
        aliases.setdefault(version, []).append(alias)
    versions = [
        {
            "version": v.version,
            "aliases": aliases.get(v.version, []),
            "task": v.task,
            "servable": v.servable,
            "problem": v.problem or None,
        }
        for v in view.versions.values()
    ]
    champion = view.version_for("champion")
    problem = view.problem or (None if champion else "the champion version is not served")
    return {
        "name": view.name,
        "feature_service": view.feature_service,
        "features": list(view.features),
        "entity_keys": list(view.entity_keys),
        "routing": dict(view.routing),
        "versions": versions,
        "servable": problem is None,
        "problem": problem,
    }


@v1.get("/models", response_model=schemas.ModelList, summary="Served models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every served model with its routing, versions and feature list."""
    return {"models": [model_info(v) for v in _service(request).models()]}


@v1.get("/models/{model}", response_model=schemas.ModelInfo, summary="One served model")
async def get_model(model: str, request: Request) -> dict[str, Any]:
    """Versions, routing (alias -> version) and the feature list of ``model``."""
    return model_info(_service(request).model(model))


@router.get("/healthz", response_model=schemas.Health, summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    summary="Readiness: Triton, model version, online store, contract",
    responses={503: {"model": schemas.Readiness, "description": "Not ready; checks say why."}},
)
async def readyz(request: Request) -> Response:
    """200 when every check is ok, else 503 with the reasons."""
    service = _service(request)
    checks = await service.readiness()
    ready = all(v == "ok" for v in checks.values())
    headers = {} if ready else {"retry-after": str(service.settings.retry_after_s)}
    return Response(
        orjson.dumps({"ready": ready, "checks": checks}),
        status_code=200 if ready else 503,
        media_type="application/json",
        headers=headers,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition of the gateway's metrics."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
