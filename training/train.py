"""``train``: Feast historical features -> XGBoost (early stopping) -> MLflow run -> registered version.

The logged model is a native ``xgboost.Booster`` (``mlflow.xgboost``, not a pickle), cut to its
best iteration so every consumer (pyfunc, ONNX export, Triton) sees the same trees;
``booster.predict(DMatrix)`` returns P(churn). Feature names on the booster are the real names.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import registry
from training.dataset import TrainingSet, build_training_set, read_labels
from training.errors import TrainingDataError
from treeserve import contract, encoding, interrupts
from treeserve.features.store import open_feature_store

if TYPE_CHECKING:
    import xgboost as xgb

    from training.settings import TrainingConfig

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """The registered version and how it scored."""

    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    features: list[str]
    fingerprint: dict[str, Any]
    elapsed_s: float
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """Row indices of the three disjoint parts."""

    train: np.ndarray
    val: np.ndarray
    holdout: np.ndarray


def split_rows(n: int, *, val_fraction: float, holdout_fraction: float, seed: int) -> Split:
    """A seeded random split into train / validation (early stopping, metrics) / holdout (gate)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_hold = max(1, int(n * val_fraction)), max(1, int(n * holdout_fraction))
    if n - n_val - n_hold < 10:
        raise TrainingDataError(f"{n} labelled rows are too few to train")
    return Split(
        train=np.sort(order[n_val + n_hold :]),
        val=np.sort(order[:n_val]),
        holdout=np.sort(order[n_val : n_val + n_hold]),
    )


def fit_booster(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    settings: TrainingConfig,
) -> tuple[xgb.Booster, int]:
    """Train with early stopping on validation log-loss; return the booster cut to its best iteration."""
    import xgboost as xgb

    t = settings.training
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "eta": t.learning_rate,
        "max_depth": t.max_depth,
        "min_child_weight": 5.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "tree_method": "hist",
        "nthread": t.n_threads,
        "seed": t.seed,
    }
    dtrain = xgb.DMatrix(X_train, label=y_train, missing=np.nan)
    dval = xgb.DMatrix(X_val, label=y_val, missing=np.nan)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=t.n_estimators,
        evals=[(dval, "val")],
        early_stopping_rounds=t.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    best_booster = booster[: best + 1]
    best_booster.feature_names = list(X_train.columns)
    return best_booster, best


def predict(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
    """P(positive) for each row."""
    import xgboost as xgb

    return np.asarray(booster.predict(xgb.DMatrix(X, missing=np.nan)), dtype=np.float64)


def binary_metrics(y: np.ndarray, p: np.ndarray, *, prefix: str) -> dict[str, float]:
    """ROC-AUC, average precision, log-loss and F1 at 0.5."""
    from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

    if len(np.unique(y)) < 2:
        raise TrainingDataError(f"{prefix} rows hold a single class; cannot score")
    return {
        f"{prefix}_roc_auc": float(roc_auc_score(y, p)),
        f"{prefix}_avg_precision": float(average_precision_score(y, p)),
        f"{prefix}_log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))),
        f"{prefix}_f1": float(f1_score(y, (p >= 0.5).astype(int), zero_division=0)),
    }


def feature_stats(ts: TrainingSet, rows: np.ndarray) -> dict[str, Any]:
    """Per-feature medians (cold-start imputation) and the base rate, over the training rows."""
    X = ts.X.iloc[rows]
    medians = {}
    for f in ts.features:
        m = X[f].median(skipna=True)
        medians[f] = float(m) if pd.notna(m) else 0.0
    return {
        "features": ts.features,
        "medians": medians,
        "null_rates": {f: float(X[f].isna().mean()) for f in ts.features},
        "base_rate": float(ts.y[rows].mean()),
        "n_rows": len(rows),
    }


def train(settings: TrainingConfig, *, progress: Progress | None = None) -> TrainResult:
    """Build the training set from Feast, fit, log to MLflow and register a new version."""
    started = time.perf_counter()

    def step(message: str) -> None:
        log.debug("train: %s", message)
        if progress is not None:
            progress(message)

    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        return time.perf_counter()

    t0 = time.perf_counter()
    step("reading labels and point-in-time features from Feast")
    labels = read_labels(settings)
    store = open_feature_store(settings)
    ts = build_training_set(store, labels, settings.feast.feature_service)
    if len(np.unique(ts.y)) < 2:
        raise TrainingDataError("labels hold a single class; cannot train a classifier")
    t0 = lap("features", t0)

    step(f"fitting XGBoost on {len(ts.frame)} rows")
    t = settings.training
    split = split_rows(
        len(ts.frame), val_fraction=t.val_fraction, holdout_fraction=t.holdout_fraction, seed=t.seed
    )
    X, y = ts.X, ts.y
    booster, best_iteration = fit_booster(
        X.iloc[split.train], y[split.train], X.iloc[split.val], y[split.val], settings
    )
    p_val = predict(booster, X.iloc[split.val])
    p_hold = predict(booster, X.iloc[split.holdout])
    metrics = binary_metrics(y[split.val], p_val, prefix="val")
    metrics.update(binary_metrics(y[split.holdout], p_hold, prefix="holdout"))
    metrics["best_iteration"] = float(best_iteration)
    t0 = lap("fit", t0)

    step("logging the run and registering the model in MLflow")
    run_id, version = _log_and_register(settings, ts, split, booster, metrics, best_iteration)
    lap("mlflow", t0)
    elapsed = time.perf_counter() - started
    log.info(
        "trained model=%s version=%s run_id=%s val_roc_auc=%.4f best_iteration=%d elapsed_s=%.1f",
        settings.mlflow.model_name,
        version,
        run_id,
        metrics["val_roc_auc"],
        best_iteration,
        elapsed,
    )
    return TrainResult(
        model_name=settings.mlflow.model_name,
        version=version,
        run_id=run_id,
        metrics=metrics,
        features=ts.features,
        fingerprint=ts.fingerprint(),
        elapsed_s=elapsed,
        timings_s=timings,
    )


def _register_version(client: Any, model_name: str, info: Any, run_id: str, tags: dict[str, str]) -> str:
    """Register the logged model as a new version, tags included, in one step Ctrl-C cannot split.

    A SIGINT that arrives meanwhile is held until the version exists, which is then deleted: an
    interrupted train never leaves a version behind (nor one without its contract tags).
    """
    from mlflow.exceptions import MlflowException

    with interrupts.deferred() as sigint:
        try:
            client.create_registered_model(model_name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        mv = client.create_model_version(
            model_name, source=info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
        )
        if sigint.received:
            client.delete_model_version(model_name, mv.version)
            log.info("interrupted: deleted model=%s version=%s", model_name, mv.version)
    # From here on, Ctrl-C leaves the version registered: the "interrupted" message says so.
    interrupts.completed(f"registering {model_name} version {mv.version}, which stays registered")
    return str(mv.version)


def _log_and_register(
    settings: TrainingConfig,
    ts: TrainingSet,
    split: Split,
    booster: xgb.Booster,
    metrics: dict[str, float],
    best_iteration: int,
) -> tuple[str, str]:
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    mlflow_client = registry.client(settings)
    exp_id = registry.experiment_id(settings, mlflow_client)
    model_name = settings.mlflow.model_name
    t = settings.training
    fingerprint = ts.fingerprint()
    X = ts.X
    stats = feature_stats(ts, split.train)

    rng = np.random.default_rng(t.seed)
    ref_rows = np.sort(rng.choice(split.train, size=min(t.reference_rows, len(split.train)), replace=False))
    reference = X.iloc[ref_rows].astype(np.float64).reset_index(drop=True)
    reference["label"] = ts.y[ref_rows]
    reference["score"] = predict(booster, X.iloc[ref_rows])
    holdout = X.iloc[split.holdout].astype(np.float64).reset_index(drop=True)
    holdout["label"] = ts.y[split.holdout]

    complete = X.iloc[split.train].dropna()
    example = (complete if len(complete) else X.iloc[split.train].fillna(0.0)).head(5).astype(np.float64)
    signature = infer_signature(example, predict(booster, example))

    tags = {
        contract.TAG_FEATURES: json.dumps(ts.features),
        contract.TAG_FEATURE_SERVICE: ts.feature_service,
        contract.TAG_ENTITY_KEYS: json.dumps(ts.entity_keys),
        contract.TAG_ENCODINGS: encoding.to_json(ts.encodings),
        contract.TAG_TASK: "binary",
        "treeserve.dataset.rows": str(fingerprint["rows"]),
        "treeserve.dataset.start": fingerprint["start"],
        "treeserve.dataset.end": fingerprint["end"],
        "treeserve.dataset.sha256": fingerprint["sha256"],
        "treeserve.feast.project": settings.feast.project,
    }
    params = {
        "feature_service": ts.feature_service,
        "n_features": len(ts.features),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_holdout": len(split.holdout),
        "n_estimators": t.n_estimators,
        "early_stopping_rounds": t.early_stopping_rounds,
        "learning_rate": t.learning_rate,
        "max_depth": t.max_depth,
        "seed": t.seed,
        "best_iteration": best_iteration,
        "dataset_rows": fingerprint["rows"],
        "dataset_start": fingerprint["start"],
        "dataset_end": fingerprint["end"],
        "dataset_sha256": fingerprint["sha256"],
        "xgboost_version": xgb.__version__,
    }
    run_name = f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        mlflow.log_dict({"features": ts.features, **fingerprint}, "dataset/fingerprint.json")
        with tempfile.TemporaryDirectory() as tmp:
            for frame, artifact in (
                (reference, contract.ARTIFACT_REFERENCE_SAMPLE),
                (holdout, contract.ARTIFACT_HOLDOUT),
            ):
                local = Path(tmp) / Path(artifact).name
                frame.to_parquet(local, index=False)
                mlflow.log_artifact(str(local), artifact_path=str(Path(artifact).parent))
        mlflow.log_dict(stats, contract.ARTIFACT_FEATURE_STATS)
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=[f"xgboost=={xgb.__version__}", f"mlflow=={mlflow.__version__}"],
        )
        run_id = run.info.run_id
    version_tags = {**tags, "treeserve.val_roc_auc": f"{metrics['val_roc_auc']:.6f}"}
    version = _register_version(mlflow_client, model_name, info, run_id, version_tags)
    return run_id, version
