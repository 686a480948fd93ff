"""The FastAPI app factory: adapters are built here (or injected by tests), routes stay thin."""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import codec, metrics
from gateway.docs_ui import mount_docs
from gateway.errors import GatewayError, InvalidRequestError
from gateway.features import MeteredFeatureSource
from gateway.predlog import DurablePredictionLog, NullPredictionLog, PredictionLog
from gateway.push import FeaturePusher, PushService
from gateway.routes import PREDICT_PATH, predict_docs, router, v1
from gateway.service import PredictionService
from gateway.triton import InferenceClient
from treeserve.features import FeatureSource
from treeserve.local_triton import gateway_triton

if TYPE_CHECKING:
    from gateway.settings import GatewayConfig

log = logging.getLogger(__name__)


def _error(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def build_predlog(settings: GatewayConfig) -> PredictionLog:
    """The durable prediction log of the settings (or none when disabled)."""
    gw = settings.gateway
    if not gw.predlog_enabled:
        return NullPredictionLog()
    return DurablePredictionLog(
        settings.path(gw.predlog_dir),
        fsync=gw.predlog_fsync,
        fsync_interval_ms=gw.predlog_fsync_interval_ms,
        queue_size=gw.predlog_queue_size,
        overflow=gw.predlog_overflow,
        segment_rows=gw.predlog_segment_rows,
        segment_s=gw.predlog_segment_s,
    )


def _hot_path(app: FastAPI) -> GatewayMiddleware:
    """The GatewayMiddleware instance of ``app`` (built on first use of the middleware stack)."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    node: Any = app.middleware_stack
    while node is not None and not isinstance(node, GatewayMiddleware):
        node = getattr(node, "app", None)
    if node is None:
        raise RuntimeError("GatewayMiddleware is not installed")
    return node


def create_app(
    settings: GatewayConfig,
    *,
    features: FeatureSource | None = None,
    triton: InferenceClient | None = None,
    predlog: PredictionLog | None = None,
    pusher: FeaturePusher | None = None,
    grpc: bool = True,
) -> FastAPI:
    """The gateway app. Missing adapters are built from ``settings`` when the app starts."""
    gw = settings.gateway

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gateway.triton import TritonClient
        from treeserve.features import open_feature_source

        service = PredictionService(
            gw,
            repository=settings.path(settings.exporter.repository),
            feature_service=settings.feast.feature_service,
            features=MeteredFeatureSource(
                features if features is not None else open_feature_source(settings, reader=gw.feature_reader),
                timeout_s=gw.feature_timeout_s,
            ),
            triton=triton if triton is not None else TritonClient(gateway_triton(settings)),
            predlog=predlog if predlog is not None else build_predlog(settings),
        )
        await service.start()
        app.state.service = service
        app.state.pushes = PushService(
            gw,
            pusher if pusher is not None else _feast_pusher(settings),
            feature_service=settings.feast.feature_service,
        )
        _hot_path(app).service = service
        grpc_server = None
        if grpc and gw.grpc_port:
            from gateway.grpc_server import start_grpc_server

            grpc_server = await start_grpc_server(service, host=gw.host, port=gw.grpc_port)
        # Feast, MLflow and friends leave ~10^6 long-lived objects: keep them out of the cyclic
        # collector's full passes, which otherwise show up as tail latency.
        gc.collect()
        gc.freeze()
        log.info("gateway ready: models %s", [m.name for m in service.models()])
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2.0)
            await service.aclose()

    app = _GatewayApp(
        title="treeserve gateway",
        version="1",
        description=(
            "Entity ids in, scores out: features from the Feast online store, inference on Triton "
            "(KServe v2 gRPC on the gateway's gRPC port as well)."
        ),
        lifespan=lifespan,
        docs_url=None,  # served from the package's static files by mount_docs (works offline)
        redoc_url=None,
        # FastAPI's OpenTelemetry hooks check providers on every request; we export Prometheus.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.api_keys = [k.encode() for k in gw.api_keys]
    app.state.max_body_bytes = gw.max_body_bytes
    app.include_router(router)
    app.include_router(v1)
    mount_docs(app)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return _error(*codec.http_error(exc, gw.retry_after_s))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(*codec.http_error(InvalidRequestError(f"{where}: {first.get('msg', 'invalid')}"), 0))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        body = codec.error_json("http_error", str(exc.detail))
        return _error(exc.status_code, body, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, codec.error_json("internal_error", codec.INTERNAL_ERROR))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # the served routes plus the predict path the middleware serves
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[*app.routes, *predict_docs.routes],
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.hot_path = {
        "served": (gw.model,),
        "api_keys": app.state.api_keys,
        "max_body_bytes": gw.max_body_bytes,
        "retry_after_s": gw.retry_after_s,
    }
    return app


class _GatewayApp(FastAPI):
    """FastAPI with ``GatewayMiddleware`` as its outermost layer.

    Starlette puts its error layer (and FastAPI its telemetry and body-limit layers) outside any
    added middleware; on the predict hot path, which handles its own errors and body limit, their
    wrappers cost ~15 % of a request's event-loop time (py-spy, HTTP at concurrency 64;
    docs/operations/performance.md). Every other request still passes through all of them.
    """

    hot_path: dict[str, Any]
    """GatewayMiddleware's keyword arguments (set by ``create_app``)."""

    def build_middleware_stack(self) -> ASGIApp:
        return GatewayMiddleware(super().build_middleware_stack(), **self.hot_path)


def _feast_pusher(settings: GatewayConfig) -> FeaturePusher:
    """Pushes through a Feast store of the settings (its own: the readers keep theirs)."""
    from treeserve.features import open_feature_store
    from treeserve.features.push import FeastFeaturePusher

    return FeastFeaturePusher(open_feature_store(settings), store_name=settings.feast.online_store)


_PREDICT_RE = re.compile("^" + re.escape(PREDICT_PATH).replace(re.escape("{model}"), "([^/]+)") + "$")


class GatewayMiddleware:
    """Metrics for every HTTP request, and the predict hot path without the framework's layers.

    ``POST /v1/models/{model}/predict`` (``routes.PREDICT_PATH``, described in the OpenAPI
    document by ``routes.predict_docs``) is answered here, through ``codec`` like the gRPC
    transport: FastAPI's routing and dependency resolution cost more than the rest of the request
    at this size.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        served: tuple[str, ...],
        api_keys: list[bytes],
        max_body_bytes: int,
        retry_after_s: int,
    ) -> None:
        self.app = app
        self._served = frozenset(served)
        self._keys = api_keys
        self._limit = max_body_bytes
        self._retry_after_s = retry_after_s
        self.service: PredictionService | None = None
        self._children: dict[tuple[str, int, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        status = 500
        version = ""
        model = ""
        endpoint = "unmatched"
        try:
            match = _PREDICT_RE.match(scope["path"]) if scope["method"] == "POST" else None
            if match is not None and self.service is not None:
                endpoint = PREDICT_PATH
                model = unquote(match.group(1))
                status, version = await self._predict(scope, receive, send, model)
            else:
                holder = [500]

                async def _send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        holder[0] = message["status"]
                    await send(message)

                try:
                    await self.app(scope, receive, _send)
                finally:
                    status = holder[0]
                    route = scope.get("route")
                    endpoint = getattr(route, "path", None) or "unmatched"
                    model = str((scope.get("path_params") or {}).get("model", ""))
                    version = str((scope.get("state") or {}).get("model_version", ""))
        finally:
            metrics.IN_FLIGHT.dec()
            if model not in self._served:  # callers must not mint label values
                model = ""
            labels = (endpoint, status, model, version)
            children = self._children.get(labels)
            if children is None:
                full = ("http", endpoint, str(status), model, version)
                children = (metrics.REQUESTS.labels(*full), metrics.REQUEST_DURATION.labels(*full))
                if len(self._children) < 10_000:
                    self._children[labels] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - t0)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, model: str) -> tuple[int, str]:
        assert self.service is not None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            codec.check_api_key(self._keys, headers.get("authorization"))
            body = await codec.read_body(receive, headers.get("content-length"), self._limit)
            rid = codec.request_id(headers.get("x-request-id"))
            payload, result = await codec.predict(self.service, model, body, rid)
        except GatewayError as e:
            status, body, extra = codec.http_error(e, self._retry_after_s)
            await _send_json(send, status, body, [(k.encode(), v.encode()) for k, v in extra.items()])
            return status, ""
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            await _send_json(send, 500, codec.error_json("internal_error", codec.INTERNAL_ERROR), [])
            return 500, ""
        await _send_json(send, 200, payload, [(b"x-request-id", result.request_id.encode())])
        return 200, result.model_version


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
