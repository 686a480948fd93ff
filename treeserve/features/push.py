"""Pushing feature rows into Feast: the schema of a PushSource, row validation, the write.

A push carries rows for one ``PushSource`` (``customer_activity_push``)::

    {"customer_id": "cust-000042", "event_timestamp": "2026-11-30T20:15:00Z",
     "session_count_last_1h": 3, "cart_value_usd": 129.5, "last_page_viewed": "cart"}

Each row holds exactly the entity join keys, ``event_timestamp`` (ISO 8601, naive = UTC, or epoch
seconds; at most ``MAX_FUTURE_S`` ahead) and every feature of the FeatureViews fed by the source:
Int64 an integer, Float64 a finite number or null, String a string of at most
``MAX_STRING_LENGTH`` characters or null (a page outside the model's vocabulary is accepted and
reaches the model as missing). ``validate_rows`` turns rows into a DataFrame or raises
``PushRejectedError`` naming the first problem. ``FeastFeaturePusher.push`` writes them with
``FeatureStore.push(..., to=PushMode.ONLINE_AND_OFFLINE)``: the online store (what the next
prediction reads) and the source's offline copy (what the next training joins point-in-time).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from treeserve.errors import NotFoundError, TreeserveError, ValidationFailedError
from treeserve.features.source import OnlineStoreUnavailableError, first_line, store_unavailable

if TYPE_CHECKING:
    from feast import FeatureStore

TIMESTAMP_FIELD = "event_timestamp"
MAX_STRING_LENGTH = 256
"""Longest string feature value accepted."""
MAX_FUTURE_S = 300.0
"""An event may lie this far in the future (clock skew); later ones are refused."""

FieldKind = Literal["int64", "float64", "string"]
_KINDS: dict[str, FieldKind] = {
    "Int64": "int64",
    "Int32": "int64",
    "Float64": "float64",
    "Float32": "float64",
}
_KINDS["String"] = "string"


class PushRejectedError(ValidationFailedError):
    """Pushed rows do not match the PushSource's schema (HTTP 422, CLI exit 1)."""


class UnknownPushSourceError(NotFoundError):
    """No PushSource of that name in the Feast registry."""


@dataclass(frozen=True)
class PushSchema:
    """What a row pushed to ``push_source`` must hold."""

    push_source: str
    join_keys: tuple[str, ...]
    fields: Mapping[str, FieldKind]
    """Feature -> kind, in the order of the FeatureViews fed by the source."""
    feature_views: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a row holds: join keys, ``event_timestamp``, the features."""
        return (*self.join_keys, TIMESTAMP_FIELD, *self.fields)


@dataclass(frozen=True)
class PushResult:
    """What one push wrote."""

    push_source: str
    rows: int
    feature_views: tuple[str, ...]
    to: str = "online_and_offline"


def push_schema(store: FeatureStore, push_source: str) -> PushSchema:
    """The schema of ``push_source``: join keys and typed features of the views it feeds."""
    from feast.data_source import PushSource

    try:
        source = store.get_data_source(push_source)
    except Exception as e:
        raise UnknownPushSourceError(f"no push source {push_source!r} in the Feast registry") from e
    if not isinstance(source, PushSource):
        raise UnknownPushSourceError(f"data source {push_source!r} is not a push source")
    keys: list[str] = []
    fields: dict[str, FieldKind] = {}
    views: list[str] = []
    for view in store.list_feature_views():
        stream = getattr(view, "stream_source", None)
        if stream is None or stream.name != push_source:
            continue
        views.append(view.name)
        for column in view.entity_columns:
            if column.name not in keys:
                keys.append(column.name)
        for f in view.features:
            kind = _KINDS.get(str(f.dtype))
            if kind is None:
                raise ValidationFailedError(
                    f"feature {view.name}:{f.name} has type {f.dtype}, which a push cannot carry"
                )
            fields[f.name] = kind
    if not views:
        raise UnknownPushSourceError(f"push source {push_source!r} feeds no feature view")
    return PushSchema(push_source, tuple(keys), fields, tuple(views))


def push_sources_of(store: FeatureStore, feature_service: str) -> list[str]:
    """The push sources that feed the views of ``feature_service``."""
    service = store.get_feature_service(feature_service)
    names: list[str] = []
    for proj in service.feature_view_projections:
        stream = getattr(store.get_feature_view(proj.name), "stream_source", None)
        if stream is not None and stream.name not in names:
            names.append(stream.name)
    return names


def validate_rows(
    schema: PushSchema,
    rows: Any,
    *,
    max_rows: int,
    entity_id_pattern: str = r"^[A-Za-z0-9_.:@\-]+$",
    entity_id_max_length: int = 128,
    now_s: float | None = None,
) -> pd.DataFrame:
    """Rows (a list of JSON objects) as the DataFrame Feast's push takes, or ``PushRejectedError``."""
    if not isinstance(rows, list):
        raise PushRejectedError('"rows" must be a list of objects')
    if not 0 < len(rows) <= max_rows:
        raise PushRejectedError(f'"rows" must hold 1 to {max_rows} rows (got {len(rows)})')
    id_re = re.compile(entity_id_pattern)
    latest = (time.time() if now_s is None else now_s) + MAX_FUTURE_S
    wanted = set(schema.columns)
    columns: dict[str, list[Any]] = {c: [] for c in schema.columns}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PushRejectedError(f"rows[{i}] must be an object with {list(schema.columns)}")
        unknown = sorted(str(k)[:64] for k in row if k not in wanted)
        if unknown:
            raise PushRejectedError(
                f"rows[{i}] has unknown columns {unknown[:5]}; push source {schema.push_source!r} "
                f"takes {list(schema.columns)}"
            )
        missing = [c for c in schema.columns if c not in row]
        if missing:
            raise PushRejectedError(f"rows[{i}] lacks columns {missing}")
        for k in schema.join_keys:
            v = row[k]
            if not isinstance(v, str) or not 0 < len(v) <= entity_id_max_length or not id_re.match(v):
                raise PushRejectedError(
                    f"rows[{i}].{k} must be a string of 1-{entity_id_max_length} characters matching "
                    f"{entity_id_pattern}"
                )
            columns[k].append(v)
        ts = _timestamp(row[TIMESTAMP_FIELD], f"rows[{i}].{TIMESTAMP_FIELD}")
        if ts.timestamp() > latest:
            raise PushRejectedError(
                f"rows[{i}].{TIMESTAMP_FIELD} {ts.isoformat()} lies more than {MAX_FUTURE_S:g} s in the future"
            )
        columns[TIMESTAMP_FIELD].append(ts)
        for name, kind in schema.fields.items():
            columns[name].append(_value(row[name], kind, f"rows[{i}].{name}"))
    frame = pd.DataFrame(columns)
    frame[TIMESTAMP_FIELD] = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True).astype("datetime64[us, UTC]")
    for name, kind in schema.fields.items():
        if kind == "int64":
            frame[name] = frame[name].astype("int64")
        elif kind == "float64":
            frame[name] = frame[name].astype("float64")
        else:
            frame[name] = frame[name].astype(object)
    return frame


def _timestamp(v: Any, where: str) -> datetime:
    if isinstance(v, bool):
        raise PushRejectedError(f"{where} must be an ISO 8601 time or epoch seconds")
    if isinstance(v, int | float):
        if not math.isfinite(v) or not 0 <= v < 32_503_680_000:
            raise PushRejectedError(f"{where} must be epoch seconds between 1970 and 3000")
        return datetime.fromtimestamp(float(v), tz=UTC)
    if isinstance(v, str) and len(v) <= 64:
        try:
            ts = datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
        except ValueError:
            pass
        else:
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    raise PushRejectedError(f"{where} must be an ISO 8601 time (e.g. 2026-11-30T20:15:00Z) or epoch seconds")


def _value(v: Any, kind: FieldKind, where: str) -> Any:
    if kind == "int64":
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
            raise PushRejectedError(f"{where} must be an integer (got {_show(v)})")
        return v
    if v is None:
        return math.nan if kind == "float64" else None
    if kind == "float64":
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise PushRejectedError(f"{where} must be a finite number or null (got {_show(v)})")
        return float(v)
    if not isinstance(v, str) or len(v) > MAX_STRING_LENGTH:
        raise PushRejectedError(f"{where} must be a string of at most {MAX_STRING_LENGTH} characters or null")
    return v


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class FeastFeaturePusher:
    """Writes validated rows through ``FeatureStore.push`` (online and offline), one push at a time.

    One at a time: the DuckDB/file offline store appends by rewriting the source's Parquet file, so
    two concurrent pushes would lose one's rows. A thread lock serializes this process; an
    exclusive ``flock`` on ``<source file>.lock`` serializes gateway workers and replicas that
    share the folder.
    """

    def __init__(self, store: FeatureStore, *, store_name: str) -> None:
        self._store = store
        self.store_name = store_name
        self._schemas: dict[str, PushSchema] = {}
        self._lock = threading.Lock()

    def schema(self, push_source: str) -> PushSchema:
        """The (cached) schema of ``push_source``."""
        found = self._schemas.get(push_source)
        if found is None:
            try:
                found = push_schema(self._store, push_source)
            except TreeserveError:
                raise
            except Exception as e:
                raise store_unavailable(self.store_name, e) from e
            self._schemas[push_source] = found
        return found

    def default_push_source(self, feature_service: str) -> str:
        """The one push source feeding ``feature_service`` (``PushRejectedError`` when not exactly one)."""
        try:
            names = push_sources_of(self._store, feature_service)
        except TreeserveError:
            raise
        except Exception as e:
            raise store_unavailable(self.store_name, e) from e
        if len(names) != 1:
            raise PushRejectedError(
                f'name the "push_source": FeatureService {feature_service!r} is fed by {names or "no push source"}'
            )
        return names[0]

    def push(self, push_source: str, frame: pd.DataFrame) -> PushResult:
        """Write ``frame`` (from ``validate_rows``) online and offline."""
        from feast.data_source import PushMode

        schema = self.schema(push_source)
        with self._lock, _file_lock(self._source_path(push_source)):
            try:
                self._store.push(push_source, frame, to=PushMode.ONLINE_AND_OFFLINE)
            except Exception as e:
                raise OnlineStoreUnavailableError(
                    f"the push to {push_source!r} could not be written (online store {self.store_name}, "
                    f"offline copy): {first_line(e)}"
                ) from e
        return PushResult(push_source, len(frame), schema.feature_views)

    def _source_path(self, push_source: str) -> Path | None:
        """The local file behind the push source's batch source (None: not a local file)."""
        try:
            source: Any = self._store.get_data_source(push_source)
            path = getattr(source.batch_source, "path", None)
        except Exception:
            return None
        if not path or "://" in str(path):
            return None
        return Path(path)


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (nothing when ``path`` is None)."""
    if path is None or not path.parent.is_dir():
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rows_from_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain JSON-able rows from DataFrame records (timestamps as ISO 8601, NaN as null)."""
    out: list[dict[str, Any]] = []
    for rec in records:
        row: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp | datetime):
                ts = pd.Timestamp(v)
                row[str(k)] = (ts.tz_localize(UTC) if ts.tzinfo is None else ts).isoformat()
            elif (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
                row[str(k)] = None
            elif hasattr(v, "item"):  # numpy scalars
                row[str(k)] = v.item()
            else:
                row[str(k)] = v
        out.append(row)
    return out


__all__ = [
    "FeastFeaturePusher",
    "PushRejectedError",
    "PushResult",
    "PushSchema",
    "UnknownPushSourceError",
    "push_schema",
    "push_sources_of",
    "rows_from_records",
    "validate_rows",
]
