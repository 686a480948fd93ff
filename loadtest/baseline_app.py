"""The benchmark's baseline: the common FastAPI pattern for serving a tree model with Feast.

Per request: Feast SDK ``get_online_features`` for one entity, a one-row pandas DataFrame (string
features encoded by the vocabulary the FeatureService declares, as the model was trained), and
in-process XGBoost ``predict_proba`` of the champion loaded from the MLflow registry. A sync
endpoint (FastAPI runs it on its thread pool), the way most tutorials write it. Run it fairly
tuned: one uvicorn worker per core and ``OMP_NUM_THREADS=1``::

    OMP_NUM_THREADS=1 uvicorn loadtest.baseline_app:create_app --factory --workers 2 --port 8090

Settings come from the environment (``TREESERVE_*``, like every treeserve service).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from loadtest.settings import LoadtestConfig

log = logging.getLogger(__name__)


class BaselineRequest(BaseModel):
    """One entity."""

    customer_id: str


def _load_model(settings: LoadtestConfig) -> Any:
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    uri = f"models:/{settings.mlflow.model_name}@champion"
    model = mlflow.xgboost.load_model(uri)
    if not hasattr(model, "predict_proba"):
        # Logged as a native Booster: wrap it like an sklearn classifier (what tutorials do).
        import xgboost as xgb

        clf = xgb.XGBClassifier()
        clf._Booster = model
        clf.n_classes_ = 2
        model = clf
    return model


def create_app() -> FastAPI:
    """The baseline app (uvicorn factory)."""
    import pandas as pd

    from treeserve.features.store import (
        feature_service_encodings,
        feature_service_features,
        open_feature_store,
    )
    from treeserve_app.settings import load_settings

    settings = load_settings()
    store = open_feature_store(settings)
    service_name = settings.feast.feature_service
    features = feature_service_features(store, service_name)
    encodings = feature_service_encodings(store, service_name)
    model = _load_model(settings)
    app = FastAPI(title="baseline: per-request Feast + DataFrame + XGBoost")

    @app.post("/predict")
    def predict(req: BaselineRequest) -> dict[str, Any]:
        online = store.get_online_features(
            features=store.get_feature_service(service_name),
            entity_rows=[{"customer_id": req.customer_id}],
        ).to_dict()
        row = {f: [encodings[f].code(online[f][0]) if f in encodings else online[f][0]] for f in features}
        frame = pd.DataFrame(row, dtype="float64")
        score = float(model.predict_proba(frame)[0, 1])
        return {"customer_id": req.customer_id, "score": score}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
