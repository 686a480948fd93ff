"""The HTTP protocol hands each response to the socket in one write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.http_protocol import CombinedWrites

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


async def test_head_and_body_of_a_response_are_one_write() -> None:
    real = RecordingTransport()
    t = CombinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.writes == []  # the head waits for its body
    t.write(b"{}")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]  # at once, not a pass later
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_a_write_nothing_follows_goes_out_at_the_end_of_the_pass() -> None:
    real = RecordingTransport()
    t = CombinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert t.get_extra_info("sockname") == ("127.0.0.1", 8080)  # the rest is the real transport's


async def test_close_sends_what_is_gathered_first() -> None:
    real = RecordingTransport()
    t = CombinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.writelines([b"a", b"b"])
    t.close()
    await asyncio.sleep(0)
    assert real.events == ["write", "close"] and real.writes == [b"ab"]


async def test_nothing_is_written_to_a_closing_connection() -> None:
    real = RecordingTransport()
    t = CombinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"late")
    real.closing = True
    await asyncio.sleep(0)
    assert real.writes == []
