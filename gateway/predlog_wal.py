"""The prediction log's write-ahead segments: an append-only Arrow IPC stream per segment.

    <predlog_dir>/.wal/wal-<utc-time>-<pid>-<seq>.arrows

One schema for every model (the feature values travel as a list per row, the feature names as a
comma-joined string), one record batch per group commit. A writer holds an exclusive ``flock``
on its open segment, so recovery (another worker, ``treeserve predlog recover``) only converts
segments whose writer is gone. A record cut short by a crash (the last one, never acknowledged)
ends the readable prefix and is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from gateway.predlog import PredictionBatch

WAL_DIR = ".wal"
SUFFIX = ".arrows"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA: pa.Schema | None = None


def schema() -> pa.Schema:
    """The write-ahead record schema (the same for every model)."""
    global _SCHEMA
    if _SCHEMA is None:
        import pyarrow as pa

        _SCHEMA = pa.schema(
            [
                ("request_id", pa.string()),
                ("timestamp_us", pa.int64()),
                ("model", pa.string()),
                ("features", pa.string()),
                ("model_version", pa.string()),
                ("route", pa.string()),
                ("entity_key", pa.string()),
                ("values", pa.list_(pa.float64())),
                ("score", pa.float64()),
                ("imputed", pa.string()),
                ("fallback", pa.string()),
            ]
        )
    return _SCHEMA


def wal_dir(predlog_dir: Path) -> Path:
    """Where the write-ahead segments of ``predlog_dir`` live."""
    return predlog_dir / WAL_DIR


def segments(predlog_dir: Path) -> list[Path]:
    """Every write-ahead segment on disk, oldest first."""
    folder = wal_dir(predlog_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("wal-") and p.name.endswith(SUFFIX))


def encode(batches: Sequence[PredictionBatch]) -> bytes:
    """One IPC record-batch message holding the rows of ``batches``."""
    import pyarrow as pa

    request_id: list[str] = []
    timestamp_us: list[int] = []
    model: list[str] = []
    features: list[str] = []
    versions: list[str] = []
    routes: list[str] = []
    entity_keys: list[str | None] = []
    offsets = [0]
    values: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    imputed: list[str] = []
    fallback: list[str] = []
    for b in batches:
        n = len(b)
        t = b.timestamp if b.timestamp.tzinfo is not None else b.timestamp.replace(tzinfo=UTC)
        request_id += [b.request_id] * n
        timestamp_us += [(t - _EPOCH) // timedelta(microseconds=1)] * n
        model += [b.model] * n
        features += [",".join(b.features)] * n
        versions += b.versions
        routes += b.routes
        entity_keys += b.entity_keys
        width = len(b.features)
        start = offsets[-1]
        offsets += range(start + width, start + width * n + 1, width) if width else [start] * n
        values.append(np.asarray(b.values, dtype=np.float64).reshape(-1))
        scores.append(np.asarray(b.scores, dtype=np.float64).reshape(-1))
        imputed += b.imputed
        fallback += b.fallback
    flat = np.concatenate(values) if values else np.empty(0)
    arrays = [
        pa.array(request_id, pa.string()),
        pa.array(timestamp_us, pa.int64()),
        pa.array(model, pa.string()),
        pa.array(features, pa.string()),
        pa.array(versions, pa.string()),
        pa.array(routes, pa.string()),
        pa.array(entity_keys, pa.string()),
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.float64())),
        pa.array(np.concatenate(scores) if scores else np.empty(0), pa.float64()),
        pa.array(imputed, pa.string()),
        pa.array(fallback, pa.string()),
    ]
    return bytes(pa.record_batch(arrays, schema=schema()).serialize())


def read_valid(path: Path) -> pa.Table:
    """The complete records of a segment; a record cut short (and whatever follows) is dropped."""
    import pyarrow as pa

    data = path.read_bytes()
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
    except (pa.ArrowInvalid, OSError):
        return schema().empty_table()  # not even the schema made it to disk
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            break
    return pa.Table.from_batches(batches, schema=schema())


class Segment:
    """One open write-ahead segment, owned (and ``flock``-ed) by this process."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        """Bytes of complete records (the file is cut back to this after a failed append)."""
        self.rows = 0
        self.opened_at = datetime.now(UTC)

    @classmethod
    def create(cls, predlog_dir: Path, seq: int, *, sync_dir: bool) -> Segment:
        """A new segment holding only the schema; raises OSError when it cannot be written."""
        folder = wal_dir(predlog_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"wal-{stamp}-{os.getpid()}-{seq:06d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = bytes(schema().serialize())
            _write_all(fd, header)
            if sync_dir:
                os.fdatasync(fd)
                fsync_dir(folder)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(path, fd, len(header))

    def append(self, record: bytes, rows: int) -> None:
        """Write one record; on failure cut the file back so no torn record stays in the middle."""
        try:
            _write_all(self.fd, record)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(record)
        self.rows += rows

    def sync(self) -> None:
        """Make the appended records survive a power loss."""
        os.fdatasync(self.fd)

    def close(self) -> None:
        """Close the file (and release the lock)."""
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def orphans(predlog_dir: Path) -> Iterator[tuple[Path, int]]:
    """Segments no live writer holds, each with a locked descriptor the caller must close."""
    for path in segments(predlog_dir):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # converted and removed by its writer between listing and locking: nothing to do
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            continue
        yield path, fd
