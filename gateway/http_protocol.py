"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers (``http.response.start``) and its body
(``http.response.body``) with two ``transport.write`` calls: two ``send`` system calls and two
TCP segments for a response of a few hundred bytes. ``CombinedWrites`` holds the head and writes
it together with the body, as soon as the body comes (a write nothing follows goes out at the end
of the loop pass); closing the connection or handing it to another protocol sends what is held
first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CombinedWrites:
    """A transport whose writes of one loop pass reach the real transport as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Hold a first write (a response's head); write it with the next one (its body) at once.

        A write that nothing follows (a head without body, the last chunk of a stream) goes out
        at the end of the loop pass.
        """
        self._chunks.append(data)
        if len(self._chunks) > 1:
            self.flush()
        else:
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        """Gather every line (one write with the rest of the pass)."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what was gathered (nothing when the connection is already closing)."""
        chunks, self._chunks = self._chunks, []
        if chunks and not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        """Send what is gathered, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is gathered, then half-close."""
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Send what is gathered before another protocol (a websocket upgrade) takes over."""
        self.flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` (uvicorn ``http="httptools"``) writing each response once."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Hand uvicorn the write-combining transport."""
        super().connection_made(CombinedWrites(transport, self.loop))  # type: ignore[arg-type]
