"""The prediction log's write-ahead segments: append-only files of checksummed records.

    <predlog_dir>/.wal/wal-<utc-time>-<pid>-<seq>.wal

A segment starts with :data:`MAGIC`; each group commit appends one record, written with one
``write``: a frame header (payload length, CRC-32 of the payload) and the payload, the commit's
rows column by column as plain Python values (strings, integers, the float64 feature values
and scores as bytes) pickled with protocol 5 and read back by an unpickler that refuses every
class, so a record holds data only. Encoding a record costs a few microseconds whatever its
size (building Arrow arrays per commit cost ~100 µs, paid on the event loop by every commit).
Recovery turns the records into one Arrow table with :func:`schema` (the same for every
model: the feature values travel as a list per row, the feature names as a comma-joined
string). A writer holds an exclusive ``flock`` on its open segment, so recovery (another
worker, ``treeserve predlog recover``) only converts segments whose writer is gone. A record
cut short by a crash (the last one, never acknowledged) or failing its checksum ends the
readable prefix and is dropped. Segments of the earlier layout (``.arrows``, an Arrow IPC
stream) are still read.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import operator
import os
import pickle
import struct
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from gateway.predlog import PredictionBatch

WAL_DIR = ".wal"
SUFFIX = ".wal"
LEGACY_SUFFIX = ".arrows"
"""Segments written as an Arrow IPC stream (read, never written)."""
MAGIC = b"TSWAL1\n\x00"
_FRAME = struct.Struct("<II")
"""Record header: payload length, CRC-32 of the payload."""
_MAX_RECORD = 1 << 30
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_F8 = np.dtype("<f8")
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
    return sorted(
        p for p in folder.iterdir() if p.name.startswith("wal-") and p.name.endswith((SUFFIX, LEGACY_SUFFIX))
    )


def encode(batches: Sequence[PredictionBatch]) -> bytes:
    """One record (frame header + payload) holding the rows of ``batches``, column by column."""
    request_id: list[str] = []
    timestamp_us: list[int] = []
    model: list[str] = []
    features: list[str] = []
    width: list[int] = []
    n_rows: list[int] = []
    versions: list[str] = []
    routes: list[str] = []
    entity_keys: list[str | None] = []
    values: list[bytes] = []
    scores: list[bytes] = []
    imputed: list[str] = []
    fallback: list[str] = []
    for b in batches:
        t = b.timestamp if b.timestamp.tzinfo is not None else b.timestamp.replace(tzinfo=UTC)
        request_id.append(b.request_id)
        timestamp_us.append((t - _EPOCH) // _US)
        model.append(b.model)
        features.append(",".join(b.features))
        width.append(len(b.features))
        n_rows.append(len(b.versions))
        versions += b.versions
        routes += b.routes
        entity_keys += b.entity_keys
        values.append(np.ascontiguousarray(b.values, dtype=_F8).tobytes())
        scores.append(np.ascontiguousarray(b.scores, dtype=_F8).tobytes())
        imputed += b.imputed
        fallback += b.fallback
    record = (
        request_id,
        timestamp_us,
        model,
        features,
        width,
        n_rows,
        versions,
        routes,
        entity_keys,
        b"".join(values),
        b"".join(scores),
        imputed,
        fallback,
    )
    payload = pickle.dumps(record, protocol=5)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class _DataOnly(pickle.Unpickler):
    """Plain values only: a record naming any class or function is not one of ours."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} in a write-ahead record")


def _decode(payload: bytes) -> tuple[Any, ...]:
    """A record's columns, checked for shape (a record that does not add up is not ours)."""
    record = _DataOnly(io.BytesIO(payload)).load()
    if type(record) is not tuple or len(record) != 13:
        raise ValueError("not a write-ahead record")
    rid, ts, model, feats, width, n_rows, versions, routes, keys, values, scores, imputed, fallback = record
    k, n = len(rid), len(versions)
    if not (
        type(rid) is type(ts) is type(model) is type(feats) is type(width) is type(n_rows) is list
        and type(versions) is type(routes) is type(keys) is type(imputed) is type(fallback) is list
        and type(values) is type(scores) is bytes
        and len(ts) == len(model) == len(feats) == len(width) == len(n_rows) == k
        and len(routes) == len(keys) == len(imputed) == len(fallback) == n == sum(n_rows)
        and len(scores) == n * _F8.itemsize
        and len(values) == sum(map(operator.mul, width, n_rows)) * _F8.itemsize
    ):
        raise ValueError("a write-ahead record whose columns do not add up")
    return record


def read_valid(path: Path) -> pa.Table:
    """The complete records of a segment; a record cut short (and whatever follows) is dropped."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return _read_arrow_stream(data) if path.name.endswith(LEGACY_SUFFIX) else schema().empty_table()
    columns = _Columns()
    pos = len(MAGIC)
    while pos + _FRAME.size <= len(data):
        size, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size : pos + _FRAME.size + size]
        if size > _MAX_RECORD or len(payload) < size or zlib.crc32(payload) != crc:
            break
        try:
            columns.add(_decode(payload))
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError, IndexError, KeyError):
            break
        pos += _FRAME.size + size
    return columns.table()


class _Columns:
    """Decoded records gathered column by column (no per-record object stays alive)."""

    def __init__(self) -> None:
        self.lists: list[list[Any]] = [[] for _ in range(13)]
        self.values: list[bytes] = []
        self.scores: list[bytes] = []

    def add(self, record: tuple[Any, ...]) -> None:
        c = self.lists
        c[0] += record[0]
        c[1] += record[1]
        c[2] += record[2]
        c[3] += record[3]
        c[4] += record[4]
        c[5] += record[5]
        c[6] += record[6]
        c[7] += record[7]
        c[8] += record[8]
        self.values.append(record[9])
        self.scores.append(record[10])
        c[11] += record[11]
        c[12] += record[12]

    def table(self) -> pa.Table:
        """The Arrow table (:func:`schema`): per-request columns repeated for each of their rows."""
        import pyarrow as pa

        c = self.lists
        n_rows = np.asarray(c[5], dtype=np.int64)
        row_of = pa.array(np.repeat(np.arange(len(n_rows)), n_rows))
        row_width = np.repeat(np.asarray(c[4], dtype=np.int64), n_rows)
        offsets = np.zeros(len(row_width) + 1, dtype=np.int32)
        np.cumsum(row_width, out=offsets[1:])
        values = np.frombuffer(b"".join(self.values), dtype=_F8)
        scores = np.frombuffer(b"".join(self.scores), dtype=_F8)

        def per_row(i: int) -> pa.Array:
            return pa.array(c[i], pa.string()).take(row_of)

        arrays = [
            per_row(0),
            pa.array(np.repeat(np.asarray(c[1], dtype=np.int64), n_rows), pa.int64()),
            per_row(2),
            per_row(3),
            pa.array(c[6], pa.string()),
            pa.array(c[7], pa.string()),
            pa.array(c[8], pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float64())),
            pa.array(scores, pa.float64()),
            pa.array(c[11], pa.string()),
            pa.array(c[12], pa.string()),
        ]
        return pa.Table.from_batches([pa.record_batch(arrays, schema=schema())], schema=schema())


def _read_arrow_stream(data: bytes) -> pa.Table:
    """A segment of the earlier layout: an Arrow IPC stream, one record batch per commit."""
    import pyarrow as pa

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
            header = MAGIC
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
