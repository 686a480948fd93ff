"""The demo world generator: seeded, realistic, and shiftable."""

from __future__ import annotations

from datetime import UTC, date

import numpy as np
import pandas as pd
import pytest

from training.data import (
    DRIFTED_FEATURES,
    FEATURES,
    LABEL,
    PAGES,
    REALTIME_FEATURES,
    ground_truth_logit,
    simulate,
)

END = date(2026, 3, 31)


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return simulate(n_customers=3000, n_days=60, seed=3, end_date=END)


def test_same_seed_same_world(world) -> None:
    again = simulate(n_customers=3000, n_days=60, seed=3, end_date=END)
    for a, b in zip(world, again, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_other_seed_other_world(world) -> None:
    _, stats, _, _ = simulate(n_customers=3000, n_days=60, seed=4, end_date=END)
    assert not stats["order_count_90d"].equals(world[1]["order_count_90d"])


def test_tables_have_the_contract_columns(world) -> None:
    customers, stats, labels, activity = world
    assert list(stats.columns) == ["customer_id", "event_timestamp", *FEATURES, "created"]
    assert str(stats["event_timestamp"].dt.tz) == "UTC"
    assert stats["customer_id"].str.fullmatch(r"cust-\d{6}").all()
    assert all(stats[f].dtype == np.float64 for f in FEATURES)
    assert list(labels.columns) == ["customer_id", "event_timestamp", LABEL]
    assert set(labels[LABEL].unique()) == {0, 1}
    assert customers["customer_id"].is_unique and len(customers) == 3000
    assert stats["event_timestamp"].max() == pd.Timestamp(END, tz=UTC)
    assert list(activity.columns) == ["customer_id", "event_timestamp", *REALTIME_FEATURES]
    assert activity["session_count_last_1h"].dtype == np.int64
    assert activity["cart_value_usd"].dtype == np.float64
    assert str(activity["event_timestamp"].dt.tz) == "UTC"
    # the final burst ends an hour before the last snapshot: served later, it is always past the TTL
    assert activity["event_timestamp"].max() <= pd.Timestamp(END, tz=UTC) - pd.Timedelta(hours=1)


def test_daily_snapshots_with_realistic_nulls(world) -> None:
    _, stats, _, _ = world
    per_day = stats.groupby("customer_id")["event_timestamp"].diff().dropna()
    assert (per_day == pd.Timedelta(days=1)).all()
    nulls = stats[list(FEATURES)].isna().mean()
    assert 0.05 < nulls["email_open_rate_30d"] < 0.2  # no consent + gaps
    assert 0 < nulls["avg_order_value_usd"] < 0.2  # no orders in 90 days
    assert nulls["days_since_signup"] == 0


def test_labels_are_observed_after_a_snapshot_with_30_days_to_spare(world) -> None:
    _, stats, labels, _ = world
    first = stats.groupby("customer_id")["event_timestamp"].min()
    assert (labels["event_timestamp"].to_numpy() > first.loc[labels["customer_id"]].to_numpy()).all()
    assert labels["event_timestamp"].max() <= pd.Timestamp(END, tz=UTC) - pd.Timedelta(days=29)
    assert labels["customer_id"].is_unique
    assert 0.1 < labels[LABEL].mean() < 0.35


def test_ground_truth_on_visible_features_ranks_well_but_not_perfectly(world) -> None:
    from sklearn.metrics import roc_auc_score

    _, stats, labels, activity = world
    joined = pd.merge_asof(
        labels.sort_values("event_timestamp"),
        stats.sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
    )
    joined = pd.merge_asof(
        joined,
        activity.sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
        tolerance=pd.Timedelta(hours=1),
    )
    logit = ground_truth_logit({f: joined[f].to_numpy() for f in (*FEATURES, *REALTIME_FEATURES)})
    batch_only = ground_truth_logit({f: joined[f].to_numpy() for f in FEATURES})
    full_auc, batch_auc = roc_auc_score(joined[LABEL], logit), roc_auc_score(joined[LABEL], batch_only)
    assert 0.78 < full_auc < 0.95
    assert full_auc > batch_auc + 0.01  # fresh session activity carries signal the snapshot lacks


def test_activity_counts_sessions_of_the_last_hour_and_pages_outside_the_vocabulary(world) -> None:
    _, _, _, activity = world
    for _, events in activity.groupby("customer_id"):
        ts = events["event_timestamp"]
        expected = [int(((ts > t - pd.Timedelta(hours=1)) & (ts <= t)).sum()) for t in ts]
        assert events["session_count_last_1h"].tolist() == expected
        break
    assert set(activity["last_page_viewed"]) == set(PAGES)
    assert 0.5 < (activity["cart_value_usd"] == 0).mean() < 0.9


def test_drift_shifts_the_named_features(world) -> None:
    _, stats, _, _ = world
    _, drifted, _, _ = simulate(n_customers=3000, n_days=60, seed=3, end_date=END, drift=True)
    base, shifted = stats[list(FEATURES)].mean(), drifted[list(FEATURES)].mean()
    assert shifted["order_count_90d"] < 0.8 * base["order_count_90d"]
    assert shifted["days_since_last_order"] > base["days_since_last_order"]
    assert shifted["avg_order_value_usd"] < 0.85 * base["avg_order_value_usd"]
    assert shifted["support_tickets_30d"] > 1.5 * base["support_tickets_30d"]
    assert shifted["email_open_rate_30d"] < base["email_open_rate_30d"] - 0.05
    assert shifted["days_since_signup"] == base["days_since_signup"]
    assert "days_since_signup" not in DRIFTED_FEATURES
