"""HTTP routes: parse, call the service, render. Nothing here knows Feast or Triton.

``POST /v1/models/{model}/predict`` is declared in ``predict_docs`` for the OpenAPI document and
served by ``app.GatewayMiddleware`` through ``codec``; the other routes are plain FastAPI.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway import codec, metrics, schemas
from gateway.catalog import ModelView
from gateway.errors import PayloadTooLargeError, ServiceDownError
from gateway.explain import DEFAULT_REASONS, MAX_REASONS, ExplanationResult, ExplanationService
from gateway.push import PushService, render_push
from gateway.service import PredictionService

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


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """FastAPI dependency form of ``codec.check_api_key`` (also documents the scheme in OpenAPI)."""
    codec.check_api_key(request.app.state.api_keys, request.headers.get("authorization"))


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=_ERRORS)

PREDICT_PATH = "/v1/models/{model}/predict"
"""Served by ``app.GatewayMiddleware`` (no framework routing on the hot path), described here."""
predict_docs = APIRouter(dependencies=[Depends(_bearer)], responses=_ERRORS)
"""Routes that only describe a path for the OpenAPI document; ``app`` never mounts them."""


@predict_docs.post(
    PREDICT_PATH,
    response_model=schemas.PredictResponse,
    summary="Score entities (ids) or instances (features)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.PredictRequest.model_json_schema()}},
        }
    },
)
async def predict(model: str) -> None:
    """Score 1..max_entities entities by id, or instances that already carry their features."""
    raise NotImplementedError("documentation only: GatewayMiddleware serves this path")


def render_explanations(result: ExplanationResult, entities: list[Any] | None) -> dict[str, Any]:
    """The JSON shape of ``schemas.ExplainResponse``."""
    rows = []
    for i, e in enumerate(result.explanations):
        rows.append(
            {
                **codec.render_prediction(e.prediction, entities[i] if entities is not None else None),
                "contributions": e.contributions,
                "bias": e.bias,
                "reasons": [r.to_dict() for r in e.reasons],
                "no_explanation": e.no_explanation,
            }
        )
    return {
        "request_id": result.request_id,
        "model": result.model,
        "model_version": result.model_version,
        "latency_ms": round(result.latency_ms, 3),
        "explanations": rows,
    }


@v1.post(
    "/models/{model}/explain",
    response_model=schemas.ExplainResponse,
    summary="Explain scores: TreeSHAP contributions and top reasons per row",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.PredictRequest.model_json_schema()}},
        }
    },
)
async def explain(
    model: str,
    request: Request,
    k: int = Query(
        DEFAULT_REASONS, ge=1, le=MAX_REASONS, description="How many reasons (features pushing the score up)."
    ),
) -> Response:
    """Score like predict (same body) and say why: contributions, bias and the top ``k`` reasons per row.

    Contributions are computed by Triton (the version's explainer companion), in the model's
    margin space; rows answered by the base rate carry no model explanation.
    """
    service = _service(request)
    limit = service.settings.max_body_bytes
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body over {limit} bytes")
    entities, instances = codec.parse_predict(body)
    rid = codec.request_id(request.headers.get("x-request-id"))
    explainer = ExplanationService(service)
    if entities is not None:
        result = await explainer.explain_entities(model, entities, k=k, request_id=rid)
    else:
        result = await explainer.explain_instances(model, instances or [], k=k, request_id=rid)
    request.state.model_version = result.model_version
    return Response(
        orjson.dumps(render_explanations(result, entities)),
        media_type="application/json",
        headers={"x-request-id": result.request_id},
    )


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


@v1.post(
    "/features/push",
    response_model=schemas.PushResponse,
    summary="Push feature rows (Feast PushSource, online and offline)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.PushRequest.model_json_schema()}},
        }
    },
)
async def push_features(request: Request) -> dict[str, Any]:
    """Write rows of a PushSource online and offline; the next prediction reads them (422 names a bad row)."""
    pushes: PushService | None = getattr(request.app.state, "pushes", None)
    if pushes is None:
        raise ServiceDownError("feature pushes are not available: the gateway is starting")
    body = await codec.read_body(
        request.receive, request.headers.get("content-length"), request.app.state.max_body_bytes
    )
    return render_push(await pushes.push(body))


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
        orjson.dumps({"ready": ready, "checks": checks, "degraded": service.degraded()}),
        status_code=200 if ready else 503,
        media_type="application/json",
        headers=headers,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition of the gateway's metrics."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
