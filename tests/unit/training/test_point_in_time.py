"""Point-in-time correctness of the training set (Feast DuckDB offline store, in-process)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import ACTIVITY_FILE, FEATURES, LABEL, PAGES, REALTIME_FEATURES, STATS_FILE, generate_world
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
    # and a session event one second after every label time: no row may see its values
    activity = pd.read_parquet(data / ACTIVITY_FILE)
    planted = pd.DataFrame(
        {
            "customer_id": labels["customer_id"],
            "event_timestamp": labels["event_timestamp"] + pd.Timedelta(seconds=1),
            "session_count_last_1h": np.int64(PLANTED),
            "cart_value_usd": PLANTED,
            "last_page_viewed": "cancel_subscription",
        }
    )
    planted["event_timestamp"] = planted["event_timestamp"].astype(activity["event_timestamp"].dtype)
    pd.concat([activity, planted], ignore_index=True).to_parquet(data / ACTIVITY_FILE, index=False)
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


def test_realtime_values_are_the_latest_session_event_at_or_before_the_label_within_an_hour(world) -> None:
    settings, labels, _ = world
    ts = build_training_set(open_feature_store(settings), labels, "churn_model")
    assert ts.features[-3:] == list(REALTIME_FEATURES)  # model order = FeatureService order
    frame = ts.frame
    assert not (frame[["session_count_last_1h", "cart_value_usd"]] == PLANTED).any().any()
    activity = pd.read_parquet(Path(settings.path(settings.data.data_dir)) / ACTIVITY_FILE)
    activity = activity[activity["cart_value_usd"] != PLANTED]
    labels_ = labels.assign(event_timestamp=labels["event_timestamp"].astype("datetime64[us, UTC]"))
    want = pd.merge_asof(
        labels_.reset_index().sort_values("event_timestamp"),
        activity.assign(
            event_timestamp=activity["event_timestamp"].astype("datetime64[us, UTC]")
        ).sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
        direction="backward",
        tolerance=pd.Timedelta(hours=1),  # the FeatureView's TTL: older activity is missing
    ).sort_values("index")
    np.testing.assert_allclose(
        frame["session_count_last_1h"].to_numpy(),
        want["session_count_last_1h"].to_numpy(dtype=float),
        equal_nan=True,
    )
    np.testing.assert_allclose(
        frame["cart_value_usd"].to_numpy(), want["cart_value_usd"].to_numpy(), equal_nan=True
    )
    # the page reaches the model as its vocabulary code; "blog" is outside it (missing)
    vocab = ts.encodings["last_page_viewed"]
    codes = vocab.encode(want["last_page_viewed"].to_numpy(dtype=object))
    np.testing.assert_array_equal(frame["last_page_viewed"].to_numpy(), codes)
    assert set(vocab.values) == set(PAGES) - {"blog"}
    fresh = frame["session_count_last_1h"].notna()
    assert 0.1 < fresh.mean() < 0.9  # some labels see fresh activity, the others have none within the TTL
