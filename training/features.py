"""Apply the Feast definitions and materialize the recent window into the online store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from training.data import STATS_FILE
from training.errors import DataNotFoundError, FeastNotAppliedError
from training.settings import TrainingConfig
from treeserve.features.store import load_definitions, open_feature_store
from treeserve.quiet import captured_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply_features`` registered."""

    project: str
    registry_uri: str
    objects: list[str]


@dataclass(frozen=True)
class MaterializeResult:
    """What ``materialize`` loaded into the online store."""

    project: str
    online_store: str
    start: datetime
    end: datetime
    elapsed_s: float


def data_dir(settings: TrainingConfig) -> Path:
    """The configured data folder; ``DataNotFoundError`` when it holds no generated data."""
    path = settings.path(settings.data.data_dir)
    if not (path / STATS_FILE).is_file():
        raise DataNotFoundError(
            f"data directory {path} has no {STATS_FILE} (run `treeserve data generate` first)"
        )
    return path


def apply_features(settings: TrainingConfig) -> ApplyResult:
    """Register the ``feature_repo/`` definitions (data paths from settings) in the Feast registry."""
    store = open_feature_store(settings)
    objects = load_definitions(settings)
    store.apply(objects)
    names = [f"{type(o).__name__}:{getattr(o, 'name', '?')}" for o in objects]
    log.info("feast apply project=%s objects=%s", settings.feast.project, names)
    return ApplyResult(
        project=settings.feast.project, registry_uri=settings.feast_registry_uri, objects=names
    )


def latest_snapshot_time(settings: TrainingConfig) -> datetime:
    """The newest ``event_timestamp`` in the customer stats source."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(data_dir(settings) / STATS_FILE, columns=["event_timestamp"])
    latest = pc.max(table["event_timestamp"]).as_py()
    if latest is None:
        raise DataNotFoundError(f"{data_dir(settings) / STATS_FILE} is empty")
    return latest  # type: ignore[no-any-return]


def materialize(settings: TrainingConfig, *, days: int | None = None) -> MaterializeResult:
    """Load the latest snapshot per customer from the last ``days`` days into the online store.

    Serving only needs the newest row per entity, and every active customer has a daily
    snapshot, so the recent window is enough and keeps this fast.
    """
    started = time.perf_counter()
    end = latest_snapshot_time(settings) + timedelta(seconds=1)
    start = end - timedelta(days=days or settings.training.materialize_days)
    store = open_feature_store(settings)
    if not store.list_feature_views():
        raise FeastNotAppliedError(
            f"Feast project {settings.feast.project!r} has no feature views (run `treeserve features apply` first)"
        )
    with captured_output(log):  # Feast prints coloured progress of its own
        store.materialize(start_date=start, end_date=end)
    elapsed = time.perf_counter() - started
    log.info(
        "feast materialize project=%s store=%s start=%s end=%s elapsed_s=%.1f",
        settings.feast.project,
        settings.feast.online_store,
        start.isoformat(),
        end.isoformat(),
        elapsed,
    )
    return MaterializeResult(
        project=settings.feast.project,
        online_store=settings.feast.online_store,
        start=start,
        end=end,
        elapsed_s=elapsed,
    )
