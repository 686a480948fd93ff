"""What the served model was trained on: the serving version, its features and reference sample.

The serving version is what Triton's repository routes ``champion`` to (the gateway's source of
truth); when the repository has no config yet, the registry alias ``champion`` is used.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from drift.errors import ReferenceMissingError, UnknownVersionError
from treeserve import contract
from treeserve import repository as repo_format
from treeserve.registry import mlflow_client, mlflow_errors
from treeserve.repository import RepositoryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as the drift job needs it."""

    model: str
    version: str
    run_id: str
    features: list[str]
    task: str
    source: str
    """How the version was chosen: ``--version``, ``repository routing`` or ``registry alias``."""


def repository_routing(repository: Path, model: str) -> dict[str, str]:
    """Alias -> version from ``<repository>/<model>/config.pbtxt`` (empty when absent or unreadable)."""
    try:
        return repo_format.read_routing(repository, model)
    except RepositoryError as e:
        log.warning("ignoring the repository routing: %s", e)
        return {}


def _get_version(client: Any, model: str, version: str) -> Any:
    with mlflow_errors(f"registry read of {model!r}", not_found=UnknownVersionError(model, str(version))):
        return client.get_model_version(model, str(version))


def resolve_version(
    tracking_uri: str, repository: Path, model: str, version: str | None = None
) -> VersionInfo:
    """The requested version, else the one Triton's routing serves as champion, else the alias."""
    client = mlflow_client(tracking_uri)
    source = "--version"
    if version is None:
        routed = repository_routing(repository, model).get(contract.ALIAS_CHAMPION)
        if routed:
            version, source = routed, "repository routing"
        else:
            with mlflow_errors(
                f"registry read of {model!r}",
                not_found=f"model {model!r} has no serving version: no routing in {repository / model} "
                f"and no {contract.ALIAS_CHAMPION!r} alias in the registry",
            ):
                mv = client.get_model_version_by_alias(model, contract.ALIAS_CHAMPION)
            version, source = str(mv.version), "registry alias"
    mv = _get_version(client, model, str(version))
    tags = dict(mv.tags or {})
    features_json = tags.get(contract.TAG_FEATURES)
    if not features_json:
        raise ReferenceMissingError(f"model {model!r} version {version} has no {contract.TAG_FEATURES} tag")
    return VersionInfo(
        model=model,
        version=str(mv.version),
        run_id=str(mv.run_id),
        features=list(json.loads(features_json)),
        task=tags.get(contract.TAG_TASK, "binary"),
        source=source,
    )


def load_reference(tracking_uri: str, info: VersionInfo) -> pd.DataFrame:
    """The version's reference sample (features as float64 + ``score``), from its training run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="treeserve-ref-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=info.run_id, artifact_path=contract.ARTIFACT_REFERENCE_SAMPLE, dst_path=tmp
            )
        except (MlflowException, OSError) as e:
            raise ReferenceMissingError(
                f"model {info.model!r} version {info.version}: no reference sample "
                f"{contract.ARTIFACT_REFERENCE_SAMPLE} in run {info.run_id}"
            ) from e
        ref = pd.read_parquet(local)
    missing = [c for c in [*info.features, "score"] if c not in ref.columns]
    if missing:
        raise ReferenceMissingError(f"reference sample of version {info.version} lacks columns {missing}")
    out = ref[[*info.features, "score"]].astype("float64")
    return out.reset_index(drop=True)
