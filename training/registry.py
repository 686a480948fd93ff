"""The MLflow side of training: client, experiment, versions, aliases, artifacts.

The client and the error mapping come from ``treeserve.registry``; lookups name what is missing
with ``ModelNotFoundError``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import ModelNotFoundError
from treeserve.errors import NotFoundError, TreeserveError
from treeserve.registry import mlflow_client, mlflow_errors
from treeserve.registry import registry_client as _registry_client

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from training.settings import TrainingConfig
    from treeserve.registry_clients import ModelVersionRecord, RegistryClient

log = logging.getLogger(__name__)


def client(settings: TrainingConfig) -> MlflowClient:
    """An MlflowClient on the configured tracking/registry URI (also made the process default)."""
    import mlflow

    uri = settings.mlflow_tracking_uri
    mlflow_client_ = mlflow_client(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow_client_


def registry_client(settings: TrainingConfig) -> RegistryClient:
    """A registry client for lookups and alias/tag moves that does not import MLflow (see
    ``treeserve.registry.registry_client``); ``client`` for anything else."""
    return _registry_client(settings.mlflow_tracking_uri)


def experiment_id(settings: TrainingConfig, mlflow_client: MlflowClient) -> str:
    """The training experiment's id, created (with the local artifact root if local) when missing."""
    name = settings.mlflow.experiment
    with mlflow_errors(f"at {settings.mlflow_tracking_uri}"):
        exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    remote = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    location: str | None = None
    if settings.mlflow.artifact_root or not remote:
        root = settings.mlflow_artifact_root
        location = Path(root).resolve().as_uri() if "://" not in root else root
    with mlflow_errors(f"at {settings.mlflow_tracking_uri}"):
        return str(mlflow_client.create_experiment(name, artifact_location=location))


def get_version(
    mlflow_client: RegistryClient | MlflowClient, model: str, version: str | int
) -> ModelVersion | ModelVersionRecord:
    """The registered version; ``ModelNotFoundError`` naming what is missing."""
    with mlflow_errors(
        f"registry read of {model!r}", not_found=ModelNotFoundError(f"registered model {model!r} not found")
    ):
        mlflow_client.get_registered_model(model)
    with mlflow_errors(
        f"registry read of {model!r}",
        not_found=ModelNotFoundError(f"model {model!r} has no version {version}"),
    ):
        return mlflow_client.get_model_version(model, str(version))


def alias_version(mlflow_client: RegistryClient | MlflowClient, model: str, alias: str) -> str | None:
    """The version behind ``alias``, or None when the alias is not set."""
    try:
        with mlflow_errors(f"registry read of {model!r}", not_found=f"no alias {alias!r}"):
            return str(mlflow_client.get_model_version_by_alias(model, alias).version)
    except NotFoundError:
        return None


def read_json_tag(tags: dict[str, str], key: str, default: Any) -> Any:
    """A JSON-valued tag, or ``default`` when absent or malformed."""
    try:
        return json.loads(tags[key])
    except (KeyError, ValueError):
        return default


def download_parquet(mlflow_client: MlflowClient, run_id: str, artifact_path: str) -> pd.DataFrame | None:
    """A parquet run artifact as a DataFrame, or None when the run has no such artifact."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with mlflow_errors(f"download of {artifact_path}"):
                local = mlflow_client.download_artifacts(run_id, artifact_path, tmp)
        except TreeserveError:
            return None
        return pd.read_parquet(local)
