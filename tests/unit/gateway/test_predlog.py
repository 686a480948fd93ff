"""Prediction log: write-ahead durability, exactly-once recovery, refusal when it cannot write."""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway import metrics, predlog, predlog_recover, predlog_wal
from gateway.errors import PredictionLogUnavailableError
from gateway.predlog import DurablePredictionLog, PredictionBatch
from gateway.predlog_recover import recover

pytestmark = pytest.mark.anyio
FEATURES = ("a", "b")
CONTRACT_COLUMNS = [
    "request_id", "timestamp", "model", "model_version", "route", "entity_key", "a", "b",
    "score", "imputed", "fallback",
]  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def batch(i: int, n: int = 2, model: str = "m") -> PredictionBatch:
    x = np.arange(n * 2, dtype=float).reshape(n, 2)
    x[0, 1] = np.nan
    return PredictionBatch(
        request_id=f"r{i}",
        timestamp=datetime.now(UTC),
        model=model,
        features=FEATURES,
        versions=["3"] * n,
        routes=["champion"] * n,
        entity_keys=[f"e{i}-{k}" for k in range(n)],
        values=x,
        scores=np.full(n, 0.5),
        imputed=["b"] + [""] * (n - 1),
        fallback=[""] * n,
    )


def make_log(directory: Path, **kw: Any) -> DurablePredictionLog:
    args: dict[str, Any] = {
        "fsync": "interval",
        "fsync_interval_ms": 50,
        "queue_size": 100,
        "overflow": "block",
        "segment_rows": 1000,
        "segment_s": 60.0,
    }
    return DurablePredictionLog(directory, **{**args, **kw})


def parquet_rows(directory: Path, model: str = "m") -> pa.Table:
    files = sorted((directory / model).glob("date=*/part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


async def test_rotates_and_writes_every_row(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_rows=5)
    await log.start()
    await asyncio.gather(*(log.put(batch(i)) for i in range(10)))
    await log.flush()
    await log.put(batch(99, n=1))
    await log.aclose()
    table = parquet_rows(tmp_path)
    assert table.num_rows == 21 and len(list((tmp_path / "m").glob("date=*/*.parquet"))) >= 2
    assert table.column_names == CONTRACT_COLUMNS
    assert table.schema.field("timestamp").type.tz == "UTC"
    assert table.column("b").null_count == 11  # NaN before imputation is stored as null
    assert sorted(set(table.column("request_id").to_pylist())) == sorted({f"r{i}" for i in [*range(10), 99]})
    assert not list(tmp_path.rglob("*.tmp")) and not predlog_wal.segments(tmp_path)


@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
async def test_an_acknowledged_row_is_on_disk_before_put_returns(tmp_path: Path, fsync: str) -> None:
    log = make_log(tmp_path, fsync=fsync)
    await log.start()
    await asyncio.gather(*(log.put(batch(i, n=1, model=m)) for i, m in enumerate(["m", "m", "other"])))
    # What a killed process leaves: the write-ahead segment only, and recovery reads it all.
    (segment,) = predlog_wal.segments(tmp_path)
    assert predlog_wal.read_valid(segment).num_rows == 3
    await log.aclose()
    assert parquet_rows(tmp_path).num_rows == 2 and parquet_rows(tmp_path, "other").num_rows == 1


def write_crashed_segment(directory: Path, n_records: int, *, torn: bool) -> Path:
    """A segment as a killed writer leaves it: complete records, maybe a torn last one."""
    seg = predlog_wal.Segment.create(directory, 1, sync_dir=False)
    for i in range(n_records):
        seg.append(predlog_wal.encode([batch(i)]), 2)
    if torn:
        seg.append(predlog_wal.encode([batch(999)])[:37], 0)
    seg.close()
    return seg.path


async def test_recovery_drops_a_torn_record_and_converts_exactly_once(tmp_path: Path) -> None:
    path = write_crashed_segment(tmp_path, 4, torn=True)
    done = recover(tmp_path)
    assert (done.segments, done.rows) == (1, 8) and not path.exists()
    table = parquet_rows(tmp_path)
    assert table.num_rows == 8 and table.column_names == CONTRACT_COLUMNS
    assert "r999" not in table.column("request_id").to_pylist()
    assert recover(tmp_path).rows == 0 and parquet_rows(tmp_path).num_rows == 8


async def test_recovery_cut_short_converts_again_without_duplicates(tmp_path: Path) -> None:
    path = write_crashed_segment(tmp_path, 3, torn=False)
    kept = path.read_bytes()
    recover(tmp_path)
    path.write_bytes(kept)  # crashed after the Parquet rename, before the segment was removed
    recover(tmp_path)
    ids = parquet_rows(tmp_path).column("request_id").to_pylist()
    assert sorted(ids) == sorted([f"r{i}" for i in range(3)] * 2)  # 2 rows per request, once each


async def test_recovery_leaves_a_live_writers_segment_alone(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()
    await log.put(batch(1))
    assert recover(tmp_path).segments == 0  # e.g. another worker starting, or the CLI
    await log.put(batch(2))
    await log.aclose()
    assert parquet_rows(tmp_path).num_rows == 4


async def test_a_new_log_recovers_what_a_crash_left(tmp_path: Path) -> None:
    write_crashed_segment(tmp_path, 2, torn=True)
    log = make_log(tmp_path)
    await log.start()
    assert parquet_rows(tmp_path).num_rows == 4
    await log.aclose()


async def test_unwritable_directory_refuses_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = make_log(blocker / "predlog")
    await log.start()
    with pytest.raises(PredictionLogUnavailableError, match="cannot be written") as e:
        await log.put(batch(1))
    assert e.value.status_code == 503
    assert "Not a directory" in await log.check()
    assert metrics.PREDLOG_WRITABLE._value.get() == 0  # type: ignore[attr-defined]
    blocker.unlink()  # the operator fixes it: the log heals without a restart
    assert await log.check() == ""
    await log.put(batch(2))
    await log.aclose()
    assert parquet_rows(blocker / "predlog").column("request_id").to_pylist() == ["r2", "r2"]
    assert metrics.PREDLOG_WRITABLE._value.get() == 1  # type: ignore[attr-defined]


async def test_disk_full_mid_run_answers_nothing_without_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(tmp_path)
    await log.start()
    await log.put(batch(1))
    real_write = predlog_wal.os.write

    def full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:10])  # a partial record reaches the file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predlog_wal.os, "write", full)
    with pytest.raises(PredictionLogUnavailableError, match="No space left"):
        await log.put(batch(2))
    assert "No space left" in await log.check()
    monkeypatch.setattr(predlog_wal.os, "write", real_write)
    await log.put(batch(3))
    await log.aclose()
    assert sorted(set(parquet_rows(tmp_path).column("request_id").to_pylist())) == ["r1", "r3"]


async def test_drop_policy_refuses_instead_of_answering_unlogged(tmp_path: Path) -> None:
    log = make_log(tmp_path, queue_size=2, overflow="drop")
    await log.start()
    results = await asyncio.gather(*(log.put(batch(i, n=3)) for i in range(6)), return_exceptions=True)
    # the first of the burst finds the log idle and appends at once; 2 wait; 3 are refused
    refused = [i for i, r in enumerate(results) if isinstance(r, PredictionLogUnavailableError)]
    assert refused == [3, 4, 5]
    await log.aclose()
    assert (
        sorted(parquet_rows(tmp_path).column("request_id").to_pylist())
        == ["r0"] * 3 + ["r1"] * 3 + ["r2"] * 3
    )


async def test_a_record_failing_its_checksum_ends_the_readable_prefix(tmp_path: Path) -> None:
    path = write_crashed_segment(tmp_path, 3, torn=False)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit in the last record (e.g. a torn sector)
    path.write_bytes(bytes(data))
    assert predlog_wal.read_valid(path).column("request_id").to_pylist() == ["r0", "r0", "r1", "r1"]


async def test_a_record_naming_a_class_is_not_read(tmp_path: Path) -> None:
    import pickle
    import struct
    import zlib

    path = write_crashed_segment(tmp_path, 1, torn=False)
    payload = pickle.dumps([np.zeros(2)])  # would call numpy when loaded
    with path.open("ab") as f:
        f.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    assert predlog_wal.read_valid(path).column("request_id").to_pylist() == ["r0", "r0"]


async def test_segments_of_the_earlier_arrow_layout_are_still_recovered(tmp_path: Path) -> None:
    new = write_crashed_segment(tmp_path, 2, torn=False)
    table = predlog_wal.read_valid(new)
    new.unlink()
    legacy = new.with_name(new.name.removesuffix(predlog_wal.SUFFIX) + predlog_wal.LEGACY_SUFFIX)
    with pa.OSFile(str(legacy), "wb") as sink, pa.ipc.new_stream(sink, predlog_wal.schema()) as writer:
        writer.write_table(table)
    done = recover(tmp_path)
    assert (done.segments, done.rows) == (1, 4) and not legacy.exists()
    assert sorted(parquet_rows(tmp_path).column("request_id").to_pylist()) == ["r0", "r0", "r1", "r1"]


async def test_a_record_whose_columns_do_not_add_up_is_not_read(tmp_path: Path) -> None:
    import pickle
    import struct
    import zlib

    path = write_crashed_segment(tmp_path, 1, torn=False)
    # one row of two features, but the bytes of only one feature value
    record = (
        ["r7"],
        [0],
        ["m"],
        ["a,b"],
        [2],
        [1],
        ["3"],
        ["champion"],
        ["e"],
        b"\0" * 8,
        b"\0" * 8,
        [""],
        [""],
    )
    payload = pickle.dumps(record, protocol=5)
    with path.open("ab") as f:
        f.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    assert predlog_wal.read_valid(path).column("request_id").to_pylist() == ["r0", "r0"]


async def idle(log: DurablePredictionLog) -> None:
    """Let the writer reach its wait and the last append leave the burst window (a lone request)."""
    await asyncio.sleep(predlog.BURST_WINDOW_S + 0.002)


async def converted(directory: Path, *, rows: int, timeout_s: float = 30.0) -> bool:
    """Wait until ``rows`` rows are in Parquet and no segment is left (the conversion process may
    have to start first)."""
    deadline = time.monotonic() + timeout_s
    while parquet_rows(directory).num_rows != rows or predlog_wal.segments(directory):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def put_without_yielding(log: DurablePredictionLog, b: PredictionBatch) -> None:
    """Run ``put`` to its end in one step: it never hands the request to the event loop."""
    coro = log.put(b)
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("put waited for the event loop (the writer) instead of appending at once")


@pytest.mark.parametrize("fsync", ["never", "interval"])
async def test_a_lone_put_is_on_disk_without_waiting_for_the_writer(tmp_path: Path, fsync: str) -> None:
    log = make_log(tmp_path, fsync=fsync)
    await log.start()
    for i in range(3):
        await idle(log)
        put_without_yielding(log, batch(i))
        (segment,) = predlog_wal.segments(tmp_path)  # what a kill -9 right now would leave
        assert predlog_wal.read_valid(segment).num_rows == 2 * (i + 1)
    await log.aclose()
    assert sorted(parquet_rows(tmp_path).column("request_id").to_pylist()) == [
        "r0",
        "r0",
        "r1",
        "r1",
        "r2",
        "r2",
    ]


async def test_a_burst_of_puts_is_still_group_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[int] = []
    real_encode = predlog_wal.encode

    def counting(batches: Any) -> bytes:
        records.append(len(batches))
        return real_encode(batches)

    monkeypatch.setattr(predlog_wal, "encode", counting)
    log = make_log(tmp_path)
    await log.start()
    for burst in range(2):
        await idle(log)
        records.clear()
        ids = range(burst * 50, burst * 50 + 50)
        results = await asyncio.gather(*(log.put(batch(i, n=1)) for i in ids), return_exceptions=True)
        assert results == [None] * 50
        assert len(records) <= 3 and sum(records) == 50  # typically 1 inline + 49 in one commit
    (segment,) = predlog_wal.segments(tmp_path)
    assert sorted(predlog_wal.read_valid(segment).column("request_id").to_pylist()) == sorted(
        f"r{i}" for i in range(100)
    )
    await log.aclose()
    assert parquet_rows(tmp_path).num_rows == 100


async def test_an_inline_append_that_fails_refuses_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(tmp_path)
    await log.start()
    await idle(log)
    put_without_yielding(log, batch(1))
    real_write = predlog_wal.os.write

    def full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:10])  # a partial record reaches the file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predlog_wal.os, "write", full)
    await idle(log)
    with pytest.raises(PredictionLogUnavailableError, match=r"cannot be written.*No space left") as e:
        put_without_yielding(log, batch(2))  # refused on the spot, not after a writer pass
    assert e.value.status_code == 503
    assert "No space left" in await log.check()
    assert metrics.PREDLOG_WRITABLE._value.get() == 0  # type: ignore[attr-defined]
    monkeypatch.setattr(predlog_wal.os, "write", real_write)
    assert await log.check() == ""
    await idle(log)
    put_without_yielding(log, batch(3))
    await log.aclose()
    assert sorted(parquet_rows(tmp_path).column("request_id").to_pylist()) == ["r1", "r1", "r3", "r3"]


async def test_inline_appends_still_get_interval_fsync_and_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_sync = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    # interval fsync: the writer was asleep for an hour when the only append came
    log = make_log(tmp_path / "sync", fsync_interval_ms=20)
    await log.start()
    await idle(log)
    put_without_yielding(log, batch(1))
    opened = len(synced)  # a new segment is synced once when created
    await asyncio.sleep(0.2)
    assert len(synced) > opened
    await log.aclose()

    # rotation by age, then by rows: converted to Parquet without another put or a flush
    log = make_log(tmp_path / "age", segment_s=0.05, fsync="never")
    await log.start()
    await idle(log)
    put_without_yielding(log, batch(1))
    assert await converted(tmp_path / "age", rows=2)
    await log.aclose()

    log = make_log(tmp_path / "rows", segment_rows=4, fsync="never")  # no fsync timer to lean on
    await log.start()
    for i in range(2):
        await idle(log)
        put_without_yielding(log, batch(i))
    assert await converted(tmp_path / "rows", rows=4)
    await log.aclose()


# ---- the conversion process ---------------------------------------------------------------
def counted(metric: Any) -> float:
    return float(metric._value.get())


def new_children(before: set[int]) -> list[int]:
    return [p.pid for p in multiprocessing.active_children() if p.pid is not None and p.pid not in before]


async def test_segments_are_converted_outside_the_gateway_process_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_here(path: Path, predlog_dir: Path) -> int:
        raise AssertionError("a segment was converted in the gateway process")

    monkeypatch.setattr(predlog_recover, "write_segment", not_here)
    rows, segments = counted(metrics.PREDLOG_ROWS_WRITTEN), counted(metrics.PREDLOG_SEGMENTS_WRITTEN)
    log = make_log(tmp_path)
    await log.start()
    await log.put(batch(1, n=3))
    await log.flush()
    assert parquet_rows(tmp_path).num_rows == 3 and not predlog_wal.segments(tmp_path)
    # the child's metrics die with it: the gateway counts its conversions
    assert counted(metrics.PREDLOG_ROWS_WRITTEN) == rows + 3
    assert counted(metrics.PREDLOG_SEGMENTS_WRITTEN) == segments + 1
    await log.aclose()


async def test_a_conversion_process_killed_mid_conversion_loses_nothing(tmp_path: Path) -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    log = make_log(tmp_path)
    await log.start()
    await log.put(batch(1))
    await log.flush()  # starts the conversion process
    (child,) = new_children(before)
    os.kill(child, signal.SIGSTOP)  # holds the next conversion mid-way
    errors = counted(metrics.PREDLOG_WRITE_ERRORS)
    await log.put(batch(2))
    flushing = asyncio.ensure_future(log.flush())
    await asyncio.sleep(0.3)
    assert not flushing.done()
    os.kill(child, signal.SIGKILL)
    await asyncio.wait_for(flushing, 30)
    (segment,) = predlog_wal.segments(tmp_path)
    assert predlog_wal.read_valid(segment).column("request_id").to_pylist() == ["r2", "r2"]
    assert counted(metrics.PREDLOG_WRITE_ERRORS) == errors + 1
    # the writer retries on its own, in a new process
    assert await converted(tmp_path, rows=4)
    assert sorted(parquet_rows(tmp_path).column("request_id").to_pylist()) == ["r1", "r1", "r2", "r2"]
    assert len(new_children(before | {child})) == 1
    await log.aclose()
    assert not new_children(before | {child})  # aclose shuts the conversion process down


async def test_aclose_converts_what_a_dead_conversion_process_left(tmp_path: Path) -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    log = make_log(tmp_path)
    await log.start()
    await log.put(batch(1))
    await log.flush()
    (child,) = new_children(before)
    os.kill(child, signal.SIGKILL)
    await log.put(batch(2))
    await log.aclose()
    assert sorted(parquet_rows(tmp_path).column("request_id").to_pylist()) == ["r1", "r1", "r2", "r2"]
    assert not predlog_wal.segments(tmp_path)


async def test_without_a_conversion_process_segments_are_converted_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_processes(**kw: Any) -> None:
        raise ImportError("This platform lacks a functioning sem_open implementation")

    monkeypatch.setattr(predlog, "ProcessPoolExecutor", no_processes)
    log = make_log(tmp_path)
    await log.start()
    for i in range(2):
        await log.put(batch(i))
        await log.flush()
    await log.aclose()
    assert parquet_rows(tmp_path).num_rows == 4 and not predlog_wal.segments(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "conversion process" in r.getMessage()]
    assert len(warnings) == 1 and "sem_open" in warnings[0]


async def test_the_conversion_process_leaves_the_workers_metrics_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With several workers this folder holds each worker's metrics, gauges aggregated by min: a
    # file of the child's would hold predlog_writable and ready at 0.
    prom = tmp_path / "prom"
    prom.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom))
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", str(prom))
    log = make_log(tmp_path / "log")
    await log.start()
    await log.put(batch(1))
    await log.flush()
    await log.aclose()
    assert parquet_rows(tmp_path / "log").num_rows == 2
    assert list(prom.iterdir()) == []


KILLED_GATEWAY = """
import asyncio, multiprocessing, os, sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gateway.predlog import DurablePredictionLog, PredictionBatch


async def main() -> None:
    log = DurablePredictionLog(
        Path(sys.argv[1]), fsync="never", fsync_interval_ms=50, queue_size=10, overflow="block",
        segment_rows=1000, segment_s=60.0,
    )
    await log.start()
    await log.put(PredictionBatch(
        request_id="r1", timestamp=datetime.now(UTC), model="m", features=("a",), versions=["3"],
        routes=["champion"], entity_keys=["e"], values=np.zeros((1, 1)), scores=np.zeros(1),
        imputed=[""], fallback=[""],
    ))
    await log.flush()
    print(*(p.pid for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), 9)


if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_conversion_process_does_not_outlive_a_killed_gateway(tmp_path: Path) -> None:
    script = tmp_path / "gateway_main.py"
    script.write_text(KILLED_GATEWAY)
    gateway = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "log")], stdout=subprocess.PIPE, text=True
    )
    assert gateway.stdout is not None
    line = gateway.stdout.readline()  # not to EOF: an orphaned child would hold the pipe open
    assert gateway.wait(timeout=120) == -signal.SIGKILL
    (child,) = map(int, line.split())
    assert parquet_rows(tmp_path / "log").num_rows == 1  # the child did convert
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), "the conversion process outlived its gateway"
