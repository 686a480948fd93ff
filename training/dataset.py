"""The point-in-time correct training set: labels joined to Feast historical features.

Every label row (entity keys + ``event_timestamp`` = observation time) gets the latest feature
values at or before its timestamp, within the FeatureView TTL, read through the model's
FeatureService (DuckDB offline store). No label row may be lost in the join: a row without
features keeps nulls, and a changed row count is an error, never a silent drop. String features
are encoded with the vocabulary their Feast field declares (``treeserve.encoding``), the same codes
the online readers produce at serving time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training.data import LABEL, LABELS_FILE
from training.errors import DataNotFoundError, TrainingDataError
from treeserve.encoding import Vocabulary
from treeserve.features.store import (
    feature_service_encodings,
    feature_service_entity_keys,
    feature_service_features,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from training.settings import TrainingConfig

log = logging.getLogger(__name__)

_ROW = "__treeserve_row"


@dataclass(frozen=True)
class TrainingSet:
    """Labels with their point-in-time features, in label-file order."""

    frame: pd.DataFrame
    """Entity keys, ``event_timestamp``, the features (float64, model order) and ``label``."""
    features: list[str]
    entity_keys: list[str]
    feature_service: str
    encodings: dict[str, Vocabulary] = field(default_factory=dict)
    """String feature -> the vocabulary that encoded it."""

    @property
    def X(self) -> pd.DataFrame:
        """Feature columns in model order (float64)."""
        return self.frame[self.features]

    @property
    def y(self) -> np.ndarray:
        """Labels as int 0/1."""
        return self.frame["label"].to_numpy(dtype=np.int64)

    def fingerprint(self) -> dict[str, Any]:
        """Row count, label time range and a content hash of the training set."""
        ts = self.frame["event_timestamp"]
        digest = hashlib.sha256(
            pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes()
        ).hexdigest()
        return {
            "rows": len(self.frame),
            "start": ts.min().isoformat() if len(ts) else "",
            "end": ts.max().isoformat() if len(ts) else "",
            "sha256": digest,
        }


def read_labels(settings: TrainingConfig) -> pd.DataFrame:
    """The label table from the data folder."""
    path = settings.path(settings.data.data_dir) / LABELS_FILE
    if not path.is_file():
        raise DataNotFoundError(
            f"data directory {path.parent} has no {LABELS_FILE} (run `treeserve data generate` first)"
        )
    return pd.read_parquet(path)


def build_training_set(store: FeatureStore, labels: pd.DataFrame, feature_service: str) -> TrainingSet:
    """Join ``labels`` (entity keys, ``event_timestamp``, label column) to historical features."""
    features = feature_service_features(store, feature_service)
    keys = feature_service_entity_keys(store, feature_service)
    encodings = feature_service_encodings(store, feature_service)
    label_col = LABEL if LABEL in labels.columns else "label"
    missing = [c for c in [*keys, "event_timestamp", label_col] if c not in labels.columns]
    if missing:
        raise TrainingDataError(f"label table lacks columns {missing}")
    if labels.empty:
        raise TrainingDataError("label table is empty")

    entity_df = labels[[*keys, "event_timestamp"]].copy()
    entity_df["label"] = labels[label_col].to_numpy(dtype=np.int64)
    entity_df[_ROW] = np.arange(len(entity_df), dtype=np.int64)
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)

    job = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(feature_service)
    )
    joined = job.to_df()
    rows = joined[_ROW].to_numpy()
    if len(joined) != len(entity_df) or len(np.unique(rows)) != len(entity_df):
        raise TrainingDataError(
            f"point-in-time join returned {len(joined)} rows for {len(entity_df)} label rows "
            f"({len(np.unique(rows))} distinct): refusing to train on a silently changed set"
        )
    joined = joined.sort_values(_ROW, ignore_index=True)
    frame = joined[[*keys, "event_timestamp"]].copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    for f in features:
        enc = encodings.get(f)
        if enc is not None:
            frame[f] = enc.encode(joined[f].to_numpy(dtype=object))
        else:
            frame[f] = pd.to_numeric(joined[f], errors="coerce").astype(np.float64)
    frame["label"] = joined["label"].to_numpy(dtype=np.int64)
    log.info("training set rows=%d features=%d service=%s", len(frame), len(features), feature_service)
    return TrainingSet(
        frame=frame, features=features, entity_keys=keys, feature_service=feature_service, encodings=encodings
    )
