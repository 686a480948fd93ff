"""Windowing over the prediction log: spans, --last, version filter, schema errors."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drift.errors import LogSchemaError, WindowSpecError
from drift.window import Window, parse_span, read_window
from tests.fixtures.drift import write_predlog

FEATURES = ["a", "b"]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "score": rng.random(n)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_spans_parse(text: str, expected: timedelta) -> None:
    assert parse_span(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7 days", "-1d", "0d", "1y"])
def test_bad_spans_are_one_clear_error(text: str) -> None:
    with pytest.raises(WindowSpecError, match="window"):
        parse_span(text)


@given(st.text(max_size=12))
def test_parse_span_never_crashes(text: str) -> None:
    with contextlib.suppress(WindowSpecError):
        assert parse_span(text).total_seconds() > 0


def test_since_and_last_exclude_each_other() -> None:
    with pytest.raises(WindowSpecError, match="either"):
        Window.build(since="1d", last=10, default="7d")
    with pytest.raises(WindowSpecError):
        Window.build(since=None, last=0, default="7d")
    assert Window.build(since=None, last=None, default="7d").since == timedelta(days=7)


def test_time_window_keeps_rows_of_the_version_inside_the_span(tmp_path: Path) -> None:
    write_predlog(tmp_path, "m", "1", FEATURES, _frame(100), end=NOW - timedelta(days=3), spacing_s=1)
    write_predlog(tmp_path, "m", "1", FEATURES, _frame(60), end=NOW - timedelta(hours=1), spacing_s=1)
    write_predlog(tmp_path, "m", "2", FEATURES, _frame(40), end=NOW - timedelta(hours=1), spacing_s=1)
    got = read_window(
        tmp_path, "m", "1", FEATURES, Window.build(since="1d", last=None, default="7d", now=NOW)
    )
    assert len(got) == 60
    assert got["timestamp"].min() >= NOW - timedelta(days=1)
    assert list(got.columns[-3:]) == ["a", "b", "score"]
    wide = read_window(
        tmp_path, "m", "1", FEATURES, Window.build(since="7d", last=None, default="7d", now=NOW)
    )
    assert len(wide) == 160


def test_last_n_takes_the_newest_rows_across_segments(tmp_path: Path) -> None:
    write_predlog(tmp_path, "m", "1", FEATURES, _frame(100, 1), end=NOW - timedelta(days=2))
    newest = _frame(30, 2)
    write_predlog(tmp_path, "m", "1", FEATURES, newest, end=NOW)
    got = read_window(tmp_path, "m", "1", FEATURES, Window(last_n=50, now=NOW))
    assert len(got) == 50
    assert np.allclose(got["score"].tail(30).to_numpy(), newest["score"].to_numpy())


def test_missing_log_is_an_empty_window(tmp_path: Path) -> None:
    got = read_window(tmp_path, "nope", "1", FEATURES, Window(since=timedelta(days=1)))
    assert got.empty


def test_log_without_the_versions_features_is_a_schema_error(tmp_path: Path) -> None:
    write_predlog(tmp_path, "m", "1", ["a", "c"], _frame(10).rename(columns={"b": "c"}), end=NOW)
    with pytest.raises(LogSchemaError, match=r"missing \['b'\]"):
        read_window(tmp_path, "m", "1", FEATURES, Window(since=timedelta(days=1), now=NOW))


def test_fallback_scores_are_not_model_scores(tmp_path: Path) -> None:
    write_predlog(tmp_path, "m", "1", FEATURES, _frame(10), end=NOW)
    seg = next(tmp_path.rglob("part-*.parquet"))
    df = pd.read_parquet(seg)
    df.loc[:4, "fallback"] = "unknown_entity"
    df.to_parquet(seg, index=False)
    (seg.parent / f".{seg.name}.tmp").write_bytes(b"half a file")  # a writer's temporary file
    got = read_window(tmp_path, "m", "1", FEATURES, Window(since=timedelta(days=1), now=NOW))
    assert got["score"].isna().sum() == 5
