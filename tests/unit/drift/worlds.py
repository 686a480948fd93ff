"""Generated worlds for the drift calibration tests (the training package's generator)."""

from __future__ import annotations

from datetime import date
from functools import cache

import numpy as np
import pandas as pd

from training.data import FEATURES, ground_truth_logit, simulate

END = date(2026, 11, 27)


@cache
def world(seed: int, drift: bool = False, n_customers: int = 2500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(customer_stats, labels) of a generated world."""
    _, stats, labels, _ = simulate(n_customers=n_customers, n_days=120, seed=seed, end_date=END, drift=drift)
    return stats, labels


def stand_in_score(frame: pd.DataFrame) -> np.ndarray:
    """A model stand-in: the generator's own churn probability."""
    return 1.0 / (1.0 + np.exp(-ground_truth_logit({f: frame[f].to_numpy() for f in FEATURES})))


def training_reference(seed: int, rows: int = 3000) -> pd.DataFrame:
    """What training stores: features at each label time (the snapshot of that day) + score."""
    stats, labels = world(seed)
    lab = labels.assign(day=labels["event_timestamp"].dt.floor("D"))
    joined = lab.merge(stats, left_on=["customer_id", "day"], right_on=["customer_id", "event_timestamp"])
    ref = joined[list(FEATURES)].sample(min(rows, len(joined)), random_state=seed).reset_index(drop=True)
    ref["score"] = stand_in_score(ref)
    return ref


def serving_window(seed: int, rows: int, *, drift: bool = False) -> pd.DataFrame:
    """What the gateway logs: random customers' newest snapshot (the online store) + score."""
    stats, _ = world(seed, drift)
    latest = stats[stats["event_timestamp"] == stats["event_timestamp"].max()]
    cur = latest.sample(rows, replace=True, random_state=seed)[list(FEATURES)].reset_index(drop=True)
    cur["score"] = stand_in_score(cur)
    return cur
