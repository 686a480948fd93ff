"""Open the Feast feature store from settings, and read a FeatureService's contract.

Everyone gets a store through ``open_feature_store(settings)``: the ``RepoConfig`` is built in
code (SQLite or Redis online store, SQL registry on SQLite or PostgreSQL, DuckDB offline store),
so ``feature_repo/feature_store.yaml`` is only for the plain ``feast`` CLI.

``load_definitions(settings)`` imports the Feast objects of ``feature_repo/`` for the configured
data folder (each module there may expose ``definitions(data_dir) -> list``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeserve.encoding import Vocabulary, from_field_tags
from treeserve.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from treeserve.settings import CoreConfig

log = logging.getLogger(__name__)


def _skip_typeguard_instrumentation() -> None:
    """Make ``typeguard.typechecked`` a no-op before Feast is imported.

    Feast decorates its core classes with ``@typechecked``, which re-parses and recompiles their
    source at import time: ~8 s of CPU per process on this machine (``import feast`` 12 s -> 5 s).
    The checks only validate argument types; treeserve passes the types Feast expects.
    """
    if "feast" in sys.modules:
        return
    try:
        import typeguard
    except ImportError:  # pragma: no cover - typeguard is a Feast dependency
        return

    def typechecked(target: Any = None, **_kwargs: Any) -> Any:
        return target if target is not None else (lambda t: t)

    typeguard.typechecked = typechecked  # type: ignore[assignment]


_skip_typeguard_instrumentation()


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def feature_repo_path(settings: CoreConfig) -> Path:
    """The Feast repository folder: relative to ``home``, else the one shipped with treeserve."""
    configured = settings.feast.repo_path
    path = settings.path(configured)
    if not path.is_dir() and not configured.is_absolute() and (_PROJECT_ROOT / configured).is_dir():
        return _PROJECT_ROOT / configured
    return path


def online_store_config(settings: CoreConfig) -> dict[str, Any]:
    """The Feast ``online_store`` block for the configured store type."""
    feast = settings.feast
    if feast.online_store == "redis":
        cfg: dict[str, Any] = {
            "type": "redis",
            "redis_type": feast.redis_type,
            "connection_string": feast.redis_connection_string,
        }
        if feast.redis_key_ttl_s:
            cfg["key_ttl_seconds"] = feast.redis_key_ttl_s
        return cfg
    path = settings.path(feast.sqlite_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"type": "sqlite", "path": str(path)}


def repo_config(settings: CoreConfig) -> RepoConfig:
    """Build the Feast ``RepoConfig`` from settings (no YAML file involved)."""
    from feast.repo_config import RepoConfig

    registry_uri = settings.feast_registry_uri
    if registry_uri.startswith("sqlite:///"):
        Path(registry_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return RepoConfig(
            project=settings.feast.project,
            provider="local",
            registry={
                "registry_type": "sql",
                "path": registry_uri,
                "cache_ttl_seconds": settings.feast.registry_cache_ttl_s,
                "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
            },
            online_store=online_store_config(settings),
            offline_store={"type": "duckdb"},
            entity_key_serialization_version=3,
            repo_path=feature_repo_path(settings),
        )
    except Exception as e:  # pydantic / feast validation
        raise ConfigError(f"invalid Feast configuration: {str(e).splitlines()[0]}") from e


def open_feature_store(settings: CoreConfig) -> FeatureStore:
    """A ``feast.FeatureStore`` for the configured registry, online and offline stores."""
    from feast import FeatureStore

    config = repo_config(settings)
    try:
        return FeatureStore(config=config, repo_path=str(config.repo_path))
    except Exception as e:
        raise ConfigError(f"cannot open the Feast store: {str(e).splitlines()[0]}") from e


def load_definitions(settings: CoreConfig) -> list[Any]:
    """The Feast objects defined in ``feast.repo_path`` for the configured data folder."""
    repo = feature_repo_path(settings)
    if not repo.is_dir():
        raise NotFoundError(f"Feast repository {repo} does not exist")
    data_dir = settings.path(settings.data.data_dir).resolve()
    objects: list[Any] = []
    for file in sorted(repo.glob("*.py")):
        if file.name.startswith("_"):
            continue
        name = f"_treeserve_feature_repo_{file.stem}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        build = getattr(module, "definitions", None)
        if callable(build):
            objects.extend(build(data_dir))
    if not objects:
        raise ConfigError(f"no Feast definitions (a `definitions(data_dir)` function) in {repo}")
    return objects


def feature_service_features(store: FeatureStore, name: str) -> list[str]:
    """The FeatureService's features in model input order, as bare names."""
    service = _feature_service(store, name)
    names = [f.name for proj in service.feature_view_projections for f in proj.features]
    if len(set(names)) != len(names):
        raise ConfigError(f"FeatureService {name!r} has duplicate bare feature names: {names}")
    return names


def feature_service_feature_refs(store: FeatureStore, name: str) -> list[str]:
    """The FeatureService's features as ``view:feature`` references, in model input order."""
    service = _feature_service(store, name)
    return [
        f"{proj.name_to_use()}:{f.name}" for proj in service.feature_view_projections for f in proj.features
    ]


def feature_service_encodings(store: FeatureStore, name: str) -> dict[str, Vocabulary]:
    """The encodings the FeatureService's string features declare (feature -> vocabulary)."""
    service = _feature_service(store, name)
    out: dict[str, Vocabulary] = {}
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        declared = {f.name: f for f in view.features}
        for f in proj.features:
            field = declared.get(f.name, f)
            enc = from_field_tags(f.name, dict(field.tags or {}))
            if enc is not None:
                out[f.name] = enc
    return out


def feature_service_views(store: FeatureStore, name: str) -> list[tuple[str, float, list[str]]]:
    """Per FeatureView of the service: (view name, TTL in seconds (0: none), its features)."""
    service = _feature_service(store, name)
    out = []
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        out.append((proj.name, ttl, [f.name for f in proj.features]))
    return out


def feature_service_entity_keys(store: FeatureStore, name: str) -> list[str]:
    """The join keys a caller must supply to read the FeatureService (e.g. ``["customer_id"]``)."""
    service = _feature_service(store, name)
    keys: list[str] = []
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        for column in view.entity_columns:
            key = proj.join_key_map.get(column.name, column.name)
            if key not in keys:
                keys.append(key)
    return keys


def _feature_service(store: FeatureStore, name: str) -> Any:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(name)
    except FeatureServiceNotFoundException as e:
        raise NotFoundError(
            f"Feast FeatureService {name!r} not found in project {store.project!r} "
            "(run `treeserve features apply`)"
        ) from e
