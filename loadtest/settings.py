"""Settings of the load tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

from exporter.settings import SyncConfig
from gateway.settings import GatewayConfig
from training.settings import TrainingConfig


class LoadtestMixSettings(BaseModel):
    """What the gateway users send: relative weights of the request kinds."""

    model_config = ConfigDict(frozen=True)

    single: float = Field(default=80.0, ge=0)
    """One known entity per request."""
    batch: float = Field(default=8.0, ge=0)
    """A batch of known entities (``batch_min``..``batch_max``)."""
    unknown: float = Field(default=7.0, ge=0)
    """One unknown (cold-start) entity id: the gateway must flag a fallback."""
    raw: float = Field(default=5.0, ge=0)
    """One raw-feature instance (``{"instances": [...]}``); HTTP only."""
    batch_min: int = Field(default=10, ge=1)
    batch_max: int = Field(default=100, ge=1)


class LoadtestSettings(BaseModel):
    """Headless Locust runs."""

    model_config = ConfigDict(frozen=True)

    reports_dir: Path = Path("reports/loadtest")
    """Each run writes JSON, CSV and HTML under <reports_dir>/<timestamp>/."""
    gateway_url: str = ""
    """Gateway HTTP base URL. Empty: from the gateway settings (host, port)."""
    gateway_grpc_url: str = ""
    """Gateway KServe v2 gRPC address. Empty: from the gateway settings (host, grpc_port)."""
    triton_grpc_url: str = ""
    """Triton gRPC address. Empty: from the Triton settings (host, grpc_port)."""
    api_key: str = ""
    """Bearer key sent to the gateway. Empty: the gateway's first configured key, if any."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Non-loopback hosts a load test may target (loopback is always allowed)."""
    entities_file: Path | None = None
    """Known entity ids (parquet with the entity key column, or one id per line). Empty: ``<data_dir>/customers.parquet``."""
    entity_key: str = "customer_id"
    """Entity key used when the model's repository config does not name one."""
    max_entities: int = Field(default=5000, ge=1)
    """Known ids sampled into the workload."""
    mix: LoadtestMixSettings = LoadtestMixSettings()
    users: int = Field(default=16, ge=1)
    spawn_rate: float = Field(default=16.0, gt=0)
    duration: str = "30s"
    """Run time (``30s``, ``2m``, ``1m30s``)."""
    processes: int = Field(default=1, ge=1)
    """Locust processes (>1: one master plus forked workers on this host)."""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """Client-side timeout of one request."""
    slo_p99_ms: float | None = None
    """Default p99 SLO (None: not checked)."""
    max_error_rate: float | None = Field(default=0.01, ge=0, le=1)
    """Default error-rate SLO as a fraction (0.01: a run with more than 1% errors fails; None: not
    checked)."""
    seed: int = 11
    """Seed of the workload sample."""


class LoadtestConfig(SyncConfig, GatewayConfig, TrainingConfig, Protocol):
    """The settings load tests and benchmarks read: they drive the whole stack."""

    @property
    def loadtest(self) -> LoadtestSettings: ...
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with some groups replaced (benchmarks run the stack in scratch folders)."""
        ...
