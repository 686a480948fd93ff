"""Settings of the drift job, batch scoring and the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from treeserve.settings import CoreConfig, RepositoryLocation


class ScoringSettings(BaseModel):
    """Batch scoring (``treeserve score``)."""

    model_config = ConfigDict(frozen=True)

    sink: Literal["duckdb", "parquet", "postgres"] = "duckdb"
    """Where the score table goes: a DuckDB file, Parquet partitions or PostgreSQL."""
    table: str = "batch_scores"
    """Table name (DuckDB, PostgreSQL) or folder name (Parquet)."""
    duckdb_path: Path = Path("var/scores/scores.duckdb")
    """DuckDB database file (sink=duckdb)."""
    parquet_dir: Path = Path("var/scores")
    """Parquet root (sink=parquet): ``<dir>/<table>/model=<m>/score_date=<d>/part-0.parquet``."""
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    """libpq connection string (sink=postgres)."""
    chunk_size: int = Field(default=5000, ge=1)
    """Entities fetched from the online store and scored per chunk."""
    active_days: int = Field(default=90, ge=1)
    """An entity is active when it has a feature row within this many days of the newest row."""


class PipelineSettings(BaseModel):
    """The scheduled loop (``treeserve pipeline run``)."""

    model_config = ConfigDict(frozen=True)

    runs_dir: Path = Path("var/pipeline")
    """One JSON record per pipeline run (steps, timings, reasons)."""
    score_shift_threshold: float = 0.2
    """Normed Wasserstein distance between today's and the previous day's batch scores that is flagged."""
    sync_timeout_s: float = 180.0
    """How long the pipeline waits for the new champion to be served: the repository's routing
    names it and Triton reports it READY. Past it the alias is rolled back."""
    lock_timeout_s: float = 60.0
    """How long one sync pass of the pipeline waits for a running sync to release the sync lock
    (the whole wait stays within ``sync_timeout_s``)."""
    retrain_after_days: float = Field(default=7.0, ge=0)
    """Retrain, drift or not, once the champion has served this many days (weekly); 0: only on drift
    or when forced."""


class DriftSettings(BaseModel):
    """Drift detection over the prediction log."""

    model_config = ConfigDict(frozen=True)

    reports_dir: Path = Path("reports/drift")
    """Where HTML reports and JSON summaries are written."""
    share_threshold: float = 0.3
    """Drift share at or above which the verdict is 'drift' (exit code 3)."""
    alert_url: str = ""
    """If set, the alert payload is POSTed here."""
    alert_timeout_s: float = 5.0
    """Deadline for the alert POST (a failed POST is logged, the verdict stands)."""
    experiment: str = "drift-monitoring"
    """MLflow experiment that drift runs are logged to."""
    log_to_mlflow: bool = True
    """Log each run (metrics + HTML) to the MLflow experiment."""
    default_window: str = "7d"
    """Window used when neither --since nor --last is given."""
    min_rows: int = Field(default=500, ge=1)
    """Fewer rows than this in the window: no verdict (sampling noise would dominate)."""
    num_method: str = "wasserstein"
    """Evidently method for numerical features: normed Wasserstein is an effect size, not a p-value,
    so large windows do not turn negligible differences into alarms."""
    num_threshold: float = 0.25
    """Normed Wasserstein distance (in reference standard deviations) at which a feature drifted.
    Calibrated on the demo (docs/guides/drift.md): serving traffic from the training world moves
    at most 2 of 7 features past 0.25 (recency and e-mail opens: lapsed customers are served but
    never labelled), the next one stays <= 0.15; the generator's drift mode moves 6 of 7 by 0.41-0.87."""
    cat_method: str = "jensenshannon"
    """Evidently method for low-cardinality features."""
    cat_threshold: float = 0.1
    """Jensen-Shannon distance at which a low-cardinality feature drifted."""
    categorical_max_unique: int = Field(default=5, ge=1)
    """A feature with at most this many distinct reference values is compared as categorical."""
    score_method: str = "wasserstein"
    """Evidently method for the prediction score distribution."""
    score_threshold: float = 0.5
    """Normed Wasserstein distance of the prediction score reported as score drift (shown next to,
    not counted in, the feature share). Demo: training-world traffic 0.14-0.31, drift mode 0.90-1.11."""
    attribution_threshold: float = Field(default=0.1, gt=0, le=1)
    """Change of a feature's share of the total mean |TreeSHAP contribution| (window vs the
    version's reference sample) at which it is reported as attribution drift."""
    null_rate_tolerance: float = 0.1
    """Absolute increase of a feature's null rate over the reference that is flagged."""
    out_of_range_tolerance: float = 0.05
    """Share of non-null values outside the reference [min, max] that is flagged."""
    textfile_path: Path = Path("var/metrics/drift.prom")
    """Prometheus textfile-collector file with the latest drift gauges."""
    scoring: ScoringSettings = ScoringSettings()
    pipeline: PipelineSettings = PipelineSettings()


class GatewayOutputs(Protocol):
    """What drift reads of the gateway's settings: the prediction log, the feature reader and the
    missing-value policy (batch scores are the gateway's scores)."""

    @property
    def predlog_dir(self) -> Path: ...
    @property
    def feature_reader(self) -> Literal["direct", "sdk"]: ...
    @property
    def missing_policy(self) -> dict[str, Literal["impute", "fallback"]]: ...
    @property
    def default_missing_policy(self) -> Literal["impute", "fallback"]: ...
    @property
    def unknown_entity_policy(self) -> Literal["impute", "fallback"]: ...


class DriftJobConfig(CoreConfig, Protocol):
    """The settings drift jobs and batch scoring read: the core, ``drift``, the repository location
    (``exporter.repository``) and the gateway's prediction log and feature reader."""

    @property
    def drift(self) -> DriftSettings: ...
    @property
    def gateway(self) -> GatewayOutputs: ...
    @property
    def exporter(self) -> RepositoryLocation: ...
