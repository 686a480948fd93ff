"""The breaker towards Triton re-closes only when the routed version is READY again."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from gateway.errors import CircuitOpenError, TritonCallError, TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from gateway.triton import CircuitBreaker, TritonClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answer(request: bytes, output: str) -> np.ndarray:
    """The output for a serialized ModelInferRequest: [0.25, 0.75] per row."""
    req = service_pb2.ModelInferRequest.FromString(request)
    n = req.inputs[0].shape[0]
    assert len(req.raw_input_contents[0]) == 4 * n * req.inputs[0].shape[1]  # float32 rows
    assert req.outputs[0].name == output == "probabilities"
    return np.tile(np.float32([0.25, 0.75]), (n, 1))


class FakeChannel:
    """One Triton server as seen by TritonClient (gRPC requests): down, up without the version, or serving."""

    def __init__(self) -> None:
        self.state = "serving"  # down | empty | serving

    async def infer(self, request: bytes, *, output: str, timeout_s: float) -> Any:
        if self.state == "down":
            raise TritonCallError("UNAVAILABLE", "failed to connect to all addresses")
        if self.state == "empty":
            req = service_pb2.ModelInferRequest.FromString(request)
            raise TritonCallError(
                "NOT_FOUND",
                f"Request for unknown model: '{req.model_name}' version {req.model_version} is not found",
            )
        return answer(request, output)

    async def model_ready(self, model: str, version: str, *, timeout_s: float) -> bool:
        if self.state == "down":
            raise TritonCallError("UNAVAILABLE", "failed to connect")
        return self.state == "serving"

    async def server_ready(self, *, timeout_s: float) -> bool:
        return self.state != "down"

    async def close(self) -> None:
        pass


def client() -> tuple[TritonClient, FakeChannel]:
    fake = FakeChannel()
    c = TritonClient(
        GatewayTritonSettings(grpc_url="fake:1", breaker_failures=2, breaker_reset_s=0.0, max_retries=0),
        channel_factory=lambda url: fake,  # the transport seam: no network
    )
    return c, fake


X = np.zeros((3, 4), dtype=np.float32)


async def infer(c: TritonClient) -> np.ndarray:
    return await c.infer("m", "1", X, output="probabilities")


async def test_an_answering_triton_without_the_version_keeps_the_breaker_open() -> None:
    c, fake = client()
    fake.state = "down"
    for _ in range(2):
        with pytest.raises(TritonUnavailableError):
            await infer(c)
    assert c.servers[0].breaker.state == CircuitBreaker.OPEN
    fake.state = "empty"  # restarted, answers, has not loaded the routed version yet
    for _ in range(3):
        with pytest.raises(TritonUnavailableError, match="not ready"):
            await infer(c)  # each probe checks readiness first, and the breaker reopens
        assert c.servers[0].breaker.state == CircuitBreaker.OPEN
    assert not await c.model_ready("m", "1") and c.servers[0].breaker.state == CircuitBreaker.OPEN
    fake.state = "serving"
    assert (await infer(c)).shape == (3, 2)
    assert c.servers[0].breaker.state == CircuitBreaker.CLOSED


async def test_refused_calls_open_the_breaker_and_readiness_closes_it() -> None:
    c, fake = client()
    fake.state = "empty"  # the version was unloaded under a closed breaker
    for _ in range(2):
        with pytest.raises(TritonUnavailableError, match="not found"):
            await infer(c)
    assert c.servers[0].breaker.state == CircuitBreaker.OPEN
    fake.state = "serving"
    assert await c.model_ready("m", "1")  # /readyz sees READY: the breaker agrees at once
    assert c.servers[0].breaker.state == CircuitBreaker.CLOSED


async def test_a_cancelled_probe_does_not_wedge_the_breaker() -> None:
    c = TritonClient(GatewayTritonSettings(grpc_url="fake:1", breaker_failures=1, breaker_reset_s=3600))
    c.servers[0].breaker.failure()
    with pytest.raises(CircuitOpenError):
        await infer(c)
    b = CircuitBreaker(failures=1, reset_s=0.0, target="t")
    b.failure()
    assert b.admit() is True and b.admit() is None  # one probe at a time
    b.probe_done()  # the probe ended without a verdict
    assert b.state == CircuitBreaker.OPEN and b.admit() is True


async def test_a_server_answering_without_the_version_is_probed_again_soon(monkeypatch: Any) -> None:
    monkeypatch.setattr("gateway.breaker.READY_RECHECK_S", 0.0)  # "soon": no wait in a unit test
    fake = FakeChannel()
    c = TritonClient(
        GatewayTritonSettings(grpc_url="fake:1", breaker_failures=1, breaker_reset_s=3600, max_retries=0),
        channel_factory=lambda url: fake,
    )
    fake.state = "down"
    with pytest.raises(TritonUnavailableError):
        await infer(c)
    with pytest.raises(CircuitOpenError):
        await infer(c)  # a server that does not answer waits the full reset
    fake.state = "empty"  # restarted, loading
    assert not await c.model_ready("m", "1")
    assert c.servers[0].breaker.state == CircuitBreaker.OPEN
    with pytest.raises(TritonUnavailableError, match="not ready"):
        await infer(c)  # probed at once, not after reset_s; still open while it is not READY
    fake.state = "serving"
    assert (await infer(c)).shape == (3, 2)  # the next probe finds it READY and closes the breaker
    assert c.servers[0].breaker.state == CircuitBreaker.CLOSED


def test_an_unreachable_probe_waits_the_full_reset_again(monkeypatch: Any) -> None:
    monkeypatch.setattr("gateway.breaker.READY_RECHECK_S", 0.0)
    b = CircuitBreaker(failures=1, reset_s=3600, target="t")
    b.failure()
    assert not b.probe_due()
    b.not_ready()
    assert b.probe_due() and b.admit() is True
    b.failure()  # the probe found the server gone again
    assert not b.probe_due() and b.admit() is None
