"""Write-ahead segments -> the Parquet layout the drift job reads, exactly once.

    <predlog_dir>/<model>/date=YYYY-MM-DD/part-<utc-time>-<pid>-<seq>-<k>.parquet

A segment's file names derive from the segment's own name (``k`` numbers its (model, date,
features) groups in a fixed order), each file is written to a hidden name, made durable and
renamed into place, and the segment is removed last. A conversion cut short converts again to
the same names and skips those already in place: every row lands once. Columns: request_id,
timestamp (timestamp[us, UTC]), model, model_version, route, entity_key, one float64 column per
feature (as resolved, before imputation; null = missing), score, imputed, fallback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateway import metrics, predlog_wal

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What a recovery pass converted."""

    segments: int
    rows: int


def convert_segment(path: Path, predlog_dir: Path) -> int:
    """Convert one write-ahead segment (its writer gone or closing) and remove it; rows converted."""
    written = write_segment(path, predlog_dir)
    metrics.PREDLOG_ROWS_WRITTEN.inc(written)
    metrics.PREDLOG_SEGMENTS_WRITTEN.inc()
    return written


def write_segment(path: Path, predlog_dir: Path) -> int:
    """:func:`convert_segment` without counting it (the gateway's conversion process runs this and
    the gateway counts: that process' metrics are its own and die with it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = predlog_wal.read_valid(path)
    stem = (
        path.name.removeprefix("wal-")
        .removesuffix(predlog_wal.SUFFIX)
        .removesuffix(predlog_wal.LEGACY_SUFFIX)
    )
    written = 0
    if table.num_rows:
        days = pc.strftime(
            pa.compute.cast(table.column("timestamp_us"), pa.timestamp("us", tz="UTC")), format="%Y-%m-%d"
        )
        keys = pa.table({"model": table.column("model"), "date": days, "features": table.column("features")})
        groups = (
            keys.group_by(["model", "date", "features"])
            .aggregate([])
            .sort_by([("model", "ascending"), ("date", "ascending"), ("features", "ascending")])
        )
        for k, (model, day, features) in enumerate(
            zip(*(groups.column(c).to_pylist() for c in ("model", "date", "features")), strict=True)
        ):
            mask = pc.and_(
                pc.and_(pc.equal(keys.column("model"), model), pc.equal(keys.column("date"), day)),
                pc.equal(keys.column("features"), features),
            )
            rows = table.filter(mask)
            folder = predlog_dir / model / f"date={day}"
            target = folder / f"part-{stem}-{k:02d}.parquet"
            if not target.exists():
                _write_parquet(_contract_table(rows, model, features), target)
            written += rows.num_rows
    path.unlink(missing_ok=True)
    predlog_wal.fsync_dir(path.parent)
    return written


def _contract_table(rows: pa.Table, model: str, features_joined: str) -> pa.Table:
    import pyarrow as pa

    features = features_joined.split(",") if features_joined else []
    n = rows.num_rows
    flat = rows.column("values").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    values = flat.reshape(n, len(features)) if features else np.empty((n, 0))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "request_id": rows.column("request_id"),
        "timestamp": rows.column("timestamp_us").cast(pa.timestamp("us", tz="UTC")),
        "model": pa.array([model] * n, pa.string()),
        "model_version": rows.column("model_version"),
        "route": rows.column("route"),
        "entity_key": rows.column("entity_key"),
    }
    for j, name in enumerate(features):
        col = np.ascontiguousarray(values[:, j], dtype=np.float64)
        columns[name] = pa.array(col, pa.float64(), mask=np.isnan(col))
    columns["score"] = rows.column("score")
    columns["imputed"] = rows.column("imputed")
    columns["fallback"] = rows.column("fallback")
    return pa.table(columns)


def _write_parquet(table: pa.Table, target: Path) -> None:
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    predlog_wal.fsync_dir(target.parent)


def recover(predlog_dir: Path) -> Recovery:
    """Convert every segment no live gateway holds (left by a crash or a failed write)."""
    n_segments = n_rows = 0
    for path, fd in predlog_wal.orphans(predlog_dir):
        try:
            n_rows += convert_segment(path, predlog_dir)
            n_segments += 1
        finally:
            os.close(fd)
    if n_segments:
        log.info("prediction log: recovered %d rows from %d write-ahead segments", n_rows, n_segments)
    return Recovery(segments=n_segments, rows=n_rows)
