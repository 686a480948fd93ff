"""Batch scoring pieces: deciles, the gateway's missing-value policy, partition replacement."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drift.score_store import DuckDBScoreSink, ParquetScoreSink
from drift.scoring import ServingModel, deciles, score_rows
from gateway.settings import GatewaySettings


def test_deciles_split_ranks_evenly_with_ten_on_top() -> None:
    scores = np.random.default_rng(0).random(1000)
    d = deciles(scores)
    assert np.bincount(d)[1:].tolist() == [100] * 10
    assert d[np.argmax(scores)] == 10 and d[np.argmin(scores)] == 1
    assert deciles(np.array([0.5])).tolist() == [10]
    assert deciles(np.array([])).size == 0


class _Session:
    """ONNX Runtime stand-in: P(class 1) = sigmoid(sum of inputs); records what it was given."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["features"]
        self.seen.append(x)
        p = 1 / (1 + np.exp(-x.sum(axis=1)))
        return [np.column_stack([1 - p, p]).astype(np.float32)]


def _model() -> ServingModel:
    return ServingModel("m", "1", ["a", "b"], "binary", {"a": 1.0, "b": 2.0}, 0.25, "svc", ["id"], _Session())


def test_missing_values_follow_the_gateway_policy() -> None:
    m = _model()
    x = np.array([[0.5, 0.5], [np.nan, 0.0], [np.nan, np.nan]])
    scores, fb = score_rows(m, x, GatewaySettings())
    assert fb.tolist() == [False, False, True]
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6)
    assert scores[1] == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6)  # a imputed with its median 1.0
    assert scores[2] == 0.25  # unknown entity: the base rate
    assert not np.isnan(m.session.seen[0]).any()


def test_fallback_policy_for_a_feature_answers_the_base_rate() -> None:
    gw = GatewaySettings(missing_policy={"b": "fallback"})
    scores, fb = score_rows(_model(), np.array([[0.1, np.nan], [np.nan, 0.1]]), gw)
    assert fb.tolist() == [True, False] and scores[0] == 0.25


def _scores(n: int, version: str, day: date, seed: int = 0) -> pd.DataFrame:
    s = np.random.default_rng(seed).random(n)
    return pd.DataFrame(
        {
            "entity": [f"c-{i:04d}" for i in range(n)],
            "score": s,
            "score_decile": deciles(s),
            "model": "m",
            "model_version": version,
            "score_date": day,
        }
    )


@pytest.fixture(params=["duckdb", "parquet"])
def sink(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "duckdb":
        return DuckDBScoreSink(tmp_path / "scores.duckdb", "batch_scores")
    return ParquetScoreSink(tmp_path / "scores", "batch_scores")


def test_rerunning_a_day_replaces_its_partition_and_keeps_other_days(sink) -> None:
    d1, d2 = date(2026, 11, 26), date(2026, 11, 27)
    sink.replace_partition(_scores(100, "1", d1), "m", d1)
    sink.replace_partition(_scores(80, "1", d2), "m", d2)
    sink.replace_partition(_scores(60, "2", d2, seed=1), "m", d2)  # rerun of d2 with another version
    today = sink.read_partition("m", d2)
    assert len(today) == 60 and set(today["model_version"]) == {"2"}
    assert today["entity"].is_unique
    assert len(sink.read_partition("m", d1)) == 100
    assert sink.dates("m") == [d1, d2]
    assert sink.read_partition("other", d1).empty


def test_bad_table_names_are_refused(tmp_path: Path) -> None:
    from treeserve.errors import ConfigError

    with pytest.raises(ConfigError, match="table name"):
        DuckDBScoreSink(tmp_path / "x.duckdb", "scores; drop table x")
