"""Export time and parity per model type: binary, multiclass and regression XGBoost models.

Each model is trained on synthetic data (7 features, NaNs included), logged and registered in a
throw-away MLflow (SQLite), then exported with the exporter's own ``install_version`` —
download, ONNX conversion, ``onnx.checker``, parity against XGBoost, atomic install — timed over
repeated forced exports. Parity is the exporter's figure (max |ONNX − XGBoost| over reference
rows plus NaN rows).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.bench_report import median_min_max
from loadtest.settings import LoadtestConfig
from treeserve import contract
from treeserve.registry import ensure_registered_model

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "regression")
N_FEATURES = 7
N_ROWS = 4000
N_TREES = 200
MAX_DEPTH = 6
N_CLASSES_MULTI = 4


def _train(task: str, seed: int) -> tuple[Any, Any]:
    """A booster of ``task`` on synthetic data with missing values, and its training frame."""
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_ROWS, N_FEATURES))
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.5, size=N_ROWS)
    x[rng.random(x.shape) < 0.05] = np.nan
    frame = pd.DataFrame(x, columns=[f"feature_{i}" for i in range(N_FEATURES)])
    params: dict[str, Any] = {"max_depth": MAX_DEPTH, "eta": 0.1, "nthread": 1}
    if task == "binary":
        y = (logit > 0).astype(int)
        params["objective"] = "binary:logistic"
    elif task == "multiclass":
        y = np.digitize(logit, np.quantile(logit, [0.25, 0.5, 0.75]))
        params.update(objective="multi:softprob", num_class=N_CLASSES_MULTI)
    else:
        y = logit * 10.0
        params["objective"] = "reg:squarederror"
    booster = xgb.train(params, xgb.DMatrix(frame, label=y, missing=np.nan), num_boost_round=N_TREES)
    return booster, frame


def _register(settings: LoadtestConfig, client: Any, task: str, seed: int) -> tuple[str, str]:
    import mlflow
    from mlflow.models import infer_signature

    booster, frame = _train(task, seed)
    name = f"bench-export-{task}"
    import xgboost as xgb

    # No mlflow.set_experiment: it leaves a process-wide active experiment behind for later benches.
    exp = client.get_experiment_by_name("bench-export")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench-export")
    sample = frame.head(50)
    preds = booster.predict(xgb.DMatrix(sample, missing=np.nan))
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.xgboost.log_model(
            booster, name="model", signature=infer_signature(sample, preds), input_example=sample.head(5)
        )
    ensure_registered_model(client, name)
    mv = client.create_model_version(
        name,
        info.model_uri,
        run_id=info.run_id,
        tags={
            contract.TAG_FEATURES: json.dumps(list(frame.columns)),
            contract.TAG_TASK: task,
            contract.TAG_ENTITY_KEYS: json.dumps(["customer_id"]),
            contract.TAG_FEATURE_SERVICE: "bench",
        },
    )
    return name, str(mv.version)


def _export_rows(
    settings: LoadtestConfig, client: Any, repo: Path, task: str, *, seed: int, repeats: int
) -> dict[str, Any]:
    """Register one model of ``task`` and time ``repeats`` forced exports of it."""
    from exporter.install import install_version

    name, version = _register(settings, client, task, seed)
    times: list[float] = []
    installed = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        installed = install_version(settings, client, name, version, repository=repo, force=True)
        times.append(time.perf_counter() - t0)
    assert installed is not None
    onnx_files = list(installed.path.glob("*.onnx"))
    log.info(
        "export bench %s: median %.2f s, parity %.2e", task, float(np.median(times)), installed.max_abs_diff
    )
    return {
        "model type": task,
        "classes": installed.n_classes,
        "trees": N_TREES * (N_CLASSES_MULTI if task == "multiclass" else 1),
        "export s (median, min–max)": median_min_max(times),
        "parity max abs diff": installed.max_abs_diff,
        "tolerance": settings.exporter.proba_atol
        if task != "regression"
        else f"{settings.exporter.regression_rtol:g} × output scale",
        "parity rows": installed.metadata.parity.get("rows", ""),
        "ONNX KiB": round(onnx_files[0].stat().st_size / 1024, 1) if onnx_files else None,
        "flavour": installed.flavor,
    }


def run_export_bench(
    settings: LoadtestConfig | None = None, *, repeats: int = 3, seed: int = 5
) -> dict[str, Any]:
    """Export each model type ``repeats`` times; rows with time (median, min–max) and parity."""
    from exporter.source import mlflow_client
    from treeserve_app.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="treeserve-bench-export-") as tmp:
        bench_settings = load_settings(home=Path(tmp))
        if settings is not None:
            bench_settings = load_settings(home=Path(tmp), exporter=settings.exporter.model_dump())
        (Path(tmp) / "var" / "mlflow").mkdir(parents=True)
        client = mlflow_client(bench_settings)
        repo = Path(tmp) / "model_repository"
        import mlflow

        # models:/ URIs resolve through the process-wide tracking URI: point it here, then restore it.
        previous_uri = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(bench_settings.mlflow_tracking_uri)
        try:
            rows = [
                _export_rows(bench_settings, client, repo, task, seed=seed, repeats=repeats) for task in TASKS
            ]
        finally:
            mlflow.set_tracking_uri(previous_uri)
    return {
        "title": "Export time and parity per model type",
        "command": "python -m loadtest.bench --only export",
        "description": (
            f"Synthetic data ({N_ROWS} rows, {N_FEATURES} features, 5 % missing), {N_TREES} rounds of depth "
            f"{MAX_DEPTH}; each export is the exporter's `install_version` (MLflow download → ONNX → "
            f"onnx.checker → parity vs XGBoost → atomic install), forced {repeats}×."
        ),
        "rows": rows,
        "metrics": {f"export_s_{r['model type']}": r["export s (median, min–max)"]["median"] for r in rows}
        | {f"parity_max_abs_diff_{r['model type']}": r["parity max abs diff"] for r in rows},
    }
