"""One gateway, many Triton servers: failover, balancing, breakers per server, settings errors."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.breaker import CircuitBreaker
from gateway.errors import TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from gateway.triton import TritonClient
from tests.unit.gateway.test_breaker import FakeChannel

pytestmark = pytest.mark.anyio
X = np.zeros((2, 4), dtype=np.float32)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingChannel(FakeChannel):
    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.calls = 0
        self.delay_s = delay_s

    async def infer(self, request: bytes, *, output: str, timeout_s: float) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return await super().infer(request, output=output, timeout_s=timeout_s)


def pool(**kw: object) -> tuple[TritonClient, dict[str, CountingChannel]]:
    channels = {"a:1": CountingChannel(), "b:2": CountingChannel()}
    settings = GatewayTritonSettings(
        grpc_urls=list(channels), breaker_failures=2, breaker_reset_s=3600, max_retries=3, **kw
    )
    return TritonClient(settings, channel_factory=channels.__getitem__), channels


async def test_a_dead_server_costs_no_failed_call_and_opens_only_its_breaker() -> None:
    c, ch = pool()
    ch["a:1"].state = "down"
    for _ in range(20):
        assert (await c.infer("m", "1", X, output="probabilities")).shape == (2, 2)
    a, b = c.servers
    assert a.breaker.state == CircuitBreaker.OPEN and b.breaker.state == CircuitBreaker.CLOSED
    assert ch["a:1"].calls == 2  # after the breaker opened, no call went there
    assert await c.model_ready("m", "1")
    assert set(c.degraded()) == {"a:1"}


async def test_a_server_without_the_version_is_skipped_and_rejoins_when_ready() -> None:
    c, ch = pool()
    ch["b:2"].state = "empty"  # restarted, nothing loaded yet
    for _ in range(10):
        await c.infer("m", "1", X, output="probabilities")
    assert c.servers[1].breaker.state == CircuitBreaker.OPEN
    ch["b:2"].state = "serving"
    assert await c.model_ready("m", "1")  # the readiness probe closes its breaker
    assert c.servers[1].breaker.state == CircuitBreaker.CLOSED and c.degraded() == {}


async def test_every_server_down_is_a_503_naming_them() -> None:
    c, ch = pool()
    for fake in ch.values():
        fake.state = "down"
    with pytest.raises(TritonUnavailableError, match="unavailable"):
        await c.infer("m", "1", X, output="probabilities")


async def test_calls_go_to_the_server_with_fewest_outstanding() -> None:
    c, ch = pool()
    ch["a:1"].delay_s = 0.05  # a slow server accumulates calls in flight
    tasks = []
    for _ in range(40):
        tasks.append(asyncio.ensure_future(c.infer("m", "1", X, output="probabilities")))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert ch["b:2"].calls > ch["a:1"].calls > 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("grpc_urls", [], "empty"),
        ("grpc_urls", ["127.0.0.1"], "not host:port"),
        ("grpc_urls", ["a:1", "b:99999"], "not host:port"),
        ("grpc_dns", "tri ton:8001", "invalid host"),
    ],
)
def test_bad_endpoint_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewayTritonSettings(**{field: value})


def test_a_list_with_a_scheme_is_normalised() -> None:
    s = GatewayTritonSettings(grpc_urls=["grpc://10.0.0.1:8001/", "10.0.0.2:8001"])
    assert s.endpoints() == ["10.0.0.1:8001", "10.0.0.2:8001"]
