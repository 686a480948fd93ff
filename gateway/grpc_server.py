"""KServe v2 (Open Inference Protocol) gRPC transport over the same PredictionService.

``ModelInfer`` takes the entity keys as a BYTES input tensor named after each join key (e.g.
``customer_id``, shape ``[n]`` or ``[n, 1]``) — or a ``features`` FP32/FP64 tensor ``[n,
n_features]`` — and answers ``score`` (FP64 ``[n]``), ``risk_tier``, ``model_version``,
``fallback_reason`` and ``imputed_features`` (BYTES ``[n]``). Requesting the output
``contributions`` explains the rows (``gateway.explain``): FP32 ``[n, n_groups, n_features + 1]``,
TreeSHAP in margin space with the bias last, NaN on rows answered by the base rate; the other
requested outputs come with it. Any Triton/KServe v2 client
(``tritonclient.grpc``) can call it. The servicer only translates; the flow is the service's,
and the API key and error mapping are ``codec``'s (the same as HTTP's).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway import codec, metrics
from gateway.errors import GatewayError, InvalidRequestError
from gateway.explain import ExplanationResult, ExplanationService
from gateway.service import Prediction, PredictionResult, PredictionService
from treeserve import contract

log = logging.getLogger(__name__)

OUTPUTS = ("score", "risk_tier", "model_version", "fallback_reason", "imputed_features")


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """Triton's raw BYTES layout: each element is a 4-byte little-endian length + the bytes."""
    out: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        if i + 4 > n:
            raise InvalidRequestError("malformed BYTES tensor")
        (size,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + size > n:
            raise InvalidRequestError("malformed BYTES tensor")
        out.append(raw[i : i + size])
        i += size
    return out


def serialize_bytes(items: list[bytes]) -> bytes:
    """The inverse of ``deserialize_bytes``."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """ServerLive/Ready, ModelReady, metadata and ModelInfer on the gateway's service."""

    def __init__(self, service: PredictionService, api_keys: list[bytes]) -> None:
        self._service = service
        self._keys = api_keys
        self._children: dict[tuple[int, str, str], tuple[Any, Any]] = {}

    def _auth(self, context: grpc.aio.ServicerContext) -> None:
        if not self._keys:
            return
        md = dict(context.invocation_metadata() or ())
        value = md.get("authorization")
        codec.check_api_key(self._keys, value if isinstance(value, str) else None)

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        checks = await self._service.readiness()
        return service_pb2.ServerReadyResponse(ready=all(v == "ok" for v in checks.values()))

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            view = self._service.model(request.name)
        except GatewayError:
            return service_pb2.ModelReadyResponse(ready=False)
        champion = view.version_for(contract.ALIAS_CHAMPION)
        ready = champion is not None and not view.problem
        if ready and request.version:
            ready = request.version in {v.version for v in view.versions.values() if v.servable}
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name="treeserve-gateway", version="1", extensions=[])

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._auth(context)
            view = self._service.model(request.name)
        except GatewayError as e:
            await _abort(context, e)
            raise
        tm = service_pb2.ModelMetadataResponse.TensorMetadata
        champion = view.routing.get(contract.ALIAS_CHAMPION, "")
        return service_pb2.ModelMetadataResponse(
            name=view.name,
            versions=[champion] if champion else [],
            platform="treeserve-gateway",
            inputs=[tm(name=k, datatype="BYTES", shape=[-1]) for k in view.entity_keys],
            outputs=[tm(name="score", datatype="FP64", shape=[-1])]
            + [tm(name=o, datatype="BYTES", shape=[-1]) for o in OUTPUTS[1:]],
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t0 = time.perf_counter()
        status = 200
        version = ""
        model = request.model_name
        try:
            self._auth(context)
            if any(o.name == contract.OUTPUT_CONTRIBUTIONS for o in request.outputs):
                explained = await self._explain(request)
                version = explained.model_version
                return _explain_response(request, explained)
            result = await self._infer(request)
            version = result.model_version
            return _response(request, result)
        except GatewayError as e:
            status = e.status_code
            await _abort(context, e)
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except Exception:  # never a stack trace to the caller
            status = 500
            log.exception("ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, codec.INTERNAL_ERROR)
            raise
        finally:
            if not self._service.serves(model):  # callers must not mint label values
                model = ""
            key = (status, model, version)
            children = self._children.get(key)
            if children is None:
                labels = ("grpc", "ModelInfer", str(status), model, version)
                children = (metrics.REQUESTS.labels(*labels), metrics.REQUEST_DURATION.labels(*labels))
                if len(self._children) < 10_000:
                    self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - t0)

    async def _infer(self, request: Any) -> PredictionResult:
        # Key rows and feature matrices go to the service as they are: no per-row dicts here.
        view, keys, x, rid = self._rows(request)
        if keys is not None:
            return await self._service.predict_keys(view.name, keys, request_id=rid)
        assert x is not None
        return await self._service.predict_matrix(view.name, x, request_id=rid)

    async def _explain(self, request: Any) -> ExplanationResult:
        view, keys, x, rid = self._rows(request)
        explainer = ExplanationService(self._service)
        if keys is not None:
            entities = [dict(zip(view.entity_keys, row, strict=True)) for row in keys]
            return await explainer.explain_entities(view.name, entities, request_id=rid)
        assert x is not None
        instances = [
            {f: (None if np.isnan(v) else float(v)) for f, v in zip(view.features, row, strict=True)}
            for row in x
        ]
        return await explainer.explain_instances(view.name, instances, request_id=rid)

    def _rows(self, request: Any) -> tuple[Any, list[tuple[str, ...]] | None, np.ndarray | None, str | None]:
        """(model view, entity key rows, feature matrix, request id) of a ModelInfer request; one is set."""
        view = self._service.model(request.model_name)
        raw = request.raw_input_contents
        n_raw = len(raw)
        by_name: dict[str, tuple[Any, bytes | None]] = {}
        for i, inp in enumerate(request.inputs):
            by_name[inp.name] = (inp, raw[i] if i < n_raw else None)
        rid = request.id or None
        if view.entity_keys and all(k in by_name for k in view.entity_keys):
            columns: list[list[str]] = []
            for key in view.entity_keys:
                inp, data = by_name[key]
                if inp.datatype != "BYTES":
                    raise InvalidRequestError(f"input {key!r} must be BYTES (got {inp.datatype})")
                items = deserialize_bytes(data) if data is not None else list(inp.contents.bytes_contents)
                try:
                    columns.append([b.decode("utf-8") for b in items])
                except UnicodeDecodeError as e:
                    raise InvalidRequestError(f"input {key!r} must be UTF-8 strings") from e
            if len({len(c) for c in columns}) != 1:
                raise InvalidRequestError("entity key inputs must have the same number of elements")
            keys: list[tuple[str, ...]] = (
                [(v,) for v in columns[0]] if len(columns) == 1 else list(zip(*columns, strict=True))
            )
            return view, keys, None, rid
        if contract.INPUT_TENSOR in by_name:
            inp, data = by_name[contract.INPUT_TENSOR]
            dtype = {"FP32": np.float32, "FP64": np.float64}.get(inp.datatype)
            if dtype is None:
                raise InvalidRequestError(f"input {contract.INPUT_TENSOR!r} must be FP32 or FP64")
            if data is not None:
                arr = np.frombuffer(data, dtype=dtype)
            else:
                contents = inp.contents.fp32_contents if dtype is np.float32 else inp.contents.fp64_contents
                arr = np.asarray(list(contents), dtype=dtype)
            n_features = len(view.features)
            if n_features == 0 or arr.size % n_features:
                raise InvalidRequestError(
                    f"input {contract.INPUT_TENSOR!r} must have shape [n, {n_features}]"
                )
            return view, None, arr.reshape(-1, n_features), rid  # NaN: missing, as null is on HTTP
        raise InvalidRequestError(
            f"send the entity keys as BYTES inputs named {list(view.entity_keys)} "
            f"(or {contract.INPUT_TENSOR!r} FP32 [n, {len(view.features)}])"
        )


def _explain_response(request: Any, explained: ExplanationResult) -> Any:
    """The requested prediction outputs of the explained rows plus ``contributions``."""
    result = PredictionResult(
        request_id=explained.request_id,
        model=explained.model,
        model_version=explained.model_version,
        predictions=[e.prediction for e in explained.explanations],
        latency_ms=explained.latency_ms,
    )
    others = [o.name for o in request.outputs if o.name != contract.OUTPUT_CONTRIBUTIONS]
    resp = _response(request, result, wanted=others)
    data = np.ascontiguousarray(explained.contributions, dtype=np.float32)
    out = resp.outputs.add()
    out.name = contract.OUTPUT_CONTRIBUTIONS
    out.datatype = "FP32"
    out.shape.extend(data.shape)
    resp.raw_output_contents.append(data.tobytes())
    return resp


_OUTPUT_TENSOR = service_pb2.ModelInferResponse.InferOutputTensor
_BYTES_OUTPUTS: dict[str, Callable[[Prediction], str]] = {
    "risk_tier": lambda p: p.risk_tier or "",
    "model_version": lambda p: p.model_version,
    "fallback_reason": lambda p: p.fallback,
    "imputed_features": lambda p: ",".join(p.imputed),
}


def _response(request: Any, result: PredictionResult, *, wanted: list[str] | None = None) -> Any:
    preds = result.predictions
    n = len(preds)
    if wanted is None:
        wanted = [o.name for o in request.outputs] or list(OUTPUTS)
    outputs = []
    raw = []
    for name in wanted:
        if name == "score":
            raw.append(np.fromiter((p.score for p in preds), dtype=np.float64, count=n).tobytes())
            dtype = "FP64"
        else:
            value = _BYTES_OUTPUTS.get(name)
            if value is None:
                raise InvalidRequestError(f"unknown output {name!r}; outputs are {list(OUTPUTS)}")
            raw.append(serialize_bytes([value(p).encode() for p in preds]))
            dtype = "BYTES"
        outputs.append(_OUTPUT_TENSOR(name=name, datatype=dtype, shape=(n,)))
    return service_pb2.ModelInferResponse(
        model_name=result.model,
        model_version=result.model_version,
        id=result.request_id,
        outputs=outputs,
        raw_output_contents=raw,
    )


async def _abort(context: grpc.aio.ServicerContext, e: GatewayError) -> None:
    await context.abort(*codec.grpc_error(e))


async def start_grpc_server(service: PredictionService, *, host: str, port: int) -> grpc.aio.Server:
    """Serve KServe v2 on ``host:port`` (SO_REUSEPORT: every worker may bind the same port)."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", service.settings.max_body_bytes),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        KServeServicer(service, [k.encode() for k in service.settings.api_keys]), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await server.start()
    log.info("KServe v2 gRPC on %s:%d", host, port)
    return server
