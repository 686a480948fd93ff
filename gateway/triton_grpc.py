"""One Triton server's ``grpc.aio`` channel: KServe v2 ``ModelInfer`` on prebuilt request bytes.

``tritonclient.grpc.aio`` builds an ``InferInput`` (numpy → bytes → protobuf message), a whole
``ModelInferRequest`` and an ``InferResult`` for every call; measured against the same Triton
(docs/operations/performance.md) that cost ~330 µs of gateway CPU per call where calling the
generated ``ModelInfer`` method with the request serialized here costs ~190 µs. So a request is
bytes: the fields that depend only on (model, version, output) are serialized once by protobuf
(:class:`InferRequestTemplate`), the input tensor's header once per shape, and each call appends
the array's bytes as ``raw_input_contents`` (protobuf concatenation merges messages, appending
repeated fields). The answer is parsed by protobuf and its output read with ``np.frombuffer``.

grpc errors are turned into :class:`~gateway.errors.TritonCallError` (the status code's name and
details) where they enter, as the HTTP channel (``gateway.triton_http``) turns its answers.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import triton_to_np_dtype

from gateway.errors import TritonCallError
from treeserve import contract

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_MODEL_READY_METHOD = "/inference.GRPCInferenceService/ModelReady"
_SERVER_READY_METHOD = "/inference.GRPCInferenceService/ServerReady"

CHANNEL_ARGS = [
    # Reconnect quickly after a Triton restart (the default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Wire tags of ModelInferRequest (inference/grpc_service.proto): field 5 ``inputs`` and field 7
# ``raw_input_contents``, both length-delimited (wire type 2).
_TAG_INPUTS = bytes([5 << 3 | 2])
_TAG_RAW_INPUT = bytes([7 << 3 | 2])


class InferRequestTemplate:
    """Serialized ``ModelInferRequest`` parts for one (model, version, output): only the array varies."""

    def __init__(self, model: str, version: str, output: str) -> None:
        head = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        head.outputs.add().name = output
        self._head = head.SerializeToString()
        self._inputs: dict[tuple[int, ...], bytes] = {}

    def _input(self, shape: tuple[int, ...]) -> bytes:
        tensor = self._inputs.get(shape)
        if tensor is None:
            msg = service_pb2.ModelInferRequest.InferInputTensor(
                name=contract.INPUT_TENSOR, datatype="FP32", shape=shape
            ).SerializeToString()
            # One entry per batch size seen: at most max_batch_size of them.
            tensor = self._inputs[shape] = _TAG_INPUTS + _varint(len(msg)) + msg
        return tensor

    def request(self, x: np.ndarray) -> bytes:
        """The request for ``x`` (float32 [n, n_features]) as the ``features`` input."""
        raw = np.ascontiguousarray(x).data.cast("B")
        return b"".join((self._head, self._input(x.shape), _TAG_RAW_INPUT, _varint(x.nbytes), raw))


def output_array(response: Any, output: str) -> np.ndarray | None:
    """``output`` of a ``ModelInferResponse`` as an array of its shape (None when it is absent)."""
    for i, tensor in enumerate(response.outputs):
        if tensor.name == output:
            # tritonclient's datatype table; BYTES (length-prefixed strings) is not a flat array.
            dtype = triton_to_np_dtype(tensor.datatype)
            if dtype in (None, np.object_) or i >= len(response.raw_output_contents):
                return None
            return np.frombuffer(response.raw_output_contents[i], dtype=dtype).reshape(tuple(tensor.shape))
    return None


async def _rpc(method: Any, request: Any, timeout_s: float) -> Any:
    """Call a unary ``method``; a ``grpc.aio.AioRpcError`` comes out as a ``TritonCallError``
    (the status code's name and details)."""
    try:
        return await method(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as e:
        raise TritonCallError(e.code().name, e.details() or "") from e


class GrpcTritonChannel:
    """``TritonChannel`` over one persistent ``grpc.aio`` channel (probes share it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=CHANNEL_ARGS)
        # No request serializer: the request is already bytes (InferRequestTemplate).
        self._infer = self._channel.unary_unary(
            INFER_METHOD, response_deserializer=service_pb2.ModelInferResponse.FromString
        )
        self._model_ready = self._channel.unary_unary(
            _MODEL_READY_METHOD,
            request_serializer=service_pb2.ModelReadyRequest.SerializeToString,
            response_deserializer=service_pb2.ModelReadyResponse.FromString,
        )
        self._server_ready = self._channel.unary_unary(
            _SERVER_READY_METHOD,
            request_serializer=service_pb2.ServerReadyRequest.SerializeToString,
            response_deserializer=service_pb2.ServerReadyResponse.FromString,
        )

    async def infer(self, request: bytes, *, output: str, timeout_s: float) -> np.ndarray | None:
        """``ModelInfer`` on a serialized request; ``output`` as an array (None when absent)."""
        return output_array(await _rpc(self._infer, request, timeout_s), output)

    async def model_ready(self, model: str, version: str, *, timeout_s: float) -> bool:
        """``ModelReady``."""
        request = service_pb2.ModelReadyRequest(name=model, version=version)
        return bool((await _rpc(self._model_ready, request, timeout_s)).ready)

    async def server_ready(self, *, timeout_s: float) -> bool:
        """``ServerReady``."""
        return bool((await _rpc(self._server_ready, service_pb2.ServerReadyRequest(), timeout_s)).ready)

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self._channel.close()
