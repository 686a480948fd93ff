"""Reading a window of the gateway's prediction log (format: docs/architecture.md, "Contracts").

Segments live under ``<predlog_dir>/<model>/date=YYYY-MM-DD/part-<utc-time>-<pid>-<seq>.parquet``.
A window is either a time span back from now (``7d``, ``12h``) or the last N rows for a version.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from drift.errors import LogSchemaError, WindowSpecError

log = logging.getLogger(__name__)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_span(text: str) -> timedelta:
    """``'7d'`` -> 7 days; units s, m, h, d, w."""
    m = _SPAN.match(text or "")
    if not m:
        raise WindowSpecError(
            f"cannot read window {text!r}: use a number and a unit s|m|h|d|w, e.g. 7d or 12h"
        )
    span = timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    if span <= timedelta(0):
        raise WindowSpecError(f"window {text!r} is empty")
    return span


@dataclass(frozen=True)
class Window:
    """Which log rows to compare: a time span back from ``now`` or the last ``last_n`` rows."""

    since: timedelta | None = None
    last_n: int | None = None
    now: datetime | None = None
    label: str = ""
    """The span as the user wrote it (``7d``)."""

    def describe(self) -> str:
        """Human-readable description, e.g. ``last 7d`` or ``last 5000 rows``."""
        if self.last_n is not None:
            return f"last {self.last_n} rows"
        return f"last {self.label or self.since}"

    @classmethod
    def build(
        cls, *, since: str | None, last: int | None, default: str, now: datetime | None = None
    ) -> Window:
        """Window from CLI options; ``--since`` and ``--last`` exclude each other."""
        if since and last is not None:
            raise WindowSpecError("give either --since or --last, not both")
        if last is not None:
            if last < 1:
                raise WindowSpecError(f"--last must be at least 1, got {last}")
            return cls(last_n=last, now=now)
        text = since or default
        return cls(since=parse_span(text), now=now, label=text.strip())


def _segments(model_dir: Path) -> list[tuple[date, Path]]:
    """All segments of a model, oldest first (date partition, then file name = UTC time)."""
    out: list[tuple[date, Path]] = []
    if not model_dir.is_dir():
        return out
    for part in model_dir.glob("date=*"):
        try:
            day = date.fromisoformat(part.name.split("=", 1)[1])
        except ValueError:
            log.warning("skipping unexpected folder in the prediction log: %s", part)
            continue
        # writers rename hidden temporary files into place: skip those
        out.extend((day, f) for f in part.glob("*.parquet") if not f.name.startswith("."))
    out.sort(key=lambda t: (t[0], t[1].name))
    return out


def _read_segment(path: Path, version: str, features: list[str]) -> pd.DataFrame:
    table = pq.read_table(path)
    names = set(table.column_names)
    if "model_version" not in names:
        raise LogSchemaError(f"prediction log segment {path} has no model_version column")
    df = table.to_pandas()
    df = df[df["model_version"].astype(str) == str(version)]
    if df.empty:
        return df
    missing = [f for f in [*features, "score", "timestamp"] if f not in names]
    if missing:
        raise LogSchemaError(
            f"prediction log columns do not match version {version}'s features: "
            f"missing {missing} in {path.name} (has {sorted(names)})"
        )
    return df


def read_window(
    predlog_dir: Path,
    model: str,
    version: str,
    features: list[str],
    window: Window,
    *,
    routes: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Rows of ``version`` inside ``window``, oldest first, with timestamp, route, features, score.

    Raises LogSchemaError when a segment with rows of this version lacks one of its features.
    """
    now = window.now or datetime.now(UTC)
    segments = _segments(predlog_dir / model)
    frames: list[pd.DataFrame] = []
    if window.since is not None:
        start = now - window.since
        segments = [(d, p) for d, p in segments if d >= start.date()]
        for _, path in segments:
            df = _read_segment(path, version, features)
            if not df.empty:
                frames.append(df[(df["timestamp"] >= start) & (df["timestamp"] <= now)])
    else:
        assert window.last_n is not None
        have = 0
        for _, path in reversed(segments):
            df = _read_segment(path, version, features)
            if routes is not None and not df.empty:
                df = df[df["route"].isin(routes)]
            if not df.empty:
                frames.append(df)
                have += len(df)
            if have >= window.last_n:
                break
    cols = ["timestamp", "route", "entity_key", *features, "score"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    df = pd.concat(frames, ignore_index=True)
    if routes is not None:
        df = df[df["route"].isin(routes)]
    df = df.sort_values("timestamp", kind="stable")
    if window.last_n is not None:
        df = df.tail(window.last_n)
    if "fallback" in df.columns:
        # a fallback answer is not the model's score (Triton down, guard tripped): keep the inputs only
        df = df.copy()
        df.loc[df["fallback"].fillna("").astype(str) != "", "score"] = float("nan")
    keep = [c for c in cols if c in df.columns]
    out = df[keep].reset_index(drop=True)
    for f in [*features, "score"]:
        out[f] = pd.to_numeric(out[f], errors="coerce").astype("float64")
    return out
