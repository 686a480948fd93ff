"""Prediction log: a bounded async queue drained into rotating Parquet segments.

    <predlog_dir>/<model>/date=YYYY-MM-DD/part-<utc-time>-<pid>-<seq>.parquet

Columns: request_id, timestamp (timestamp[us, UTC]), model, model_version, route, entity_key,
one float64 column per feature (value as resolved, BEFORE imputation; null = missing), score,
imputed (comma-joined names), fallback (reason or empty). A segment is written to a hidden
temporary name and renamed into place, so readers never see half a file. On close the queue is
drained and every open segment is written: N accepted predictions -> N rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from gateway import metrics

log = logging.getLogger(__name__)


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


class NullPredictionLog:
    """A prediction log that keeps nothing (``gateway.predlog_enabled=false``)."""

    async def put(self, batch: PredictionBatch) -> None:
        """Discard."""

    async def start(self) -> None:
        """Nothing to start."""

    async def aclose(self) -> None:
        """Nothing to flush."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Segment:
    """An open segment's rows, column-wise.

    Columns grow by a few list operations per request on the writer task, so rotation only
    hands flat lists to Arrow: building them per row in the writer thread held the GIL for
    ~0.5 s per 50k-row segment and stalled the event loop (the gateway's p99).
    """

    def __init__(self) -> None:
        self.rows = 0
        self.opened = time.monotonic()
        self.request_id: list[str] = []
        self.timestamp_us: list[int] = []
        self.model_version: list[str] = []
        self.route: list[str] = []
        self.entity_key: list[str | None] = []
        self.values: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.imputed: list[str] = []
        self.fallback: list[str] = []

    def add(self, batch: PredictionBatch) -> None:
        n = len(batch)
        t = batch.timestamp if batch.timestamp.tzinfo is not None else batch.timestamp.replace(tzinfo=UTC)
        ts = (t - _EPOCH) // timedelta(microseconds=1)  # naive times are UTC, as Arrow reads them
        if n == 1:
            self.request_id.append(batch.request_id)
            self.timestamp_us.append(ts)
        else:
            self.request_id.extend([batch.request_id] * n)
            self.timestamp_us.extend([ts] * n)
        self.model_version.extend(batch.versions)
        self.route.extend(batch.routes)
        self.entity_key.extend(batch.entity_keys)
        self.values.append(batch.values)
        self.scores.append(batch.scores)
        self.imputed.extend(batch.imputed)
        self.fallback.extend(batch.fallback)
        self.rows += n


class ParquetPredictionLog:
    """Bounded queue -> one writer task -> Parquet segments rotated by rows and age."""

    def __init__(
        self,
        directory: Path,
        *,
        queue_size: int,
        overflow: Literal["block", "drop"],
        segment_rows: int,
        segment_s: float,
    ) -> None:
        self._dir = directory
        self._overflow = overflow
        self._segment_rows = segment_rows
        self._segment_s = segment_s
        self._queue: asyncio.Queue[PredictionBatch | asyncio.Event | None] = asyncio.Queue(maxsize=queue_size)
        self._open: dict[tuple[str, str, tuple[str, ...]], _Segment] = {}
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self._closing = False

    async def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="predlog-writer")

    async def put(self, batch: PredictionBatch) -> None:
        """Enqueue one request's rows; block or drop when the queue is full."""
        try:
            self._queue.put_nowait(batch)
            return
        except asyncio.QueueFull:
            if self._overflow == "drop" or self._closing:
                metrics.PREDLOG_DROPPED.inc(len(batch))
                return
        t0 = time.perf_counter()
        await self._queue.put(batch)
        metrics.PREDLOG_ENQUEUE_WAIT.observe(time.perf_counter() - t0)

    async def _writer(self) -> None:
        while True:
            timeout = self._next_rotation_s()
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=timeout)
            except TimeoutError:
                await self._rotate(force=False)
                continue
            metrics.PREDLOG_QUEUE_DEPTH.set(self._queue.qsize())
            if item is None:
                # Drain what is left, then write everything.
                while not self._queue.empty():
                    rest = self._queue.get_nowait()
                    if isinstance(rest, PredictionBatch):
                        self._add(rest)
                    elif isinstance(rest, asyncio.Event):
                        rest.set()
                await self._rotate(force=True)
                return
            if isinstance(item, asyncio.Event):
                await self._rotate(force=True)
                item.set()
                continue
            self._add(item)
            # Take what else is waiting without yielding per item.
            while not self._queue.empty():
                rest = self._queue.get_nowait()
                if rest is None or isinstance(rest, asyncio.Event):
                    await self._rotate(force=True)
                    if rest is None:
                        return
                    rest.set()
                    continue
                if self._add(rest):
                    await self._rotate(force=False)
            await self._rotate(force=False)

    def _next_rotation_s(self) -> float:
        if not self._open:
            return self._segment_s
        oldest = min(s.opened for s in self._open.values())
        return max(0.01, self._segment_s - (time.monotonic() - oldest))

    def _add(self, batch: PredictionBatch) -> bool:
        """Buffer ``batch``; True when its segment is full."""
        key = (batch.model, batch.timestamp.strftime("%Y-%m-%d"), batch.features)
        seg = self._open.get(key)
        if seg is None:
            seg = self._open[key] = _Segment()
        seg.add(batch)
        return seg.rows >= self._segment_rows

    async def _rotate(self, *, force: bool) -> None:
        now = time.monotonic()
        due = [
            k
            for k, s in self._open.items()
            if force or s.rows >= self._segment_rows or now - s.opened >= self._segment_s
        ]
        for key in due:
            seg = self._open.pop(key)
            try:
                await asyncio.to_thread(self._write, key, seg)
            except Exception:
                metrics.PREDLOG_WRITE_ERRORS.inc()
                log.exception("prediction log: segment of %d rows could not be written", seg.rows)

    def _write(self, key: tuple[str, str, tuple[str, ...]], seg: _Segment) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        model, date, features = key
        n_rows = seg.rows
        columns: dict[str, pa.Array] = {}
        columns["request_id"] = pa.array(seg.request_id, pa.string())
        columns["timestamp"] = pa.array(seg.timestamp_us, pa.timestamp("us", tz="UTC"))
        columns["model"] = pa.array([model] * n_rows, pa.string())
        columns["model_version"] = pa.array(seg.model_version, pa.string())
        columns["route"] = pa.array(seg.route, pa.string())
        columns["entity_key"] = pa.array(seg.entity_key, pa.string())
        values = (
            np.concatenate(seg.values, axis=0).reshape(n_rows, len(features))
            if seg.values
            else np.empty((0, len(features)))
        )
        for j, name in enumerate(features):
            col = values[:, j].astype(np.float64)
            columns[name] = pa.array(col, pa.float64(), mask=np.isnan(col))
        scores = np.concatenate(seg.scores) if seg.scores else np.empty(0)
        columns["score"] = pa.array(scores.astype(np.float64), pa.float64())
        columns["imputed"] = pa.array(seg.imputed, pa.string())
        columns["fallback"] = pa.array(seg.fallback, pa.string())
        table = pa.table(columns)
        folder = self._dir / model / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
        metrics.PREDLOG_ROWS_WRITTEN.inc(n_rows)
        metrics.PREDLOG_SEGMENTS_WRITTEN.inc()
        return folder / name

    async def flush(self) -> None:
        """Write everything accepted so far (waits for the writer)."""
        if self._task is None:
            return
        done = asyncio.Event()
        await self._queue.put(done)
        await done.wait()

    async def aclose(self) -> None:
        """Drain and write everything, then stop the writer."""
        self._closing = True
        if self._task is None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, PredictionBatch):
                    self._add(item)
            await self._rotate(force=True)
            return
        await self._queue.put(None)
        await self._task
        self._task = None
