"""The gateway's Triton calls on prebuilt request bytes, against an in-process KServe v2 gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import DeadlineExceededError, TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from gateway.triton import TritonClient
from gateway.triton_grpc import InferRequestTemplate, output_array
from treeserve.procs import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_request_bytes_are_the_request_protobuf_would_build() -> None:
    template = InferRequestTemplate("m", "3", "probabilities")
    for n in (1, 5, 1, 1024):
        x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
        x[0, 1] = np.nan
        got = service_pb2.ModelInferRequest.FromString(template.request(x))
        want = service_pb2.ModelInferRequest(model_name="m", model_version="3")
        want.inputs.add(name="features", datatype="FP32", shape=[n, 4])
        want.outputs.add(name="probabilities")
        want.raw_input_contents.append(x.tobytes())
        assert got == want


def test_a_strided_batch_is_sent_as_its_rows() -> None:
    x = np.arange(24, dtype=np.float32).reshape(6, 4)[::2]  # not contiguous
    got = service_pb2.ModelInferRequest.FromString(InferRequestTemplate("m", "1", "p").request(x))
    assert list(got.inputs[0].shape) == [3, 4]
    assert np.array_equal(np.frombuffer(got.raw_input_contents[0], dtype=np.float32).reshape(3, 4), x)


def test_the_output_is_read_by_name_with_its_type_and_shape() -> None:
    resp = service_pb2.ModelInferResponse()
    resp.outputs.add(name="label", datatype="INT64", shape=[2])
    resp.outputs.add(name="probabilities", datatype="FP32", shape=[2, 2])
    resp.raw_output_contents.extend([np.int64([0, 1]).tobytes(), np.float32([0.1, 0.9, 0.8, 0.2]).tobytes()])
    assert np.array_equal(output_array(resp, "probabilities"), np.float32([[0.1, 0.9], [0.8, 0.2]]))
    assert output_array(resp, "label").dtype == np.int64  # type: ignore[union-attr]
    assert output_array(resp, "contributions") is None


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Answers ModelInfer with row sums; ``delay_s`` and ``refuse`` make it slow or failing."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.refuse: grpc.StatusCode | None = None
        self.calls = 0

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.refuse is not None:
            await context.abort(self.refuse, f"refused {request.model_name} {request.model_version}")
        shape = tuple(request.inputs[0].shape)
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(shape)
        resp = service_pb2.ModelInferResponse(model_name=request.model_name)
        resp.outputs.add(name=request.outputs[0].name, datatype="FP32", shape=[shape[0], 1])
        resp.raw_output_contents.append(np.nansum(x, axis=1, dtype=np.float32).tobytes())
        return resp

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ModelReadyResponse(ready=request.version == "1")

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)


@pytest.fixture
async def triton() -> AsyncIterator[tuple[Servicer, str]]:
    server = grpc.aio.server()
    servicer = Servicer()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    url = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(url)
    await server.start()
    try:
        yield servicer, url
    finally:
        await server.stop(None)


async def test_scores_come_back_in_row_order_across_chunks(triton: tuple[Servicer, str]) -> None:
    servicer, url = triton
    c = TritonClient(GatewayTritonSettings(grpc_url=url, max_batch_size=4))
    try:
        x = np.arange(30, dtype=np.float64).reshape(10, 3)  # float64 in: sent as float32
        got = await c.infer("m", "1", x, output="probabilities")
        assert servicer.calls == 3  # 4 + 4 + 2 rows
        assert np.array_equal(got, x.sum(axis=1, keepdims=True).astype(np.float32))
        assert await c.server_ready() and await c.model_ready("m", "1") and not await c.model_ready("m", "2")
    finally:
        await c.aclose()


async def test_a_slow_triton_is_a_deadline_error_naming_the_server(triton: tuple[Servicer, str]) -> None:
    servicer, url = triton
    servicer.delay_s = 0.5
    c = TritonClient(GatewayTritonSettings(grpc_url=url, timeout_s=0.05))
    try:
        with pytest.raises(DeadlineExceededError, match=f"Triton at {url} did not answer within 0.05 s"):
            await c.infer("m", "1", np.zeros((1, 3)), output="probabilities")
    finally:
        await c.aclose()


async def test_a_refused_request_is_not_retried_and_names_model_and_version(
    triton: tuple[Servicer, str],
) -> None:
    servicer, url = triton
    servicer.refuse = grpc.StatusCode.INVALID_ARGUMENT
    c = TritonClient(GatewayTritonSettings(grpc_url=url, max_retries=3))
    try:
        with pytest.raises(TritonUnavailableError, match=r"refused model 'm' version 7: refused m 7"):
            await c.infer("m", "7", np.zeros((2, 3)), output="probabilities")
        assert servicer.calls == 1
        assert c.degraded()[url].startswith("invalid_argument: refused m 7")
        servicer.refuse = grpc.StatusCode.UNAVAILABLE  # another server (here: the same one) may answer
        with pytest.raises(TritonUnavailableError):
            await c.infer("m", "7", np.zeros((2, 3)), output="probabilities")
        assert servicer.calls > 2
    finally:
        await c.aclose()


async def test_a_server_that_is_not_there_is_unreachable() -> None:
    url = f"127.0.0.1:{free_port()}"
    c = TritonClient(GatewayTritonSettings(grpc_url=url, timeout_s=0.2, max_retries=0))
    try:
        with pytest.raises(TritonUnavailableError, match=f"Triton at {url} is unavailable"):
            await c.infer("m", "1", np.zeros((1, 3)), output="probabilities")
        assert not await c.model_ready("m", "1")
        assert c.degraded()[url].startswith("unreachable: [UNAVAILABLE]")
    finally:
        await c.aclose()
