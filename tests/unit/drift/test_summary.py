"""Parsing Evidently's snapshot, the verdict threshold, the summary JSON and the alert payload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drift.errors import WindowTooSmallError
from drift.evaluate import DriftConfig, parse_column_tests, quality_checks
from drift.job import compare
from drift.reference import VersionInfo
from drift.summary import ColumnDrift, DriftSummary

FEATURES = ["a", "b", "c", "flag"]
INFO = VersionInfo("m", "3", "run", FEATURES, "binary", "--version")


def _frame(n: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shift = shift or {}
    df = pd.DataFrame(
        {
            "a": rng.normal(shift.get("a", 0.0), 1.0, n),
            "b": rng.exponential(2.0, n) + shift.get("b", 0.0),
            "c": rng.normal(10.0 + shift.get("c", 0.0), 3.0, n),
            "flag": (rng.random(n) < 0.3 + shift.get("flag", 0.0)).astype(float),
        }
    )
    df["score"] = 1 / (1 + np.exp(-df["a"]))
    return df


def test_snapshot_tests_give_one_verdict_per_column() -> None:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref, cur = _frame(2000, 1), _frame(800, 2, {"a": 1.0})
    snap = Report(
        [DataDriftPreset(columns=["a", "b"], method="wasserstein", threshold=0.2)], include_tests=True
    ).run(current_data=cur, reference_data=ref)
    parsed = parse_column_tests(json.loads(snap.json()))
    assert set(parsed) == {"a", "b"}
    assert parsed["a"].drifted and not parsed["b"].drifted
    assert parsed["a"].score > 0.2 > parsed["b"].score
    assert parsed["a"].threshold == 0.2


def test_parse_ignores_non_drift_tests() -> None:
    snap = {
        "metrics": [{"id": "m1", "value": 0.42}, {"id": "m2", "value": {"count": 1, "share": 0.5}}],
        "tests": [
            {
                "metric_config": {
                    "metric_id": "m2",
                    "params": {"type": "evidently:metric_v2:DriftedColumnsCount"},
                },
                "status": "FAIL",
            },
            {
                "metric_config": {
                    "metric_id": "m1",
                    "params": {
                        "type": "evidently:metric_v2:ValueDrift",
                        "column": "x",
                        "method": "psi",
                        "threshold": 0.1,
                    },
                },
                "status": "FAIL",
            },
        ],
    }
    assert parse_column_tests(snap) == {"x": ColumnDrift("x", "psi", 0.42, 0.1, True)}


def _compare(cur: pd.DataFrame, threshold: float = 0.3, min_rows: int = 100) -> DriftSummary:
    summary, _ = compare(
        _frame(3000, 1),
        cur,
        INFO,
        window="test",
        share_threshold=threshold,
        cfg=DriftConfig(),
        min_rows=min_rows,
    )
    return summary


def test_shifted_columns_are_named_and_the_verdict_follows_the_share() -> None:
    summary = _compare(_frame(1000, 2, {"a": 0.8, "c": 2.0, "flag": 0.3}))
    assert {c.column for c in summary.drifted_columns} == {"a", "c", "flag"}
    flag = next(c for c in summary.columns if c.column == "flag")
    assert flag.method == "jensenshannon"  # two distinct values: compared as categories
    assert summary.drift_share == pytest.approx(0.75)
    assert summary.verdict == "drift" and summary.exit_code == 3
    assert summary.score_drift is not None and summary.score_drift.drifted


def test_share_equal_to_the_threshold_is_drift_and_below_is_ok() -> None:
    cur = _frame(1000, 2, {"a": 1.0})  # one of four columns
    assert _compare(cur, threshold=0.25).verdict == "drift"
    ok = _compare(cur, threshold=0.3)
    assert ok.verdict == "ok" and ok.exit_code == 0
    assert [c.column for c in ok.drifted_columns] == ["a"]


@pytest.mark.parametrize("rows", [0, 99])
def test_too_small_windows_are_refused_with_a_clear_message(rows: int) -> None:
    with pytest.raises(WindowTooSmallError, match=r"need at least 100.*--since/--last"):
        _compare(_frame(rows, 2), min_rows=100)


def test_an_all_null_column_counts_as_drifted_and_is_a_quality_issue() -> None:
    cur = _frame(500, 2)
    cur["b"] = np.nan
    summary = _compare(cur)
    b = next(c for c in summary.columns if c.column == "b")
    assert b.drifted and b.method == "all-null"
    assert any(q.kind == "all_null" and q.column == "b" for q in summary.quality)


def test_quality_flags_null_rate_increase_and_out_of_range_values() -> None:
    ref, cur = _frame(2000, 1), _frame(500, 2)
    cur.loc[:199, "a"] = np.nan
    cur.loc[200:299, "c"] = 1e6
    issues, rates = quality_checks(ref, cur, FEATURES, DriftConfig())
    kinds = {(q.column, q.kind) for q in issues}
    assert ("a", "null_rate") in kinds and ("c", "out_of_range") in kinds
    assert rates["a"]["current"] == pytest.approx(0.4)


def test_summary_round_trips_and_alert_payload_names_the_columns(tmp_path: Path) -> None:
    summary = _compare(_frame(800, 3, {"a": 1.0, "b": 3.0}), threshold=0.5)
    d = summary.to_dict()
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(d, default=str))
    back = DriftSummary.from_dict(json.loads(path.read_text()))
    assert back.columns == summary.columns and back.verdict == "drift"
    payload = summary.alert_payload()
    assert payload["event"] == "treeserve.drift"
    assert [c["column"] for c in payload["drifted_columns"]] == ["a", "b"]
    assert {"method", "score", "threshold"} <= set(payload["drifted_columns"][0])
    assert d["n_drifted"] == 2 and d["drift_share"] == pytest.approx(0.5)
