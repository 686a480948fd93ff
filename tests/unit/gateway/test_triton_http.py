"""The gateway's Triton calls over HTTP/1.1, against a small fake of Triton's HTTP endpoint.

The fake parses real requests (request line, headers, the KServe v2 JSON inference header and the
binary float32 rows) and answers as Triton does (JSON header + binary output, or ``{"error": ...}``);
its knobs make it close connections, answer chunked, cut an answer short, answer late or refuse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.errors import DeadlineExceededError, TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from gateway.triton import TritonClient
from treeserve.local_triton import gateway_triton
from treeserve.procs import free_port
from treeserve_app.settings import load_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTriton:
    """Triton's HTTP endpoint, small: ``infer`` answers each row's sum; the knobs make it misbehave."""

    def __init__(self) -> None:
        self.connections = 0
        """Connections accepted."""
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request read, answered or not."""
        self.inputs: list[tuple[str, list[int]]] = []
        """(datatype, shape) of every infer input read."""
        self.close: str | None = None
        """"after_answer": close each connection after its first answer (without saying so);
        "on_next_request": read a connection's second request and close without answering;
        "say_so": answer with ``Connection: close``, close a moment later (a request sent meanwhile
        is recorded, never answered)."""
        self.chunked = False
        self.cut = False
        """Write the answer's head and half its body, then close."""
        self.delay_s = 0.0
        self.refuse: tuple[int, str] | None = None
        """(HTTP status, Triton's error text) for every infer."""
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            answered, said_close = 0, False
            while (request := await read_request(reader, timeout_s=0.1 if said_close else None)) is not None:
                method, path, headers, body = request
                self.requests.append((method, path))
                if said_close or (self.close == "on_next_request" and answered):
                    return
                status, head, payload = self.answer(method, path, headers, body)
                await asyncio.sleep(self.delay_s)
                if self.close == "say_so":
                    head["Connection"] = "close"
                    said_close = True
                await self.write(writer, status, head, payload)
                answered += 1
                if self.cut or self.close == "after_answer":
                    return
        except ConnectionError:
            pass  # the client went away (a deadline closes its connection)
        finally:
            self._writers.discard(writer)
            writer.close()

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = path.strip("/").split("/")  # v2/models/{model}/versions/{version}/{verb}
        if "host" not in headers:
            return error(400, "HTTP/1.1 request without Host")
        if method == "GET" and path == "/v2/health/ready":
            return 200, {}, b""
        if method == "GET" and parts[-1] == "ready" and len(parts) == 6:
            return (200, {}, b"") if parts[4] == "1" else error(400, f"version {parts[4]} is not ready")
        if method != "POST" or parts[-1] != "infer" or len(parts) != 6:
            return error(404, f"no route {method} {path}")
        if self.refuse is not None:
            return error(*self.refuse)
        header_len = int(headers["inference-header-content-length"])
        doc = json.loads(body[:header_len])
        (tensor,) = doc["inputs"]
        self.inputs.append((tensor["datatype"], tensor["shape"]))
        assert tensor["parameters"]["binary_data_size"] == len(body) - header_len
        x = np.frombuffer(body, dtype=np.float32, offset=header_len).reshape(tensor["shape"])
        scores = np.nansum(x, axis=1, dtype=np.float32).reshape(-1, 1).tobytes()
        (wanted,) = doc["outputs"]
        out = {
            "model_name": parts[2],
            "model_version": parts[4],
            "outputs": [
                {
                    "name": wanted["name"],
                    "datatype": "FP32",
                    "shape": [x.shape[0], 1],
                    "parameters": {"binary_data_size": len(scores)},
                }
            ],
        }
        json_header = json.dumps(out).encode()
        return (
            200,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(json_header)),
            },
            json_header + scores,
        )

    async def write(
        self, writer: asyncio.StreamWriter, status: int, head: dict[str, str], body: bytes
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}[status]
        if self.chunked:
            head["Transfer-Encoding"] = "chunked"
        else:
            head["Content-Length"] = str(len(body))
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\n".encode()
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items())
            + b"\r\n"
        )
        if self.cut:
            writer.write(body[: len(body) // 2])
        elif self.chunked:  # every piece in a write of its own, as a streaming server sends them
            for i in range(0, len(body), 7):
                writer.write(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(b"0\r\n")  # the last chunk, then (a moment later) the end of the trailers
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"\r\n")
        else:
            writer.write(body)
        await writer.drain()

    def close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()


def error(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    """Triton's error answer."""
    return status, {"Content-Type": "application/json"}, json.dumps({"error": text}).encode()


async def read_request(
    reader: asyncio.StreamReader, *, timeout_s: float | None = None
) -> tuple[str, str, dict[str, str], bytes] | None:
    """(method, path, lower-cased headers, body) of the next request; None when the client closed
    (or sent none within ``timeout_s``)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return None
    line, *lines = head[:-4].decode("latin-1").split("\r\n")
    method, path, version = line.split(" ")
    assert version == "HTTP/1.1", line
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


@pytest.fixture
async def triton() -> AsyncIterator[tuple[FakeTriton, str]]:
    fake = FakeTriton()
    port = free_port()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", port)
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.close()
        fake.close_all()
        await server.wait_closed()


def client(url: str, **settings: float) -> TritonClient:
    return TritonClient(GatewayTritonSettings(protocol="http", http_url=url, **settings))  # type: ignore[arg-type]


def sums(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=1, keepdims=True).astype(np.float32)


async def test_scores_come_back_in_row_order_across_chunks_on_one_connection(
    triton: tuple[FakeTriton, str],
) -> None:
    fake, url = triton
    c = client(url, max_batch_size=4)
    try:
        assert c.protocol == "http"
        x = np.arange(30, dtype=np.float64).reshape(10, 3)  # float64 in: sent as float32
        x[3, 1] = 0.1  # not exact in float32: the sum is the float32 rows'
        got = await c.infer("m", "1", x, output="probabilities")
        assert fake.inputs == [("FP32", [4, 3]), ("FP32", [4, 3]), ("FP32", [2, 3])]
        assert got.shape == (10, 1) and got.dtype == np.float32
        assert np.array_equal(got, sums(x.astype(np.float32)))
        for n in (1, 5, 1):
            y = np.random.default_rng(n).normal(size=(n, 3))
            assert np.allclose(await c.infer("m", "1", y, output="probabilities"), sums(y), atol=1e-5)
        assert fake.requests[0] == ("POST", "/v2/models/m/versions/1/infer")
        assert fake.connections == 1  # six calls, one kept-alive connection
    finally:
        await c.aclose()


@pytest.mark.parametrize("close", ["after_answer", "on_next_request"])
async def test_a_kept_alive_connection_the_server_closed_is_replaced_unseen(
    triton: tuple[FakeTriton, str], close: str
) -> None:
    """after_answer: the close is seen while idle; on_next_request: only once the call is sent on it."""
    fake, url = triton
    fake.close = close
    c = client(url, max_retries=0)  # the resend is the channel's, not a retry of the client
    try:
        for i in range(4):
            x = np.full((2, 3), float(i))
            assert np.array_equal(await c.infer("m", "1", x, output="probabilities"), sums(x))
        assert fake.connections == 4
        assert len(fake.requests) == (4 if close == "after_answer" else 7)  # 3 dropped, sent again
        assert c.degraded() == {}
    finally:
        await c.aclose()


async def test_connection_close_is_honoured(triton: tuple[FakeTriton, str]) -> None:
    fake, url = triton
    fake.close = "say_so"
    c = client(url)
    try:
        for i in range(3):
            x = np.full((1, 3), float(i))
            assert np.array_equal(await c.infer("m", "1", x, output="probabilities"), sums(x))
        assert fake.connections == 3 and len(fake.requests) == 3  # not reused, nothing resent
    finally:
        await c.aclose()


async def test_a_chunked_answer_is_decoded(triton: tuple[FakeTriton, str]) -> None:
    fake, url = triton
    fake.chunked = True
    c = client(url, timeout_s=2.0)
    try:
        for n in (3, 40, 1):  # answers of several chunks, the connection kept between them
            x = np.random.default_rng(n).normal(size=(n, 3))
            assert np.allclose(await c.infer("m", "1", x, output="probabilities"), sums(x), atol=1e-5)
        assert fake.connections == 1
    finally:
        await c.aclose()


async def test_an_answer_cut_short_is_unavailable_naming_the_server(triton: tuple[FakeTriton, str]) -> None:
    fake, url = triton
    fake.cut = True
    c = client(url, max_retries=2, timeout_s=2.0)
    try:
        with pytest.raises(TritonUnavailableError, match=f"Triton at {url} is unavailable"):
            await c.infer("m", "1", np.zeros((4, 3)), output="probabilities")
        assert len(fake.requests) == 3  # the call and its two retries, nothing more
        assert c.degraded()[url].startswith("unavailable: ")
    finally:
        await c.aclose()


async def test_a_late_answer_is_a_deadline_error_and_never_answers_the_next_call(
    triton: tuple[FakeTriton, str],
) -> None:
    fake, url = triton
    fake.delay_s = 0.3
    c = client(url, timeout_s=0.1)
    try:
        with pytest.raises(DeadlineExceededError, match=f"Triton at {url} did not answer within 0.1 s"):
            await c.infer("m", "1", np.ones((2, 3)), output="probabilities")
        fake.delay_s = 0.0
        x = np.full((2, 3), 5.0)  # sums 15, where the late answer says 3
        assert np.array_equal(await c.infer("m", "1", x, output="probabilities"), sums(x))
        assert fake.connections == 2
    finally:
        await c.aclose()


@pytest.mark.parametrize(
    ("status", "text", "problem"),
    [
        (
            404,
            "Request for unknown model: 'm' is not found",
            "not_found: HTTP 404: Request for unknown model",
        ),
        (400, "Request for unknown model: 'm' version 7 is not found", "not_found: HTTP 400: Request for"),
        (503, "Server not ready", "unavailable: HTTP 503: Server not ready"),
    ],
)
async def test_an_unknown_model_or_a_server_not_ready_is_retried(
    triton: tuple[FakeTriton, str], status: int, text: str, problem: str
) -> None:
    fake, url = triton
    fake.refuse = (status, text)
    c = client(url, max_retries=2)
    try:
        with pytest.raises(TritonUnavailableError, match=f"refused model 'm' version 7: HTTP {status}: "):
            await c.infer("m", "7", np.zeros((2, 3)), output="probabilities")
        assert len(fake.requests) == 3
        assert c.degraded()[url].startswith(problem)
    finally:
        await c.aclose()


async def test_an_invalid_request_is_not_retried_and_names_model_version_and_triton_s_text(
    triton: tuple[FakeTriton, str],
) -> None:
    fake, url = triton
    fake.refuse = (400, "unexpected shape for input 'features' for model 'm'")
    c = client(url, max_retries=3)
    try:
        with pytest.raises(
            TritonUnavailableError,
            match=r"refused model 'm' version 7: HTTP 400: unexpected shape for input 'features'",
        ):
            await c.infer("m", "7", np.zeros((2, 3)), output="probabilities")
        assert fake.requests == [("POST", "/v2/models/m/versions/7/infer")]
        assert c.degraded()[url].startswith("invalid_argument: HTTP 400: unexpected shape")
    finally:
        await c.aclose()


async def test_a_server_that_is_not_there_is_unreachable() -> None:
    url = f"127.0.0.1:{free_port()}"
    c = client(url, timeout_s=0.2, max_retries=0)
    try:
        with pytest.raises(TritonUnavailableError, match=f"Triton at {url} is unavailable"):
            await c.infer("m", "1", np.zeros((1, 3)), output="probabilities")
        assert not await c.server_ready()
        assert not await c.model_ready("m", "1")
        assert c.degraded()[url].startswith("unreachable: [UNAVAILABLE]")
    finally:
        await c.aclose()


async def test_readiness_is_asked_on_triton_s_paths(triton: tuple[FakeTriton, str]) -> None:
    fake, url = triton
    c = client(url)
    try:
        assert await c.server_ready()
        assert await c.model_ready("m", "1")
        assert not await c.model_ready("m", "2")
        assert c.degraded() == {url: "version 2 of 'm' is not ready"}
        assert fake.requests == [
            ("GET", "/v2/health/ready"),
            ("GET", "/v2/models/m/versions/1/ready"),
            ("GET", "/v2/models/m/versions/2/ready"),
        ]
        assert fake.connections == 1
    finally:
        await c.aclose()


def test_the_transport_follows_the_addresses_set() -> None:
    assert GatewayTritonSettings().transport() == "http"
    assert GatewayTritonSettings(http_url="h:8000").transport() == "http"
    grpc_only = GatewayTritonSettings(grpc_url="h:8001")
    assert grpc_only.transport() == "grpc" and grpc_only.endpoints() == ["h:8001"]
    assert GatewayTritonSettings(grpc_urls=["a:8001", "b:8001"]).endpoints() == ["a:8001", "b:8001"]
    both = GatewayTritonSettings(grpc_url="h:8001", http_url="http://h:8000/")
    assert both.transport() == "http" and both.endpoints() == ["h:8000"]
    explicit = GatewayTritonSettings(protocol="grpc", grpc_url="h:8001", http_url="h:8000")
    assert explicit.transport() == "grpc" and explicit.endpoints() == ["h:8001"]
    dns = GatewayTritonSettings(grpc_dns="t:8001", http_dns="t:8000")
    assert dns.dns() == "t:8000"
    assert dns.model_copy(update={"protocol": "grpc"}).dns() == "t:8001"
    assert GatewayTritonSettings(grpc_dns="t:8001").dns() == "t:8001"


def test_an_invalid_http_address_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"http_urls\n.*'h:port' is not host:port"):
        GatewayTritonSettings(http_urls=["h:port"])
    with pytest.raises(ValidationError, match=r"http_urls\n.*the list is empty"):
        GatewayTritonSettings(http_urls=[])
    with pytest.raises(ValidationError, match=r"http_url\n"):
        GatewayTritonSettings(http_url="h:70000")


def test_the_local_triton_fills_the_address_of_the_transport_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_URL", "HTTP_URLS", "HTTP_DNS", "GRPC_URL", "GRPC_URLS", "GRPC_DNS", "PROTOCOL"):
        monkeypatch.delenv(f"TREESERVE_GATEWAY__TRITON__{name}", raising=False)
    ports = {"http_port": 18000, "grpc_port": 18001}
    t = gateway_triton(load_settings(home=tmp_path, triton=ports))
    assert (t.transport(), t.http_url, t.grpc_url) == ("http", "127.0.0.1:18000", "")
    t = gateway_triton(load_settings(home=tmp_path, triton=ports, gateway={"triton": {"protocol": "grpc"}}))
    assert (t.transport(), t.http_url, t.grpc_url) == ("grpc", "", "127.0.0.1:18001")
    t = gateway_triton(load_settings(home=tmp_path, triton=ports, gateway={"triton": {"http_url": "h:8000"}}))
    assert t.endpoints() == ["h:8000"]  # set explicitly: kept
