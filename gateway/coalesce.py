"""Coalescing of concurrent requests into one call: the gateway's own dynamic batching.

Every submission that arrives while a batch is being formed joins it (until ``max_batch`` rows
are pending); the batch is sent as one call and each submitter gets back exactly its own slice of
the result, or the call's error. Submissions are chunks (a list or an array of rows); ``merge``
joins the chunks of a batch. When a batch is sent:

- nothing in flight: on the next event-loop pass (whatever arrives in this pass still joins), so
  a lone request never waits for company;
- ``max_inflight`` batches in flight: when one of them returns ("natural batching", as Triton's
  own dynamic batcher): under load the batches grow with the downstream latency instead of the
  event loop paying a whole online read and Triton call per request;
- fewer in flight (``max_inflight`` 0 = no limit, or above 1): after ``window_us``.

Transports whose requests arrive one at a time (the grpc.aio server accepts one call per event
loop pass) coalesce through the in-flight rule: requests that trickle in while a batch runs form
the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from gateway import metrics

C = TypeVar("C")  # a chunk of rows (list, array)


def merge_lists(chunks: list[Any]) -> list[Any]:
    """Default merge: concatenate lists."""
    if len(chunks) == 1:
        return list(chunks[0])
    out: list[Any] = []
    for c in chunks:
        out.extend(c)
    return out


class Coalescer(Generic[C]):
    """Merge concurrent ``submit(chunk)`` calls into one ``call(merged)``."""

    def __init__(
        self,
        call: Callable[[Any], Awaitable[Any]],
        *,
        window_us: int,
        max_batch: int,
        stage: str,
        merge: Callable[[list[Any]], Any] = merge_lists,
        max_inflight: int = 0,
    ) -> None:
        self._call = call
        self._merge = merge
        self._window_s = window_us / 1e6
        self._max_batch = max_batch
        self._max_inflight = max_inflight  # 0: no limit
        self._inflight = 0
        self._held = False  # the window closed while max_inflight batches were running
        self._chunks: list[Any] = []
        self._pending = 0
        self._waiters: list[tuple[int, int, asyncio.Future[Any], float]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_size = metrics.COALESCED_BATCH_SIZE.labels(stage)
        self._batch_requests = metrics.COALESCED_REQUESTS.labels(stage)
        self._wait = metrics.COALESCE_WAIT.labels(stage)

    async def submit(self, chunk: Any) -> Any:
        """Add ``chunk`` (a list or array of rows) to the current batch; its results, same order."""
        n = len(chunk)
        if n >= self._max_batch:
            # A big request is a batch on its own: no point in waiting for company.
            self._batch_size.observe(n)
            self._batch_requests.observe(1)
            return await self._call(self._merge([chunk]))
        if self._pending + n > self._max_batch:
            self._flush()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        start = self._pending
        self._chunks.append(chunk)
        self._pending += n
        self._waiters.append((start, start + n, fut, time.perf_counter()))
        if self._pending >= self._max_batch:
            self._flush()
        elif self._timer is None and not self._held:
            if self._inflight == 0 or self._window_s <= 0:
                # Idle: send on the next loop pass (what arrives in this pass still joins).
                self._timer = loop.call_soon(self._window_closed)
            elif self._max_inflight and self._inflight >= self._max_inflight:
                self._held = True  # natural batching: sent when the batch in flight returns
            else:
                self._timer = loop.call_later(self._window_s, self._window_closed)
        return await fut

    def _window_closed(self) -> None:
        self._timer = None
        if self._max_inflight and self._inflight >= self._max_inflight:
            self._held = True  # sent when a running batch finishes (_batch_done)
            return
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = False
        if not self._chunks:
            return
        chunks, waiters, n = self._chunks, self._waiters, self._pending
        self._chunks, self._waiters, self._pending = [], [], 0
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(chunks, waiters, n))
        self._tasks.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._held:
            self._flush()

    async def _run(
        self, chunks: list[Any], waiters: list[tuple[int, int, asyncio.Future[Any], float]], n: int
    ) -> None:
        now = time.perf_counter()
        self._batch_size.observe(n)
        self._batch_requests.observe(len(waiters))
        for _, _, _, t0 in waiters:
            self._wait.observe(now - t0)
        try:
            results = await self._call(self._merge(chunks))
        except BaseException as e:  # handed to every waiter of this batch
            for _, _, fut, _ in waiters:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for lo, hi, fut, _ in waiters:
            if not fut.done():
                fut.set_result(results[lo:hi])

    async def aclose(self) -> None:
        """Send what is pending and wait for the batches in flight."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
