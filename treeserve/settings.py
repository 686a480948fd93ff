"""The settings every package shares: MLflow, Feast, the data set, home-relative paths.

The root settings tree (``treeserve_app.settings.Settings``) extends ``CoreSettings`` with one
group per package; packages never import it. A package types what it reads with a ``Protocol``
built on ``CoreConfig`` (``training.settings.TrainingConfig``, ``exporter.settings.SyncConfig``,
...), which the root settings satisfy.

Environment variables use the prefix ``TREESERVE_`` and ``__`` between levels, e.g.
``TREESERVE_FEAST__ONLINE_STORE=redis`` or ``TREESERVE_GATEWAY__TRITON__GRPC_URL=127.0.0.1:8001``.
The standard ``MLFLOW_TRACKING_URI`` is honoured when set. Settings are built once at an entry
point (``load_settings``) and passed down; nothing deep inside reads the environment.

Relative paths are resolved against ``home`` (``TREESERVE_HOME``; default: the checkout this
package runs from, else the working directory). A malformed value is one ``ConfigError`` naming the
variable and the accepted values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from treeserve.errors import ConfigError
from treeserve.settings_errors import describe_settings_error, describe_validation_error

ENV_PREFIX = "TREESERVE_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def default_home() -> Path:
    """The checkout this package runs from (it holds ``pyproject.toml``), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() and (here / "feature_repo").is_dir() else Path.cwd()


class MlflowSettings(BaseModel):
    """Where the MLflow tracking server and model registry live."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str = ""
    """Tracking/registry URI. Empty: ``sqlite:///<home>/var/mlflow/mlflow.db``. ``MLFLOW_TRACKING_URI`` wins."""
    artifact_root: str = ""
    """Artifact location for new experiments. Empty: ``<home>/var/mlflow/artifacts``."""
    experiment: str = "churn-training"
    """Experiment that training runs are logged to."""
    model_name: str = "churn-prediction"
    """Registered model the demo trains, serves and monitors."""


class FeastSettings(BaseModel):
    """The Feast repository and its stores."""

    model_config = ConfigDict(frozen=True)

    repo_path: Path = Path("feature_repo")
    """Folder with the Feast definitions (no side effects on import)."""
    project: str = "treeserve"
    """Feast project name."""
    feature_service: str = "churn_model"
    """FeatureService that defines the model's input features in order."""
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """Online store type. Production: redis."""
    sqlite_path: Path = Path("var/feast/online.db")
    """SQLite online store file (online_store=sqlite)."""
    redis_connection_string: str = "127.0.0.1:6379"
    """Feast Redis connection string (online_store=redis), e.g. ``127.0.0.1:6379,db=0``."""
    redis_type: Literal["redis", "redis_cluster", "redis_sentinel"] = "redis"
    """Feast Redis deployment type; cluster: ``host1:port1,host2:port2`` in the connection string."""
    redis_key_ttl_s: int | None = None
    """Optional TTL for online rows in Redis."""
    registry_uri: str = ""
    """SQL registry URI. Empty: ``sqlite:///<home>/var/feast/registry.db``. PostgreSQL: ``postgresql+psycopg2://…``."""
    registry_cache_ttl_s: int = 60
    """How long a FeatureStore trusts its cached registry."""


class DataSettings(BaseModel):
    """The demo data set."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Path("var/data")
    """Where the generator writes parquet files and the Feast sources read them."""
    n_customers: int = Field(default=20_000, ge=100)
    """Number of customers the demo generator creates."""
    n_days: int = Field(default=120, ge=30)
    """Length of the daily snapshot history."""
    seed: int = 7
    """Generator seed."""


class CoreSettings(BaseSettings):
    """The shared part of the root settings: home, logging, MLflow, Feast, data; resolved locations."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    home: Path = Field(default_factory=default_home)
    """Base folder for relative paths: state lives in ``<home>/var``. Default: the checkout."""
    log_level: LogLevel = "INFO"
    """Logging level of services; one-shot CLI commands log at WARNING unless this is set or ``-v`` is
    given. Case-insensitive."""
    log_json: bool = False
    """Emit one JSON object per log line (services in production; ``treeserve --log-json`` for one command)."""
    mlflow: MlflowSettings = MlflowSettings()
    feast: FeastSettings = FeastSettings()
    data: DataSettings = DataSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _standard_env(cls, data: Any) -> Any:
        # MLFLOW_TRACKING_URI is the standard variable users already export: honour it.
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri and isinstance(data, dict):
            mlflow = dict(data.get("mlflow") or {})
            mlflow.setdefault("tracking_uri", uri)
            data["mlflow"] = mlflow
        return data

    # ---- resolved locations -------------------------------------------------------------
    def path(self, p: Path | str) -> Path:
        """Resolve a settings path against ``home``."""
        p = Path(p)
        return p if p.is_absolute() else (self.home / p)

    @property
    def var_dir(self) -> Path:
        """Local state (databases, logs, pid files)."""
        return self.home / "var"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The effective MLflow tracking URI."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{self.var_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        """The artifact location for experiments treeserve creates."""
        return self.mlflow.artifact_root or str(self.var_dir / "mlflow" / "artifacts")

    @property
    def feast_registry_uri(self) -> str:
        """The effective Feast SQL registry URI."""
        return self.feast.registry_uri or f"sqlite:///{self.var_dir / 'feast' / 'registry.db'}"


S = TypeVar("S", bound=CoreSettings)


def build_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; malformed values become one ConfigError naming the variable."""
    try:
        return cls(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(cls, e, prefix=ENV_PREFIX)) from e
    except SettingsError as e:
        raise ConfigError(describe_settings_error(cls, e, prefix=ENV_PREFIX)) from e


class RepositoryLocation(Protocol):
    """What other packages read of the exporter's settings: where the Triton model repository is."""

    @property
    def repository(self) -> Path: ...


class CoreConfig(Protocol):
    """What every package may read from the root settings (``CoreSettings`` provides it)."""

    @property
    def home(self) -> Path: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_json(self) -> bool: ...
    @property
    def mlflow(self) -> MlflowSettings: ...
    @property
    def feast(self) -> FeastSettings: ...
    @property
    def data(self) -> DataSettings: ...
    @property
    def var_dir(self) -> Path: ...
    @property
    def mlflow_tracking_uri(self) -> str: ...
    @property
    def mlflow_artifact_root(self) -> str: ...
    @property
    def feast_registry_uri(self) -> str: ...
    def path(self, p: Path | str) -> Path: ...
