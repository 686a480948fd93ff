"""Prediction log: rotation, contract columns, overflow policies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gateway import metrics
from gateway.predlog import ParquetPredictionLog, PredictionBatch

pytestmark = pytest.mark.anyio
FEATURES = ("a", "b")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def batch(i: int, n: int = 2) -> PredictionBatch:
    x = np.arange(n * 2, dtype=float).reshape(n, 2)
    x[0, 1] = np.nan
    return PredictionBatch(
        request_id=f"r{i}",
        timestamp=datetime.now(UTC),
        model="m",
        features=FEATURES,
        versions=["3"] * n,
        routes=["champion"] * n,
        entity_keys=[f"e{i}-{k}" for k in range(n)],
        values=x,
        scores=np.full(n, 0.5),
        imputed=["b"] + [""] * (n - 1),
        fallback=[""] * n,
    )


async def test_rotates_and_writes_every_row(tmp_path: Path) -> None:
    log = ParquetPredictionLog(tmp_path, queue_size=100, overflow="block", segment_rows=5, segment_s=60)
    await log.start()
    for i in range(10):
        await log.put(batch(i))
    await log.flush()
    await log.put(batch(99, n=1))
    await log.aclose()
    files = sorted((tmp_path / "m").glob("date=*/part-*.parquet"))
    import pyarrow as pa

    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == 21 and len(files) >= 4
    assert table.schema.field("timestamp").type.tz == "UTC"
    assert table.column_names == [
        "request_id", "timestamp", "model", "model_version", "route", "entity_key", "a", "b",
        "score", "imputed", "fallback",
    ]  # fmt: skip
    assert table.column("b").null_count == 11  # NaN before imputation is stored as null
    assert not list(tmp_path.rglob(".*.tmp"))


async def test_drop_policy_counts_drops(tmp_path: Path) -> None:
    before = metrics.PREDLOG_DROPPED._value.get()  # type: ignore[attr-defined]
    log = ParquetPredictionLog(tmp_path, queue_size=2, overflow="drop", segment_rows=100, segment_s=60)
    for i in range(5):  # writer not started: the queue fills up
        await log.put(batch(i, n=3))
    assert metrics.PREDLOG_DROPPED._value.get() - before == 9  # type: ignore[attr-defined]
    await log.aclose()
    assert sum(pq.read_table(f).num_rows for f in (tmp_path / "m").glob("date=*/*.parquet")) == 6
