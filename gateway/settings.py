"""Settings of the FastAPI/gRPC gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from treeserve.endpoints import parse_endpoint, parse_endpoints
from treeserve.fieldtypes import Port, PortOrOff
from treeserve.settings import CoreConfig, RepositoryLocation


class GatewayTritonSettings(BaseModel):
    """How the gateway talks to Triton."""

    model_config = ConfigDict(frozen=True)

    protocol: Literal["auto", "http", "grpc"] = "auto"
    """How the gateway calls Triton: ``http`` (HTTP/1.1 keep-alive, binary tensors: ~0.4 ms and a
    quarter of the CPU less per call than gRPC, docs/operations/performance.md) or ``grpc``.
    ``auto``: ``grpc`` when only gRPC addresses are set (``grpc_url``/``grpc_urls``/``grpc_dns``),
    else ``http``. Over HTTP, let the sync load models over gRPC (``sync.triton_url`` =
    ``grpc://host:port``, the default for the local Triton): while a model loads through Triton's
    HTTP model-control API, that Triton answers no HTTP request at all (1.4 s per load measured)."""
    http_url: str = ""
    """Triton HTTP endpoint (one server; see ``http_urls`` and ``http_dns`` for
    several). Empty: the Triton started by ``treeserve triton start`` (its recorded ports), else
    ``<triton.host>:<triton.http_port>``."""
    http_urls: list[str] | None = None
    """Several Triton HTTP endpoints (JSON list), balanced and failed over like ``grpc_urls``. Unset: ``http_url``."""
    http_dns: str = ""
    """``host:port`` resolving to every Triton's HTTP port (e.g. a Kubernetes headless Service),
    re-resolved every ``dns_refresh_s``; takes precedence over ``http_urls`` and ``http_url``."""
    grpc_url: str = ""
    """Triton gRPC endpoint (one server; see ``grpc_urls`` and ``grpc_dns`` for several). Empty: the
    Triton started by ``treeserve triton start`` (its recorded ports), else ``<triton.host>:<triton.grpc_port>``."""
    grpc_urls: list[str] | None = None
    """Several Triton gRPC endpoints (JSON list): one channel each, least-outstanding-requests
    balancing, a breaker per server, an UNAVAILABLE call retried on another server. Unset: ``grpc_url``."""
    grpc_dns: str = ""
    """``host:port`` resolving to every Triton (e.g. a Kubernetes headless Service), re-resolved every
    ``dns_refresh_s``; takes precedence over ``grpc_urls`` and ``grpc_url``."""
    dns_refresh_s: float = Field(default=5.0, gt=0)
    """How often ``grpc_dns`` is resolved again (servers added and removed)."""
    timeout_s: float = 0.5
    """Deadline for one inference call (retries included)."""
    max_retries: int = Field(default=3, ge=0)
    """Retries after UNAVAILABLE, within the deadline."""
    retry_backoff_s: float = 0.01
    """Base of the jittered exponential backoff between retries."""
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed calls that open the circuit breaker."""
    breaker_reset_s: float = 2.0
    """How long the breaker stays open before one probe call is let through."""
    max_batch_size: int = Field(default=1024, ge=1)
    """Largest batch sent in one Triton call (Triton rejects batches over its max_batch_size)."""

    @field_validator("grpc_url", "grpc_dns", "http_url", "http_dns")
    @classmethod
    def _one_endpoint(cls, value: str) -> str:
        return parse_endpoint(value) if value else value

    @field_validator("grpc_urls", "http_urls")
    @classmethod
    def _endpoints(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else parse_endpoints(value)

    def has_address(self, transport: Literal["http", "grpc"]) -> bool:
        """Is any address of ``transport`` set (its ``_url``, ``_urls`` or ``_dns``)?"""
        if transport == "http":
            return bool(self.http_url or self.http_urls or self.http_dns)
        return bool(self.grpc_url or self.grpc_urls or self.grpc_dns)

    def transport(self) -> Literal["http", "grpc"]:
        """The protocol in use: ``protocol``, with ``auto`` decided by which addresses are set."""
        if self.protocol != "auto":
            return self.protocol
        return "grpc" if self.has_address("grpc") and not self.has_address("http") else "http"

    def endpoints(self) -> list[str]:
        """The configured endpoints of the transport in use (``dns()`` is resolved by the client)."""
        if self.transport() == "http":
            return list(self.http_urls) if self.http_urls is not None else [self.http_url]
        return list(self.grpc_urls) if self.grpc_urls is not None else [self.grpc_url]

    def dns(self) -> str:
        """The DNS name of the transport in use (empty: the configured endpoints)."""
        return self.http_dns if self.transport() == "http" else self.grpc_dns


class GatewaySettings(BaseModel):
    """The gateway service."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: Port = 8080
    grpc_port: PortOrOff = 8081
    """KServe v2 gRPC port (0 disables)."""
    workers: int = Field(default=1, ge=1)
    """uvicorn worker processes (one per core is the tuned setting)."""
    model: str = "churn-prediction"
    """Registered model served."""
    triton: GatewayTritonSettings = GatewayTritonSettings()
    max_entities: int = Field(default=1000, ge=1)
    """Largest request (entities, instances or pushed feature rows)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Request bodies larger than this are refused with 413."""
    entity_id_max_length: int = Field(default=128, ge=1)
    """Longest entity key value accepted."""
    entity_id_pattern: str = r"^[A-Za-z0-9_.:@\-]+$"
    """Characters an entity key value may contain."""
    feature_timeout_s: float = Field(default=1.0, gt=0)
    """Deadline for one (coalesced) online-store read; past it the requests are answered 503 (a
    Redis that went away makes its client retry for seconds)."""
    feature_reader: Literal["direct", "sdk"] = "direct"
    """direct: the online store's own ``online_read`` (Redis: one raw HMGET pipeline), checked against
    the SDK on stored entities at start-up (a mismatch stops the start, naming it); sdk:
    ``FeatureStore.get_online_features``."""
    coalesce_window_us: int = Field(default=500, ge=0, le=1000)
    """How long a batch forms while other batches of its stage run but fewer than
    ``coalesce_max_inflight`` (an idle stage sends at once, on the next event-loop pass)."""
    coalesce_max_batch: int = Field(default=512, ge=1)
    """Most rows merged into one online read or Triton call."""
    coalesce_max_inflight: int = Field(default=1, ge=0)
    """Batches of one stage running at once; while that many run, the next batch gathers requests
    until one returns, so batches grow with the load (0: no limit, send every window)."""
    missing_policy: dict[str, Literal["impute", "fallback"]] = Field(default_factory=dict)
    """Per-feature policy for missing values: impute (training median) or fallback (base rate)."""
    default_missing_policy: Literal["impute", "fallback"] = "impute"
    """Policy of features not listed in ``missing_policy``."""
    unknown_entity_policy: Literal["impute", "fallback"] = "fallback"
    """Rows with every feature missing (a cold-start entity): fallback answers the base rate."""
    risk_tiers: dict[str, float] = Field(default_factory=lambda: {"low": 0.0, "medium": 0.3, "high": 0.6})
    """Tier name -> lowest score of the tier (classifiers)."""
    challenger_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of entities (sticky by entity hash) answered by the challenger version."""
    shadow: bool = False
    """Score the challenger too and log it (route ``shadow``) without returning it."""
    routing_poll_interval_s: float = Field(default=1.0, gt=0)
    """How often the model repository's config is checked for routing changes."""
    retry_after_s: int = Field(default=1, ge=1)
    """``Retry-After`` header of 503 answers."""
    predlog_dir: Path = Path("var/predlog")
    """Prediction log Parquet segments (the drift job's input)."""
    predlog_enabled: bool = True
    """Write the prediction log."""
    predlog_fsync: Literal["never", "interval", "always"] = "interval"
    """When the write-ahead log is fsync-ed. Every answered row is written to the OS before its answer
    leaves (survives a killed process); never: no fsync (a power loss loses what the OS had not
    written); interval: every ``predlog_fsync_interval_ms`` (a power loss loses at most that);
    always: before each answer (survives a power loss)."""
    predlog_fsync_interval_ms: int = Field(default=200, ge=1)
    """fsync period of ``predlog_fsync=interval``."""
    predlog_overflow: Literal["block", "drop"] = "block"
    """What a full prediction-log queue does: the request waits (block), or is answered 503 and
    counted (drop); never an answer without a record."""
    predlog_queue_size: int = Field(default=10_000, ge=1)
    """Requests that may wait for the write-ahead writer."""
    predlog_segment_rows: int = Field(default=50_000, ge=1)
    """Rows per write-ahead segment before it rotates into Parquet."""
    predlog_segment_s: float = Field(default=60.0, gt=0)
    """Seconds before a write-ahead segment rotates into Parquet (the drift job's delay)."""
    api_keys: list[str] = Field(default_factory=list)
    """If non-empty, requests need ``Authorization: Bearer <key>``."""


class GatewayConfig(CoreConfig, Protocol):
    """The settings the gateway reads: the shared core and the ``gateway`` group."""

    @property
    def gateway(self) -> GatewaySettings: ...
    @property
    def exporter(self) -> RepositoryLocation: ...
    def model_dump_json(self) -> str:
        """The whole settings tree as JSON (``run`` hands it to its worker processes)."""
        ...
