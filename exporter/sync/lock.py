"""One sync at a time: an exclusive file lock around every pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from exporter.sync.errors import SyncBusyError


@contextmanager
def sync_lock(path: Path, *, timeout_s: float = 0.0) -> Iterator[None]:
    """Hold the sync lock; wait up to ``timeout_s`` (-1: forever), else raise SyncBusyError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout as e:
        raise SyncBusyError(f"another sync is running (lock {path} is held); try again later") from e
    try:
        yield
    finally:
        lock.release()
