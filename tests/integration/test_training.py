"""The demo world on embedded defaults: what training registered, and what Feast serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.feast_data import DemoWorld
from treeserve import contract

pytestmark = pytest.mark.integration


def test_champion_is_the_trained_version_with_contract_tags(demo_world: DemoWorld) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(
        demo_world.settings.mlflow_tracking_uri, registry_uri=demo_world.settings.mlflow_tracking_uri
    )
    mv = client.get_model_version_by_alias(demo_world.model_name, contract.ALIAS_CHAMPION)
    assert str(mv.version) == demo_world.version
    assert json.loads(mv.tags[contract.TAG_FEATURES]) == demo_world.features
    assert mv.tags[contract.TAG_FEATURE_SERVICE] == "churn_model"
    assert json.loads(mv.tags[contract.TAG_ENTITY_KEYS]) == ["customer_id"]
    assert mv.tags[contract.TAG_TASK] == "binary"
    assert mv.tags["treeserve.gate.status"] == "passed"
    registered = client.get_registered_model(demo_world.model_name)
    assert json.loads(registered.tags[contract.TAG_CHAMPION_HISTORY]) == [demo_world.version]


def test_features_follow_the_feature_service_order(demo_world: DemoWorld) -> None:
    assert demo_world.features == [
        "days_since_last_order",
        "order_count_90d",
        "avg_order_value_usd",
        "support_tickets_30d",
        "product_category_diversity",
        "days_since_signup",
        "email_open_rate_30d",
        "session_count_last_1h",
        "cart_value_usd",
        "last_page_viewed",
    ]


def test_metrics_show_a_useful_model(demo_world: DemoWorld) -> None:
    m = demo_world.metrics
    for key in ("val_roc_auc", "val_avg_precision", "val_log_loss", "val_f1", "best_iteration"):
        assert key in m
    assert 0.72 < m["val_roc_auc"] < 0.97


def test_run_artifacts_follow_the_contract(demo_world: DemoWorld, tmp_path) -> None:
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient(
        demo_world.settings.mlflow_tracking_uri, registry_uri=demo_world.settings.mlflow_tracking_uri
    )
    ref = pd.read_parquet(
        client.download_artifacts(demo_world.run_id, contract.ARTIFACT_REFERENCE_SAMPLE, str(tmp_path))
    )
    assert list(ref.columns) == [*demo_world.features, "label", "score"]
    assert all(ref[f].dtype == np.float64 for f in demo_world.features)
    assert ref[demo_world.features].isna().any().any(), "the reference sample keeps real nulls"
    assert ((ref["score"] >= 0) & (ref["score"] <= 1)).all()

    stats_path = client.download_artifacts(demo_world.run_id, contract.ARTIFACT_FEATURE_STATS, str(tmp_path))
    stats = json.loads(Path(stats_path).read_text())
    assert stats["features"] == demo_world.features
    assert set(stats["medians"]) == set(demo_world.features)
    assert 0.05 < stats["base_rate"] < 0.5
    assert stats["n_rows"] > 0

    holdout = pd.read_parquet(
        client.download_artifacts(demo_world.run_id, contract.ARTIFACT_HOLDOUT, str(tmp_path))
    )
    assert list(holdout.columns) == [*demo_world.features, "label"]
    assert set(holdout["label"].unique()) == {0, 1}


def test_registered_model_is_native_xgboost_returning_probabilities(demo_world: DemoWorld, tmp_path) -> None:
    import mlflow.xgboost
    import pandas as pd
    import xgboost as xgb
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(demo_world.settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(demo_world.settings.mlflow_tracking_uri)
    booster = mlflow.xgboost.load_model(f"models:/{demo_world.model_name}@champion")
    assert isinstance(booster, xgb.Booster)
    assert booster.feature_names == demo_world.features
    client = MlflowClient(
        demo_world.settings.mlflow_tracking_uri, registry_uri=demo_world.settings.mlflow_tracking_uri
    )
    ref = pd.read_parquet(
        client.download_artifacts(demo_world.run_id, contract.ARTIFACT_REFERENCE_SAMPLE, str(tmp_path))
    )
    p = booster.predict(xgb.DMatrix(ref[demo_world.features], missing=np.nan))
    np.testing.assert_allclose(p, ref["score"].to_numpy(), atol=1e-6)


def test_online_store_serves_latest_snapshot_and_nulls_for_unknown(demo_world: DemoWorld) -> None:
    import pandas as pd

    from treeserve.features.store import open_feature_store

    store = open_feature_store(demo_world.settings)
    known = demo_world.customer_ids(1)[0]
    out = store.get_online_features(
        features=store.get_feature_service("churn_model"),
        entity_rows=[{"customer_id": known}, {"customer_id": "cust-999999"}],
    ).to_dict()
    stats = pd.read_parquet(demo_world.data_dir / "customer_stats.parquet")
    latest = stats[stats.customer_id == known].sort_values("event_timestamp").iloc[-1]
    assert out["days_since_signup"][0] == latest["days_since_signup"]
    assert all(out[f][1] is None for f in demo_world.features)


def test_redis_online_store_serves_the_same_features(
    redis_demo_world: DemoWorld, demo_world: DemoWorld
) -> None:
    from treeserve.features.store import open_feature_store

    ids = demo_world.customer_ids(5)
    rows = [{"customer_id": c} for c in ids]
    redis_store = open_feature_store(redis_demo_world.settings)
    sqlite_store = open_feature_store(demo_world.settings)
    assert redis_demo_world.settings.feast.online_store == "redis"
    got = redis_store.get_online_features(
        features=redis_store.get_feature_service("churn_model"), entity_rows=rows
    ).to_dict()
    want = sqlite_store.get_online_features(
        features=sqlite_store.get_feature_service("churn_model"), entity_rows=rows
    ).to_dict()
    for f in demo_world.features:
        assert got[f] == want[f]


def test_postgresql_registry_selected_by_settings(demo_world: DemoWorld) -> None:
    import uuid

    from tests.fixtures.mlflow_server import create_database, drop_database
    from training.features import apply_features
    from treeserve.features.store import (
        feature_service_entity_keys,
        feature_service_features,
        open_feature_store,
    )

    db = f"ts_feast_{uuid.uuid4().hex[:10]}"
    uri = create_database(db)
    try:
        feast = demo_world.settings.feast.model_copy(update={"registry_uri": uri, "project": "pgregistry"})
        settings = demo_world.settings.model_copy(update={"feast": feast})
        apply_features(settings)
        store = open_feature_store(settings)
        assert feature_service_features(store, "churn_model") == demo_world.features
        assert feature_service_entity_keys(store, "churn_model") == ["customer_id"]
        store.registry.teardown()
    finally:
        drop_database(db)
