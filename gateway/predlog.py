"""Prediction log: every answered row is on disk before its answer leaves the gateway.

Requests put their rows and wait; one writer task appends everything waiting as one record to a
write-ahead segment (``gateway/predlog_wal.py``) and then releases them (group commit). A request
that finds the log idle (nothing waiting, the writer asleep, no append in the last
:data:`BURST_WINDOW_S`) appends its own record at once instead, as the coalescer sends an idle
stage's batch at once: the same write, two event-loop passes fewer. What a row survives once
acknowledged depends on ``gateway.predlog_fsync``:

- ``never``: written to the OS (survives a killed gateway process, not a power loss);
- ``interval`` (default): also fsync-ed every ``predlog_fsync_interval_ms`` (a power loss loses at
  most that interval);
- ``always``: fsync-ed before the answer (survives a power loss).

Segments rotate by rows and age and are converted to the Parquet layout the drift job reads
(``gateway/predlog_recover.py``); segments left by a crash are converted when a gateway starts
and by ``treeserve predlog recover``. When a record cannot be written (disk full, permission) its
requests are answered 503 and ``/readyz`` names the cause: no answer without a record.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from gateway import metrics, predlog_child, predlog_recover, predlog_wal
from gateway.errors import PredictionLogUnavailableError

log = logging.getLogger(__name__)

POOL_BREAKS_BEFORE_THREADS = 3
"""Conversion processes that die in a row, none converting anything, before conversions move to
a thread for good: a child that cannot run at all must not be respawned every second."""

BURST_WINDOW_S = 0.0005
"""A put within this long of the previous append joins the writer's next group commit.

Appending inline saves a lone request the two loop passes of the hand-off to the writer (about
220 µs of a 3.5 ms answer at concurrency 1); under load the hand-off is what makes a burst one
record. Requests coalesced into one batch put in the same loop pass, and concurrent clients put
well within half a millisecond of one another, so the first put of a burst appends inline and
the rest wait for one group commit (at most two records per burst), while requests a whole
answer apart (milliseconds at concurrency 1) each append inline."""


@dataclass(frozen=True)
class PredictionBatch:
    """The rows of one request (one route/version), column-wise."""

    request_id: str
    timestamp: datetime
    model: str
    features: tuple[str, ...]
    versions: list[str]
    routes: list[str]
    entity_keys: list[str | None]
    values: np.ndarray
    """float64 [n, n_features], NaN = missing (before imputation)."""
    scores: np.ndarray
    imputed: list[str]
    fallback: list[str]

    def __len__(self) -> int:
        return len(self.versions)


class PredictionLog(Protocol):
    """Where accepted predictions go."""

    async def put(self, batch: PredictionBatch) -> None:
        """Accept ``batch`` (may wait when the queue is full and the policy is block)."""
        ...

    async def start(self) -> None:
        """Start the writer."""
        ...

    async def aclose(self) -> None:
        """Drain the queue and write every open segment."""
        ...

    async def check(self) -> str:
        """Empty when rows can be written, else why not."""
        ...


class NullPredictionLog:
    """A prediction log that keeps nothing (``gateway.predlog_enabled=false``)."""

    async def put(self, batch: PredictionBatch) -> None:
        """Discard."""

    async def start(self) -> None:
        """Nothing to start."""

    async def aclose(self) -> None:
        """Nothing to flush."""

    async def check(self) -> str:
        """Always writable."""
        return ""


FsyncPolicy = Literal["never", "interval", "always"]


class DurablePredictionLog:
    """Group-committed write-ahead log, rotated into Parquet segments.

    Appends run on the event loop (a write to the OS costs less than a thread hop) except with
    ``fsync=always``, where the writer task waits for a thread; interval fsyncs run in threads
    beside it.

    Retired segments are converted to Parquet in a child process (one per log, so one per uvicorn
    worker, started at the first conversion, spawned rather than forked: the gateway has gRPC
    threads), not in a thread: decoding records and building Arrow tables is Python work that
    holds the GIL against the event loop. At about 9,000 requests/s (64 HTTP clients, one worker,
    2 cores) a 50,000-row segment retires every ~5 s, and with the conversion in a thread about one
    2-second load round in three had a p99 of 45-90 ms instead of 10-12 ms. A conversion that
    fails (OSError) or whose process dies (logged and counted alike) leaves its segment retired
    and on disk: the writer retries a second later, in a new process if need be, and a gateway
    that stops first converts it at its next start. Where no process can be started (no
    ``sem_open`` in a sandbox, say) conversions run in a thread, with one warning saying why.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        queue_size: int,
        overflow: Literal["block", "drop"],
        segment_rows: int,
        segment_s: float,
    ) -> None:
        self._dir = directory
        self._fsync = fsync
        self._fsync_interval_s = fsync_interval_ms / 1000.0
        self._queue_size = queue_size
        self._overflow = overflow
        self._segment_rows = segment_rows
        self._segment_s = segment_s
        self._pending: list[tuple[PredictionBatch, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._io = asyncio.Lock()
        """Held while the open segment is appended to or (re)opened."""
        self._task: asyncio.Task[None] | None = None
        self._segment: predlog_wal.Segment | None = None
        self._segment_opened = 0.0
        self._retired: list[predlog_wal.Segment] = []
        """Closed for appends, not converted yet (oldest first)."""
        self._converter: asyncio.Task[None] | None = None
        self._pool: ProcessPoolExecutor | None = None
        """The conversion process (started by the first conversion)."""
        self._pool_off = ""
        """Why conversions run in a thread instead ("" while a process does them)."""
        self._pool_breaks = 0
        """Conversion processes that died in a row without converting anything."""
        self._syncer: asyncio.Task[None] | None = None
        self._seq = 0
        self._writer_idle = False
        """The writer is waiting for work (nothing of its own in progress)."""
        self._last_append = float("-inf")
        """time.monotonic() when the last append (inline or group commit) ended, failed ones too: a
        slow one (a new segment's fsyncs) must not make the rest of its burst look idle, nor a
        failing one make each request of a burst try the disk on its own."""
        self._dirty_since: float | None = None
        self._problem = ""
        self._closing = False
        metrics.PREDLOG_WRITABLE.set(1)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Convert what a crashed gateway left, then start the writer task."""
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(predlog_recover.recover, self._dir)
        except OSError as e:
            self._set_problem(e)
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="predlog-writer")

    async def aclose(self) -> None:
        """Write what is waiting, then convert every segment."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None
        for task in (self._syncer, self._converter):
            if task is not None:
                await task
        self._retire()
        if self._pool is None:  # no requests left to protect: not worth starting a process for
            self._pool_off = "the prediction log is closing"
        await self._convert_retired()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        if self._retired and self._pool_breaks:  # the process died: a thread converts what it left
            self._pool_off = "the prediction log is closing"
            await self._convert_retired()

    async def flush(self) -> None:
        """Convert everything acknowledged so far to Parquet (waits for the writer)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((_FLUSH, fut))
        self._wake.set()
        await fut

    async def check(self) -> str:
        """Empty when rows can be written, else why not (probes the disk again after a failure)."""
        if self._problem and self._segment is None and not self._closing:
            async with self._io:
                try:
                    if self._segment is None:
                        self._open_segment()
                except OSError as e:
                    self._set_problem(e)
        return self._problem

    # ---- requests -------------------------------------------------------------------------
    async def put(self, batch: PredictionBatch) -> None:
        """Return once ``batch`` is in the write-ahead log; PredictionLogUnavailableError if not."""
        if self._closing or self._task is None:
            raise PredictionLogUnavailableError("the prediction log is not running (gateway stopping)")
        if (
            not self._pending
            and self._writer_idle
            and self._fsync != "always"  # its append waits for a thread: the writer's job
            and not self._io.locked()
            and time.monotonic() - self._last_append > BURST_WINDOW_S
            and not self._task.done()
        ):
            self._append_inline(batch)
            return
        if len(self._pending) >= self._queue_size:
            if self._overflow == "drop":
                metrics.PREDLOG_DROPPED.inc(len(batch))
                raise PredictionLogUnavailableError(
                    f"the prediction log is behind ({len(self._pending)} requests waiting); retry later"
                )
            t0 = time.perf_counter()
            while len(self._pending) >= self._queue_size:
                self._room.clear()
                await self._room.wait()
            metrics.PREDLOG_ENQUEUE_WAIT.observe(time.perf_counter() - t0)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, fut))
        self._wake.set()
        await fut

    # ---- the writer -----------------------------------------------------------------------
    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                # Awaiting the event itself, with a timer to end an idle wait: wait_for() would
                # wrap the wait in a task of its own, two more loop passes before every commit
                # that each waiting request's answer sits through.
                timer = loop.call_later(self._idle_timeout_s(), self._wake.set)
                self._writer_idle = True
                try:
                    await self._wake.wait()
                finally:
                    self._writer_idle = False
                timer.cancel()
                self._wake.clear()
            items, self._pending = self._pending, []
            self._room.set()
            metrics.PREDLOG_QUEUE_DEPTH.set(len(items))
            flushes = [fut for b, fut in items if b is _FLUSH]
            if len(flushes) < len(items):
                await self._commit(items)
            # Also the whole pass when woken with nothing waiting (a timer, an inline append).
            await self._housekeeping(flush=bool(flushes))
            for fut in flushes:
                if not fut.done():
                    fut.set_result(None)

    async def _commit(self, items: list[tuple[PredictionBatch, asyncio.Future[None]]]) -> None:
        """Append every waiting batch as one record, then release (or refuse) their requests."""
        batches = [b for b, _ in items if b is not _FLUSH]
        reason: str | None = None
        try:
            async with self._io:
                if self._fsync == "always":
                    await asyncio.to_thread(self._append, batches)
                else:
                    self._append(batches)
        except Exception as e:  # a bug must not leave requests waiting forever either
            reason = self._append_failed(e)
        finally:
            self._last_append = time.monotonic()
        for b, fut in items:
            if b is _FLUSH or fut.done():
                continue
            if reason is None:
                fut.set_result(None)
            else:
                fut.set_exception(PredictionLogUnavailableError(reason))

    def _append_failed(self, error: Exception) -> str:
        """Record a failed append (in its ``except`` block); what its requests are answered.

        An OSError is the disk's problem (``/readyz`` names it until an append succeeds); anything
        else is a bug, logged with its traceback.
        """
        if isinstance(error, OSError):
            self._set_problem(error)
        else:
            log.exception("prediction log: append failed")
        return self._problem or str(error)

    def _append_inline(self, batch: PredictionBatch) -> None:
        """Append a lone request's record on the spot: the writer's commit of one, without it.

        Runs without yielding, so nothing else holds ``_io`` meanwhile (the caller checked it was
        free). Errors answer as a group commit's do. The writer computed its timer before this
        append, so it is woken when the append gives it something to do sooner: a first row in
        the segment (rotation by age), a first unsynced one (interval fsync), a full segment, a
        retired segment to convert.
        """
        metrics.PREDLOG_QUEUE_DEPTH.set(1)
        seg, dirty, retired = self._segment, self._dirty_since, len(self._retired)
        rows = seg.rows if seg is not None else 0
        try:
            self._append([batch])
        except Exception as e:  # as in _commit: a bug answers 503 too, not a 500 without a record
            reason = self._append_failed(e)
            self._wake.set()  # a failed segment was retired: the writer converts it
            raise PredictionLogUnavailableError(reason) from e
        finally:
            self._last_append = time.monotonic()
        seg = self._segment
        if (
            seg is None
            or rows == 0
            or (dirty is None and self._dirty_since is not None)
            or seg.rows >= self._segment_rows
            or len(self._retired) != retired
        ):
            self._wake.set()

    def _append(self, batches: list[PredictionBatch]) -> None:
        if self._segment is None:
            self._open_segment()
        seg = self._segment
        assert seg is not None
        record = predlog_wal.encode(batches)
        try:
            seg.append(record, sum(len(b) for b in batches))
            if self._fsync == "always":
                seg.sync()
        except OSError:
            self._retire()  # what follows the failed record goes to a fresh segment
            raise
        if self._fsync == "interval" and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._clear_problem()

    async def _housekeeping(self, *, flush: bool) -> None:
        """Interval fsync, rotation, conversion of retired segments."""
        now = time.monotonic()
        seg = self._segment
        due = self._dirty_since is not None and now - self._dirty_since >= self._fsync_interval_s
        if due and seg is not None and (self._syncer is None or self._syncer.done()):
            self._dirty_since = None
            self._syncer = asyncio.get_running_loop().create_task(self._sync(os.dup(seg.fd)))
        if (
            seg is not None
            and seg.rows
            and (flush or seg.rows >= self._segment_rows or now - self._segment_opened >= self._segment_s)
        ):
            self._retire()
        if self._retired and (self._converter is None or self._converter.done()):
            self._converter = asyncio.get_running_loop().create_task(self._convert_retired())
        if flush and self._converter is not None:
            await self._converter

    def _idle_timeout_s(self) -> float:
        now = time.monotonic()
        seg = self._segment
        due = [self._segment_s + self._segment_opened - now] if seg is not None and seg.rows else []
        if self._dirty_since is not None:
            due.append(self._dirty_since + self._fsync_interval_s - now)
        if self._retired:
            due.append(1.0)  # retry a conversion that failed
        return max(0.001, min(due)) if due else 3600.0

    async def _sync(self, fd: int) -> None:
        """fsync through a duplicate descriptor (the segment may rotate meanwhile)."""
        try:
            await asyncio.to_thread(os.fdatasync, fd)
        except OSError as e:
            self._set_problem(e)
        finally:
            os.close(fd)

    def _open_segment(self) -> None:
        self._seq += 1
        self._segment = predlog_wal.Segment.create(self._dir, self._seq, sync_dir=self._fsync != "never")
        self._segment_opened = time.monotonic()
        self._clear_problem()

    def _retire(self) -> None:
        """Stop appending to the open segment (rotation, failed write); it is converted next."""
        if self._segment is not None:
            self._retired.append(self._segment)
            self._segment = None
            self._dirty_since = None

    async def _convert_retired(self) -> None:
        """Convert retired segments to Parquet, oldest first, in the conversion process."""
        while self._retired:
            seg = self._retired[0]
            try:
                await self._convert(seg.path)
            except (OSError, BrokenProcessPool) as e:
                metrics.PREDLOG_WRITE_ERRORS.inc()
                why = f"the conversion process died ({e})" if isinstance(e, BrokenProcessPool) else e
                log.warning("prediction log: segment %s not converted yet: %s", seg.path.name, why)
                return
            seg.close()
            self._retired.pop(0)

    async def _convert(self, path: Path) -> None:
        """Convert one segment in the conversion process (in a thread when there is none)."""
        pool = self._conversion_pool()
        if pool is None:
            await asyncio.to_thread(predlog_recover.convert_segment, path, self._dir)
            return
        loop = asyncio.get_running_loop()
        try:
            try:
                future = loop.run_in_executor(pool, predlog_child.convert, path, self._dir)
            except (OSError, ImportError, NotImplementedError) as e:  # the child did not start
                self._pool = None
                pool.shutdown(wait=False)
                self._use_threads(e)
                await self._convert(path)  # in a thread, now
                return
            rows = await future
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False)
            self._pool_breaks += 1
            if self._pool_breaks >= POOL_BREAKS_BEFORE_THREADS:
                self._use_threads(
                    RuntimeError(f"{self._pool_breaks} conversion processes died without converting anything")
                )
            raise
        self._pool_breaks = 0
        metrics.PREDLOG_ROWS_WRITTEN.inc(rows)
        metrics.PREDLOG_SEGMENTS_WRITTEN.inc()

    def _conversion_pool(self) -> ProcessPoolExecutor | None:
        """The conversion process' executor, created now if need be; None when threads convert."""
        if self._pool is None and not self._pool_off:
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=predlog_child.init,
                )
            except (OSError, ImportError, NotImplementedError) as e:  # no sem_open, no processes
                self._use_threads(e)
        return self._pool

    def _use_threads(self, why: BaseException) -> None:
        self._pool_off = _describe(why)
        log.warning(
            "prediction log: converting segments in a thread of the gateway process (it competes "
            "with requests for the GIL): no conversion process: %s",
            self._pool_off,
        )

    def _set_problem(self, error: BaseException) -> None:
        metrics.PREDLOG_WRITE_ERRORS.inc()
        metrics.PREDLOG_WRITABLE.set(0)
        problem = f"the prediction log cannot be written in {self._dir}: {_describe(error)}"
        if problem != self._problem:
            log.error(problem)
        self._problem = problem

    def _clear_problem(self) -> None:
        if self._problem:
            log.info("prediction log writable again")
            self._problem = ""
            metrics.PREDLOG_WRITABLE.set(1)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f" ({error.filename})" if error.filename else "")
    return str(error) or type(error).__name__


_FLUSH = PredictionBatch(
    request_id="",
    timestamp=datetime.fromtimestamp(0),
    model="",
    features=(),
    versions=[],
    routes=[],
    entity_keys=[],
    values=np.empty((0, 0)),
    scores=np.empty(0),
    imputed=[],
    fallback=[],
)
"""Marker in the pending list: rotate once what precedes it is written."""
