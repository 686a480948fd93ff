"""One Triton server over HTTP/1.1: KServe v2 ``infer`` with the binary-tensor extension.

Why not gRPC: measured against the same Triton from the gateway's event loop
(docs/operations/performance.md, "The Triton call"), a call over a kept-alive HTTP/1.1
connection answered in ~0.8 ms at concurrency 1 where the leanest ``grpc.aio`` call took
~1.2 ms, and cost the caller a quarter of the CPU: grpc.aio runs its completion queue on a thread
of its own and hands every answer to the event loop across the GIL; an asyncio ``Protocol`` reads
the answer in the loop that waits for it.

A request is bytes, as on the gRPC path: the request line, the headers and the JSON inference
header depend only on (model, version, output, batch shape) and are built once per shape by
:class:`HttpInferRequestTemplate`; each call appends the float32 rows. The answer's JSON header
says where each binary output lies in the body; the wanted output is read with
``np.frombuffer``.

Connections: kept alive and reused, one request at a time each (no pipelining), up to
``_MAX_IDLE`` idle per server. A reused connection can have been closed by the server meanwhile
(Triton restarted, an idle timeout): when one fails before any byte of its answer arrived, the call
is sent once more on a fresh connection (inference is a pure function: sending it twice is safe).
A call past its deadline, or cancelled, closes its connection: an answer may still be on its way.

The default transport (``gateway.triton.protocol``), on one condition: model control must not
run over Triton's HTTP API under traffic. While a model loads through it, Triton's HTTP endpoint
answers no request at all, on any connection (1.4 s per load of the demo model here, with 8 or 16
HTTP threads alike), while its gRPC endpoint keeps answering within milliseconds; so the sync and
the admin client load over gRPC (``sync.triton_url=grpc://host:port``, the local default).

Every failure is a :class:`~gateway.errors.TritonCallError` with the gRPC status name the
gRPC channel would have reported (UNAVAILABLE, NOT_FOUND, DEADLINE_EXCEEDED, INVALID_ARGUMENT,
INTERNAL), so ``gateway.triton`` maps both transports the same way.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from gateway.errors import TritonCallError
from treeserve import contract

_MAX_IDLE = 32
"""Idle kept-alive connections per server (more concurrent calls open more, closed after use)."""
_MAX_HEAD = 64 * 1024
"""An answer's status line and headers are never this long: more is not Triton speaking HTTP."""

_HTTP_STATUS_CODE = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "UNAVAILABLE",
    499: "CANCELLED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""Triton's HTTP status -> the gRPC status name its gRPC endpoint gives for the same error."""
_NOT_FOUND_HINTS = ("unknown model", "is not found", "not ready", "is not available")
"""Triton answers 400 for a model or version it does not serve (its gRPC endpoint: NOT_FOUND)."""


def _error_text(body: bytes) -> str:
    """Triton's ``{"error": "..."}`` body, else the body as text (short)."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except ValueError:
        pass
    return bytes(body[:200]).decode("utf-8", "replace").strip() or "(empty body)"


def call_error(status: int, body: bytes) -> TritonCallError:
    """The error for a non-200 answer, coded as Triton's gRPC endpoint would code it."""
    details = _error_text(body)
    code = _HTTP_STATUS_CODE.get(status, "UNAVAILABLE" if status >= 500 else "INVALID_ARGUMENT")
    if code == "INVALID_ARGUMENT" and any(h in details.lower() for h in _NOT_FOUND_HINTS):
        code = "NOT_FOUND"
    return TritonCallError(code, f"HTTP {status}: {details}")


def _model_path(model: str, version: str) -> str:
    """``/v2/models/{model}/versions/{version}``, each quoted."""
    return f"/v2/models/{quote(model, safe='')}/versions/{quote(version, safe='')}"


class HttpInferRequestTemplate:
    """The request head for one (model, version, output) per batch shape: only the rows vary."""

    def __init__(self, model: str, version: str, output: str) -> None:
        self._line = f"POST {_model_path(model, version)}/infer HTTP/1.1\r\n".encode()
        self._output = output
        self._heads: dict[tuple[int, ...], bytes] = {}

    def _head(self, shape: tuple[int, ...], nbytes: int) -> bytes:
        head = self._heads.get(shape)
        if head is None:
            header = json.dumps(
                {
                    "inputs": [
                        {
                            "name": contract.INPUT_TENSOR,
                            "shape": list(shape),
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": nbytes},
                        }
                    ],
                    "outputs": [{"name": self._output, "parameters": {"binary_data": True}}],
                },
                separators=(",", ":"),
            ).encode()
            # One entry per batch size seen: at most max_batch_size of them.
            head = self._heads[shape] = (
                b"Content-Type: application/octet-stream\r\n"
                b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                % (len(header), len(header) + nbytes)
            ) + header
        return head

    def request(self, x: np.ndarray) -> tuple[bytes, bytes, bytes]:
        """(request line, headers + JSON header, rows) for ``x`` (float32 [n, n_features])."""
        x = np.ascontiguousarray(x)
        return self._line, self._head(x.shape, x.nbytes), x.tobytes()


def output_array(headers: dict[str, str], body: bytes, output: str) -> np.ndarray | None:
    """``output`` of an infer answer as an array of its shape (None when it is absent or BYTES)."""
    size = headers.get("inference-header-content-length")
    header_len = int(size) if size is not None else len(body)
    doc = json.loads(body[:header_len])
    offset = header_len
    for tensor in doc.get("outputs", ()):
        params = tensor.get("parameters") or {}
        binary = params.get("binary_data_size")
        if tensor.get("name") == output:
            dtype = triton_to_np_dtype(tensor.get("datatype", ""))
            if dtype in (None, np.object_):
                return None
            shape = tuple(int(d) for d in tensor.get("shape", ()))
            if binary is None:  # the answer carried the values as JSON
                return np.asarray(tensor.get("data", ()), dtype=dtype).reshape(shape)
            if offset + int(binary) > len(body):
                raise TritonCallError("INTERNAL", f"answer truncated: output {output!r} runs past the body")
            return np.frombuffer(
                body, dtype=dtype, count=int(binary) // np.dtype(dtype).itemsize, offset=offset
            ).reshape(shape)
        if binary is not None:
            offset += int(binary)
    return None


class _Answer:
    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None
        self._head: tuple[int, dict[str, str], int] | None = None  # status, headers, body start
        self.received = False
        """Did any byte of the current answer arrive (a failure after that is not a stale connection)?"""

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        self._buf += data
        if self._waiter is not None and not self._waiter.done():
            try:
                answer = self._parse(eof=False)
            except TritonCallError as e:
                self._fail(e)
                return
            if answer is not None:
                self._waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        self._lost(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # -- use --
    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[_Answer]:
        self._buf.clear()
        self._head = None
        self.received = False
        self._waiter = loop.create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            try:  # an answer without Content-Length ends with the connection
                answer = self._parse(eof=True)
            except TritonCallError as e:
                self._fail(e)
                return
            if answer is not None:
                waiter.set_result(answer)
            else:
                why = f": {exc}" if exc else ""
                self._fail(ConnectionResetError(f"connection closed before the answer was complete{why}"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def _parse(self, *, eof: bool) -> _Answer | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise TritonCallError("INTERNAL", "answer is not HTTP: no end of headers")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise TritonCallError("INTERNAL", f"answer is not HTTP/1.1: {lines[0][:80]!r}")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self._head = (int(parts[1]), headers, end + 4)
        status, headers, start = self._head
        keep_alive = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise TritonCallError("INTERNAL", "answer has an invalid Content-Length") from None
            if len(buf) - start < length:
                return None
            if len(buf) - start > length:
                keep_alive = False  # bytes nobody asked for: do not reuse
            return _Answer(status, headers, bytes(buf[start : start + length]), keep_alive)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunks(start)
            return None if body is None else _Answer(status, headers, body, keep_alive)
        if status in (204, 304) or 100 <= status < 200:
            return _Answer(status, headers, b"", keep_alive)
        return _Answer(status, headers, bytes(buf[start:]), False) if eof else None

    def _chunks(self, pos: int) -> bytes | None:
        buf, out = self._buf, bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise TritonCallError("INTERNAL", "answer has an invalid chunk size") from None
            if size == 0:  # the last chunk; the answer ends with the empty line after the trailers
                return bytes(out) if buf.find(b"\r\n\r\n", eol) >= 0 else None
            if len(buf) < eol + 2 + size + 2:
                return None
            out += buf[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2


class HttpTritonChannel:
    """``TritonChannel`` over kept-alive HTTP/1.1 connections to one Triton server."""

    def __init__(self, url: str) -> None:
        self.url = url
        host, _, port = url.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._host_line = f"Host: {url}\r\n".encode()
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self._host, self._port)
        except OSError as e:
            raise TritonCallError("UNAVAILABLE", f"cannot connect to {self.url}: {e.strerror or e}") from e
        return conn

    async def _roundtrip(self, data: bytes, *, timeout_s: float) -> _Answer:
        """Send ``data``, return the answer; a stale kept-alive connection is replaced once."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    reused = bool(self._idle)
                    conn = self._idle.pop() if reused else await self._connect()
                    if conn.closed:
                        if reused:
                            continue
                        raise TritonCallError("UNAVAILABLE", f"{self.url} closed the connection at once")
                    try:
                        answer = await conn.send(data, loop)
                    except (ConnectionError, OSError) as e:
                        conn.close()
                        if reused and not conn.received:
                            continue  # closed by the server while idle: send again on a fresh one
                        raise TritonCallError("UNAVAILABLE", f"{self.url} closed the connection: {e}") from e
                    except BaseException:
                        conn.close()  # deadline or cancellation: the answer may still come
                        raise
                    if answer.keep_alive and not conn.closed and len(self._idle) < _MAX_IDLE:
                        self._idle.append(conn)
                    else:
                        conn.close()
                    return answer
        except TimeoutError:
            raise TritonCallError(
                "DEADLINE_EXCEEDED", f"no answer from {self.url} within {timeout_s:g} s"
            ) from None

    async def infer(
        self, request: tuple[bytes, bytes, bytes], *, output: str, timeout_s: float
    ) -> np.ndarray | None:
        """``infer`` on prebuilt request parts; ``output`` as an array (None when absent)."""
        line, head, rows = request
        answer = await self._roundtrip(b"".join((line, self._host_line, head, rows)), timeout_s=timeout_s)
        if answer.status != 200:
            raise call_error(answer.status, answer.body)
        try:
            return output_array(answer.headers, answer.body, output)
        except (ValueError, TypeError, KeyError) as e:
            raise TritonCallError("INTERNAL", f"unreadable answer from {self.url}: {e}") from e

    async def _get(self, path: str, *, timeout_s: float) -> _Answer:
        return await self._roundtrip(
            f"GET {path} HTTP/1.1\r\n".encode() + self._host_line + b"\r\n", timeout_s=timeout_s
        )

    async def model_ready(self, model: str, version: str, *, timeout_s: float) -> bool:
        """``GET /v2/models/{model}/versions/{version}/ready``: 200 ready, else not."""
        return (await self._get(f"{_model_path(model, version)}/ready", timeout_s=timeout_s)).status == 200

    async def server_ready(self, *, timeout_s: float) -> bool:
        """``GET /v2/health/ready``."""
        return (await self._get("/v2/health/ready", timeout_s=timeout_s)).status == 200

    async def close(self) -> None:
        """Close the idle connections (calls in flight close theirs when they end)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
