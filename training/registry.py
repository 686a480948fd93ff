"""The MLflow side of training: client, experiment, versions, aliases, artifacts.

MLflow exceptions are mapped here to ``ModelNotFoundError`` / ``ServiceUnavailableError``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.errors import ModelNotFoundError
from treeserve.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from treeserve.settings import Settings

log = logging.getLogger(__name__)


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the configured tracking/registry URI (also made the process default)."""
    import mlflow

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(settings: Settings, mlflow_client: MlflowClient) -> str:
    """The training experiment's id, created (with the local artifact root if local) when missing."""
    name = settings.mlflow.experiment
    exp = _call(lambda: mlflow_client.get_experiment_by_name(name), settings)
    if exp is not None:
        return str(exp.experiment_id)
    remote = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    location: str | None = None
    if settings.mlflow.artifact_root or not remote:
        root = settings.mlflow_artifact_root
        location = Path(root).resolve().as_uri() if "://" not in root else root
    return str(_call(lambda: mlflow_client.create_experiment(name, artifact_location=location), settings))


def get_version(mlflow_client: MlflowClient, model: str, version: str | int) -> ModelVersion:
    """The registered version; ``ModelNotFoundError`` naming what is missing."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(model)
    except MlflowException as e:
        raise ModelNotFoundError(f"registered model {model!r} not found") from e
    try:
        return mlflow_client.get_model_version(model, str(version))
    except MlflowException as e:
        raise ModelNotFoundError(f"model {model!r} has no version {version}") from e


def alias_version(mlflow_client: MlflowClient, model: str, alias: str) -> str | None:
    """The version behind ``alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def read_json_tag(tags: dict[str, str], key: str, default: Any) -> Any:
    """A JSON-valued tag, or ``default`` when absent or malformed."""
    try:
        return json.loads(tags[key])
    except (KeyError, ValueError):
        return default


def download_parquet(mlflow_client: MlflowClient, run_id: str, artifact_path: str) -> pd.DataFrame | None:
    """A parquet run artifact as a DataFrame, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow_client.download_artifacts(run_id, artifact_path, tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(local)


def _call(fn: Any, settings: Settings) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as e:
        raise ServiceUnavailableError(
            f"MLflow at {settings.mlflow_tracking_uri} failed: {str(e).splitlines()[0]}"
        ) from e
