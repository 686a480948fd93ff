"""What the gateway serves, read from the Triton model repository (its single source of truth).

For each served model: the routing (alias -> version) and feature contract from ``config.pbtxt``
``parameters``, and each routed version's ``treeserve.json`` (task, features, medians, base rate).
The skew guard lives here: a version whose recorded feature list, or string encoding
(``treeserve.encoding``), differs from the FeatureService's is marked not servable, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from treeserve import encoding
from treeserve import repository as repo_format
from treeserve.encoding import Vocabulary
from treeserve.repository import fingerprint

__all__ = [
    "ModelView",
    "RepositoryConfig",
    "VersionInfo",
    "fingerprint",
    "read_repository_config",
    "read_version_info",
    "skew_problem",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """One model version as recorded in its Triton version directory."""

    version: str
    task: str
    n_classes: int
    features: tuple[str, ...]
    medians: dict[str, float]
    base_rate: float
    encodings: Mapping[str, Vocabulary] = field(default_factory=dict)
    """String feature -> the vocabulary the version was trained with."""
    servable: bool = True
    problem: str = ""
    """Why the version is not servable (empty when it is)."""
    explainer: bool = False
    """Its explainer companion (``<model>__explain``, same version) is installed."""


@dataclass(frozen=True)
class ModelView:
    """One served model: contract, routing and the routed versions."""

    name: str
    feature_service: str
    features: tuple[str, ...]
    """The FeatureService's ordered features (what the gateway reads and sends)."""
    entity_keys: tuple[str, ...]
    routing: dict[str, str]
    versions: dict[str, VersionInfo] = field(default_factory=dict)
    routing_generation: int = 0
    """The routing's change counter (0: a config written before the counter existed)."""
    problem: str = ""
    """Why the model cannot be served at all (empty when it can)."""
    encodings: Mapping[str, Vocabulary] = field(default_factory=dict)
    """The FeatureService's string features -> their vocabulary (instances may send the string)."""

    def version_for(self, alias: str) -> VersionInfo | None:
        """The servable version behind ``alias``, if any."""
        v = self.routing.get(alias)
        info = self.versions.get(v) if v is not None else None
        return info if info is not None and info.servable else None


@dataclass(frozen=True)
class RepositoryConfig:
    """The treeserve parameters of a model's ``config.pbtxt``."""

    features: tuple[str, ...]
    routing: dict[str, str]
    feature_service: str
    entity_keys: tuple[str, ...]
    routing_generation: int = 0


def read_repository_config(repository: Path, model: str) -> RepositoryConfig:
    """Parse ``<repository>/<model>/config.pbtxt`` (routing, features, feature service, entity keys)."""
    cfg = repo_format.read_model_config(repository, model)
    return RepositoryConfig(
        features=tuple(cfg.features),
        routing=cfg.routing,
        routing_generation=cfg.routing_generation,
        feature_service=cfg.feature_service,
        entity_keys=tuple(cfg.entity_keys),
    )


def read_version_info(repository: Path, model: str, version: str) -> VersionInfo:
    """Read ``<model>/<version>/treeserve.json`` (OSError when absent, RepositoryError when malformed)."""
    meta = repo_format.load_version_metadata(repo_format.version_dir(repository, model, version))
    return VersionInfo(
        version=str(version),
        task=meta.task,
        n_classes=meta.n_classes,
        features=meta.features,
        medians=dict(meta.medians),
        base_rate=meta.base_rate,
        explainer=int(version) in repo_format.explainer_versions(repository, model),
        encodings=dict(meta.encodings),
    )


def skew_problem(
    version: VersionInfo,
    service_features: tuple[str, ...],
    feature_service: str,
    service_encodings: Mapping[str, Vocabulary] | None = None,
) -> str:
    """The skew guard: '' when the version's feature list and encodings equal the FeatureService's."""
    if tuple(version.features) != tuple(service_features):
        return (
            f"version {version.version} was trained on features {list(version.features)} but "
            f"FeatureService {feature_service!r} now lists {list(service_features)}"
        )
    differs = encoding.mismatch(version.encodings, service_encodings or {})
    if differs:
        return f"version {version.version} encodes features differently from FeatureService {feature_service!r}: {differs}"
    return ""
