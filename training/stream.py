"""``treeserve data stream``: replay the demo world's session activity against the push endpoint.

Events are drawn (seeded) from the world's final activity burst (``customer_activity.parquet``:
the sessions of the world's last hours) and sent as if they happened now: ``event_timestamp`` is
the send time, so the gateway serves them as fresh real-time features. Bounded by ``count`` and
``duration_s`` (the first reached stops it) and sent only to a loopback gateway: it is a demo and
test driver, not a producer for a shared system.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from training.data import ACTIVITY_FILE, STATS_FILE, final_burst
from training.errors import DataNotFoundError
from training.settings import TrainingConfig
from treeserve.errors import ConfigError
from treeserve.features.push import rows_from_records
from treeserve.features.push_client import PushClient

log = logging.getLogger(__name__)

MAX_COUNT = 1_000_000
MAX_DURATION_S = 24 * 3600.0


@dataclass(frozen=True)
class StreamResult:
    """What a replay sent."""

    events: int
    batches: int
    elapsed_s: float
    customers: int


def require_loopback(url: str) -> None:
    """``ConfigError`` unless ``url`` names a loopback host (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"data stream sends only to a loopback gateway (127.0.0.1, ::1, localhost), not {host!r}"
    )


def simulated_events(settings: TrainingConfig, *, seed: int) -> Callable[[int], list[dict[str, Any]]]:
    """A function giving ``n`` events of the world's activity (seeded draws), stamped with now."""
    data = settings.path(settings.data.data_dir)
    path = data / ACTIVITY_FILE
    if not path.is_file():
        raise DataNotFoundError(
            f"data directory {path.parent} has no {ACTIVITY_FILE} (run `treeserve data generate`)"
        )
    activity = pd.read_parquet(path)
    if activity.empty:
        raise DataNotFoundError(f"{path} holds no events")
    # the generated final burst (pushed rows come later and may hold nulls)
    end = pd.read_parquet(data / STATS_FILE, columns=["event_timestamp"])["event_timestamp"].max()
    latest = final_burst(activity, end)
    if latest.empty:
        raise DataNotFoundError(f"{path} holds no events of the world's last hours")
    records = rows_from_records(latest.drop(columns="event_timestamp").to_dict("records"))
    rng = np.random.default_rng(seed)

    def draw(n: int) -> list[dict[str, Any]]:
        now = datetime.now(UTC).isoformat()
        out = []
        for i in rng.integers(0, len(records), n):
            rec = records[int(i)]
            out.append(
                {
                    "customer_id": str(rec["customer_id"]),
                    "event_timestamp": now,
                    "session_count_last_1h": rec["session_count_last_1h"],
                    "cart_value_usd": rec["cart_value_usd"],
                    "last_page_viewed": rec["last_page_viewed"],
                }
            )
        return out

    return draw


def stream(
    settings: TrainingConfig,
    *,
    url: str,
    rate: float,
    count: int,
    duration_s: float,
    batch_size: int,
    seed: int,
    api_key: str | None = None,
    push_source: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Send ``rate`` events a second (in batches of up to ``batch_size``) until ``count`` or ``duration_s``."""
    if not 0 < rate <= 100_000:
        raise ConfigError("--rate must be between 0 and 100000 events per second")
    if not 0 < count <= MAX_COUNT:
        raise ConfigError(f"--count must be between 1 and {MAX_COUNT}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ConfigError(f"--duration must be between 0 and {MAX_DURATION_S:g} seconds")
    require_loopback(url)
    draw = simulated_events(settings, seed=seed)
    client = PushClient(url, api_key=api_key)
    started = time.monotonic()
    sent = batches = 0
    customers: set[str] = set()
    try:
        while sent < count:
            elapsed = time.monotonic() - started
            if elapsed >= duration_s:
                break
            due = min(count, int(rate * elapsed) + 1) - sent  # events whose send time has come
            if due <= 0:
                time.sleep(min(0.05, (sent + 1) / rate - elapsed))
                continue
            rows = draw(min(due, batch_size))
            client.push(rows, push_source=push_source)
            sent += len(rows)
            batches += 1
            customers.update(r["customer_id"] for r in rows)
            if progress is not None:
                progress(sent)
    finally:
        client.close()
    elapsed = time.monotonic() - started
    log.info("data stream sent events=%d batches=%d elapsed_s=%.1f url=%s", sent, batches, elapsed, url)
    return StreamResult(events=sent, batches=batches, elapsed_s=elapsed, customers=len(customers))
