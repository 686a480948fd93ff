"""Point-in-time correctness of the training set (Feast DuckDB offline store, in-process)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import FEATURES, LABEL, STATS_FILE, generate_world
from training.dataset import build_training_set
from training.features import apply_features
from treeserve.features.store import open_feature_store
from treeserve_app.settings import load_settings

PLANTED = 9999.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("pit")
    settings = load_settings(home=home, mlflow={"tracking_uri": f"sqlite:///{home}/mlflow.db"})
    data = home / "var" / "data"
    generate_world(data, n_customers=150, n_days=40, seed=5, end_date=date(2026, 1, 31))
    stats = pd.read_parquet(data / STATS_FILE)
    labels = pd.read_parquet(data / "labels.parquet")
    # plant a value one second AFTER the first label's observation time: it must never be seen
    victim = labels.iloc[0]
    later = stats[stats.customer_id == victim.customer_id].iloc[[-1]].copy()
    later["event_timestamp"] = victim.event_timestamp + pd.Timedelta(seconds=1)
    later["created"] = later["event_timestamp"]
    later[list(FEATURES)] = PLANTED
    pd.concat([stats, later], ignore_index=True).to_parquet(data / STATS_FILE, index=False)
    apply_features(settings)
    return settings, labels, victim


def _expected(stats: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The as-of join done by hand: latest snapshot at or before each label time."""
    stats = stats.assign(event_timestamp=stats["event_timestamp"].astype("datetime64[us, UTC]"))
    labels = labels.assign(event_timestamp=labels["event_timestamp"].astype("datetime64[us, UTC]"))
    return pd.merge_asof(
        labels.reset_index().sort_values("event_timestamp"),
        stats.sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
        direction="backward",
        tolerance=pd.Timedelta(days=90),
    ).sort_values("index")


def test_a_feature_value_later_than_the_label_is_never_seen(world) -> None:
    settings, labels, victim = world
    ts = build_training_set(open_feature_store(settings), labels, "churn_model")
    assert not (ts.frame[ts.features] == PLANTED).any().any()
    row = ts.frame[ts.frame.customer_id == victim.customer_id].iloc[0]
    stats = pd.read_parquet(Path(settings.path(settings.data.data_dir)) / STATS_FILE)
    visible = stats[
        (stats.customer_id == victim.customer_id) & (stats.event_timestamp <= victim.event_timestamp)
    ]
    latest = visible.sort_values("event_timestamp").iloc[-1]
    for f in FEATURES:
        assert row[f] == pytest.approx(latest[f], nan_ok=True)


def test_every_value_matches_a_hand_made_as_of_join(world) -> None:
    settings, labels, _ = world
    ts = build_training_set(open_feature_store(settings), labels, "churn_model")
    stats = pd.read_parquet(Path(settings.path(settings.data.data_dir)) / STATS_FILE)
    want = _expected(stats, labels)
    np.testing.assert_allclose(
        ts.frame[list(FEATURES)].to_numpy(), want[list(FEATURES)].to_numpy(), equal_nan=True
    )
    assert (ts.frame["label"].to_numpy() == labels[LABEL].to_numpy()).all()


def test_no_label_row_is_silently_dropped(world) -> None:
    settings, labels, _ = world
    extra = pd.DataFrame(
        {
            "customer_id": ["cust-unknown", labels.customer_id.iloc[1]],
            # an unknown customer, and a known one observed long before its first snapshot
            "event_timestamp": [labels.event_timestamp.iloc[0], pd.Timestamp("2020-01-01", tz="UTC")],
            LABEL: [1, 0],
        }
    )
    more = pd.concat([labels, extra], ignore_index=True)
    ts = build_training_set(open_feature_store(settings), more, "churn_model")
    assert len(ts.frame) == len(more)
    assert ts.frame.iloc[-2:][ts.features].isna().all().all()
    assert list(ts.frame["customer_id"]) == list(more["customer_id"])
