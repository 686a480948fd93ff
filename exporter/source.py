"""Reading a registered XGBoost version out of MLflow: booster, feature contract, reference data.

Works for versions registered by ``treeserve train`` (tags + reference artifacts) and for any
XGBoost model a user logged with ``mlflow.xgboost.log_model(..., signature=...)``: the feature
list then comes from the signature, and the parity sample from the input example (or is
generated within the split-threshold ranges of the trees when there is none).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import UnsupportedModelError
from exporter.settings import ExporterConfig
from treeserve import contract, encoding, registry
from treeserve.encoding import Vocabulary
from treeserve.errors import NotFoundError, TreeserveError

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# Objectives the ONNX TreeEnsemble conversion expresses (parity still has the last word).
_CLASSIFIER_OBJECTIVES = {"binary:logistic", "multi:softprob"}
_REGRESSION_OBJECTIVES = {
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:logistic",
    "count:poisson",
    "reg:gamma",
    "reg:tweedie",
}
_REFUSAL_HINTS = {
    "binary:logitraw": "it outputs raw margins, not probabilities; log the model with binary:logistic",
    "binary:hinge": "it outputs hard 0/1 labels; log the model with binary:logistic",
    "multi:softmax": "it outputs class ids only; log the model with multi:softprob",
}


@dataclass
class SourceModel:
    """One registered version, loaded and described."""

    name: str
    version: str
    run_id: str
    booster: xgb.Booster
    """Cut to the best iteration when the model was early-stopped."""
    features: list[str]
    task: str
    n_classes: int
    objective: str
    best_iteration: int | None
    source_sha256: str
    feature_service: str = ""
    entity_keys: list[str] = field(default_factory=list)
    reference: np.ndarray | None = None
    """Real rows for parity: the run's reference sample, else the logged input example."""
    reference_origin: str = "generated"
    medians: dict[str, float] = field(default_factory=dict)
    base_rate: float | None = None
    encodings: dict[str, Vocabulary] = field(default_factory=dict)
    """String feature -> the vocabulary it was encoded with in training (``treeserve.encoding``)."""
    aliases: list[str] = field(default_factory=list)
    xgboost_json: bytes = b""


def mlflow_client(settings: ExporterConfig) -> MlflowClient:
    """An MlflowClient on the settings' tracking/registry URI."""
    return registry.mlflow_client(settings.mlflow_tracking_uri)


def resolve_version(
    client: MlflowClient, model: str, *, alias: str | None = None, version: str | int | None = None
) -> str:
    """The registry version a user named by alias or number; NotFoundError when there is none."""
    if (alias is None) == (version is None):
        raise NotFoundError("name exactly one of --alias or --version")
    what = f"alias {alias!r}" if alias is not None else f"version {version}"
    with registry.mlflow_errors(
        f"registry read of {model!r}", not_found=f"registered model {model!r} has no {what}"
    ):
        if alias is not None:
            return str(client.get_model_version_by_alias(model, alias).version)
        return str(client.get_model_version(model, str(version)).version)


def load_source_model(client: MlflowClient, model: str, version: str | int) -> SourceModel:
    """Download and describe a registered version (refuses models ONNX cannot express)."""
    version = str(version)
    with registry.mlflow_errors(
        f"registry read of {model!r}", not_found=f"registered model {model!r} has no version {version}"
    ):
        mv = client.get_model_version(model, version)
    tags = dict(mv.tags or {})
    run_id = mv.run_id or ""

    with tempfile.TemporaryDirectory(prefix="treeserve-export-") as tmp:
        local = _download_model(client, model, version, Path(tmp))
        booster, sha, mlmodel = _load_booster(local, model, version)
        signature_names, example = _signature_and_example(mlmodel, local)

    objective, n_classes, task = _describe(booster, model, version)
    features = _feature_list(tags, signature_names, booster, model, version)
    if len(features) != booster.num_features():
        raise UnsupportedModelError(
            f"model {model!r} version {version}: {len(features)} features recorded but the booster "
            f"expects {booster.num_features()}"
        )
    if tags.get(contract.TAG_TASK) and tags[contract.TAG_TASK] != task:
        log.warning(
            "task tag %s differs from objective %s; using the objective", tags[contract.TAG_TASK], objective
        )

    best = _best_iteration(booster)
    if best is not None and best + 1 < booster.num_boosted_rounds():
        booster = booster[: best + 1]

    src = SourceModel(
        name=model,
        version=version,
        run_id=run_id,
        booster=booster,
        features=features,
        task=task,
        n_classes=n_classes,
        objective=objective,
        best_iteration=best,
        source_sha256=sha,
        feature_service=tags.get(contract.TAG_FEATURE_SERVICE, ""),
        entity_keys=_json_list(tags.get(contract.TAG_ENTITY_KEYS)),
        encodings=_encodings(tags.get(contract.TAG_ENCODINGS), model, version),
        aliases=list(getattr(mv, "aliases", []) or []),
        xgboost_json=bytes(booster.save_raw("json")),
    )
    _attach_reference(client, src, example)
    return src


# ---- helpers --------------------------------------------------------------------------------


def _download_model(client: MlflowClient, model: str, version: str, dst: Path) -> Path:
    import mlflow.artifacts

    with registry.mlflow_errors(f"download of {model!r} version {version}"):
        uri = client.get_model_version_download_uri(model, version)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=str(dst),
            tracking_uri=client._tracking_client.tracking_uri,
            registry_uri=client._registry_uri,
        )
    return Path(path)


def _load_booster(local: Path, model: str, version: str) -> tuple[xgb.Booster, str, Any]:
    import xgboost as xgb
    from mlflow.models import Model

    try:
        mlmodel = Model.load(str(local))
    except Exception as e:
        raise UnsupportedModelError(
            f"model {model!r} version {version} has no readable MLmodel file: {e}"
        ) from e
    flavor = mlmodel.flavors.get("xgboost")
    if flavor is None:
        raise UnsupportedModelError(
            f"model {model!r} version {version} is not an XGBoost model "
            f"(flavours: {', '.join(sorted(mlmodel.flavors)) or 'none'})"
        )
    data = local / flavor.get("data", "model.xgb")
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    booster = xgb.Booster()
    try:
        booster.load_model(str(data))
    except xgb.core.XGBoostError as e:
        raise UnsupportedModelError(
            f"model {model!r} version {version}: XGBoost cannot load {data.name}: {e}"
        ) from e
    return booster, sha, mlmodel


def _signature_and_example(mlmodel: Any, local: Path) -> tuple[list[str] | None, Any]:
    names: list[str] | None = None
    sig = mlmodel.signature
    if sig is not None and sig.inputs is not None:
        try:
            raw = sig.inputs.input_names()
            if raw and all(isinstance(n, str) and n for n in raw):
                names = [str(n) for n in raw]
        except Exception:  # tensor-based signatures have no names
            names = None
    example = None
    try:
        example = mlmodel.load_input_example(str(local))
    except Exception as e:
        log.info("input example unreadable: %s", e)
    return names, example


def _describe(booster: xgb.Booster, model: str, version: str) -> tuple[str, int, str]:
    cfg = json.loads(booster.save_config())
    learner = cfg.get("learner", {})
    objective = learner.get("objective", {}).get("name", "")
    booster_kind = learner.get("gradient_booster", {}).get("name", "gbtree")
    params = learner.get("learner_model_param", {})
    num_class = int(float(params.get("num_class", "0") or 0))
    num_target = int(float(params.get("num_target", "1") or 1))
    where = f"model {model!r} version {version}"
    if booster_kind == "gblinear":
        raise UnsupportedModelError(f"{where}: linear booster (gblinear) is not a tree ensemble")
    if num_target > 1:
        raise UnsupportedModelError(f"{where}: multi-target models ({num_target} targets) are not supported")
    types = booster.feature_types or []
    categorical = [
        n
        for n, t in zip(booster.feature_names or [f"f{i}" for i in range(len(types))], types, strict=False)
        if t == "c"
    ]
    if categorical:
        raise UnsupportedModelError(
            f"{where}: categorical splits on {', '.join(categorical)} cannot be expressed in ONNX; "
            "one-hot or ordinal-encode them"
        )
    if objective in _REFUSAL_HINTS:
        raise UnsupportedModelError(
            f"{where}: objective {objective} is not supported: {_REFUSAL_HINTS[objective]}"
        )
    if objective in _CLASSIFIER_OBJECTIVES:
        n_classes = 2 if objective == "binary:logistic" else num_class
        return objective, n_classes, "binary" if n_classes == 2 else "multiclass"
    if objective in _REGRESSION_OBJECTIVES:
        return objective, 1, "regression"
    raise UnsupportedModelError(f"{where}: objective {objective or '?'} cannot be converted to ONNX")


def _feature_list(
    tags: dict[str, str], signature_names: list[str] | None, booster: xgb.Booster, model: str, version: str
) -> list[str]:
    tagged = _json_list(tags.get(contract.TAG_FEATURES))
    if tagged:
        return tagged
    if signature_names:
        return signature_names
    if booster.feature_names:
        return list(booster.feature_names)
    raise UnsupportedModelError(
        f"model {model!r} version {version} records no feature names (no {contract.TAG_FEATURES} tag, "
        "no named signature): log it with a signature"
    )


def _best_iteration(booster: xgb.Booster) -> int | None:
    raw = booster.attr("best_iteration")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _json_list(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return [s.strip() for s in raw.split(",") if s.strip()]
    return [str(v) for v in value] if isinstance(value, list) else []


def _attach_reference(client: MlflowClient, src: SourceModel, example: Any) -> None:
    """Reference rows, medians and base rate: run artifacts first, then the input example."""
    stats = _run_json(client, src.run_id, contract.ARTIFACT_FEATURE_STATS)
    sample = _run_parquet(client, src.run_id, contract.ARTIFACT_REFERENCE_SAMPLE)
    if sample is not None and all(f in sample.columns for f in src.features):
        src.reference = sample[src.features].to_numpy(dtype=np.float64)
        src.reference_origin = "reference_sample"
    elif example is not None:
        rows = _example_rows(example, src.features)
        if rows is not None:
            src.reference = rows
            src.reference_origin = "input_example"
    if stats:
        medians = stats.get("medians") or {}
        src.medians = {f: float(medians[f]) for f in src.features if medians.get(f) is not None}
        br = stats.get("base_rate")
        src.base_rate = float(br) if br is not None else None
    elif src.reference is not None and len(src.reference):
        with np.errstate(all="ignore"):
            med = np.nanmedian(src.reference, axis=0)
        src.medians = {f: float(m) for f, m in zip(src.features, med, strict=False) if np.isfinite(m)}


def _example_rows(example: Any, features: list[str]) -> np.ndarray | None:
    import pandas as pd

    try:
        if isinstance(example, pd.DataFrame):
            if all(f in example.columns for f in features):
                return example[features].to_numpy(dtype=np.float64)
            if example.shape[1] == len(features):
                return example.to_numpy(dtype=np.float64)
            return None
        if isinstance(example, dict):
            frame = pd.DataFrame(example)
            return _example_rows(frame, features)
        arr = np.asarray(example, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        return arr if arr.ndim == 2 and arr.shape[1] == len(features) else None
    except (ValueError, TypeError):
        return None


def _run_artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    if not run_id:
        return None
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception as e:  # a user's run simply may not have it
        log.debug("run %s has no %s: %s", run_id, path, e)
        return None


def _run_json(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        local = _run_artifact(client, run_id, path, Path(tmp))
        if local is None or not local.is_file():
            return None
        try:
            data = json.loads(local.read_text())
        except json.JSONDecodeError:
            return None
    return data if isinstance(data, dict) else None


def _run_parquet(client: MlflowClient, run_id: str, path: str) -> Any:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        local = _run_artifact(client, run_id, path, Path(tmp))
        if local is None or not local.is_file():
            return None
        return pd.read_parquet(local)


def _encodings(raw: str | None, model: str, version: str) -> dict[str, Vocabulary]:
    """The recorded string-feature encodings (``UnsupportedModelError`` when unreadable)."""
    try:
        return encoding.from_json(raw)
    except (ValueError, TreeserveError) as e:
        raise UnsupportedModelError(
            f"model {model!r} version {version}: unreadable {contract.TAG_ENCODINGS} tag: {e}"
        ) from e
