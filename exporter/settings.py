"""Settings of the exporter, the local Triton launcher and the promotion sync."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from treeserve.endpoints import parse_admin_endpoint, parse_admin_endpoints
from treeserve.fieldtypes import Port
from treeserve.settings import CoreConfig


class ExporterSettings(BaseModel):
    """How a registered version becomes a Triton model version."""

    model_config = ConfigDict(frozen=True)

    repository: Path = Path("model_repository")
    """Triton model repository the exporter writes."""
    flavor: Literal["python-ort", "onnxruntime", "fil"] = "python-ort"
    """Which Triton flavour to render: python-ort (local), onnxruntime (NGC CPU), fil (NGC GPU)."""
    max_batch_size: int = Field(default=1024, ge=1)
    """Largest batch Triton accepts in one request/execution."""
    max_queue_delay_us: int = Field(default=200, ge=0)
    """Dynamic batching queue delay."""
    dynamic_batching: bool = True
    """Turn Triton's dynamic batcher on."""
    instance_count: int = Field(default=1, ge=1)
    """Model instances per Triton server."""
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"
    """Where instances run."""
    ort_intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime intra-op threads per instance (0 = ORT default)."""
    ort_inter_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime inter-op threads per instance."""
    proba_atol: float = 1e-5
    """Parity tolerance for probabilities (absolute)."""
    regression_rtol: float = 1e-5
    """Parity tolerance for regression outputs, relative to the output scale (max |y|, at least 1)."""
    parity_rows: int = Field(default=512, ge=16)
    """Rows of the reference sample used for parity (NaN rows are added)."""


class TritonServerSettings(BaseModel):
    """The local Triton server (``treeserve triton start``)."""

    model_config = ConfigDict(frozen=True)

    venv: Path = Path(".venv-triton")
    """Virtual environment with nvidia-pytriton (tritonserver + python backend)."""
    host: str = "127.0.0.1"
    """Address Triton binds and clients use."""
    http_port: Port = 8000
    grpc_port: Port = 8001
    metrics_port: Port = 8002
    run_dir: Path = Path("var/triton")
    """PID file, log file and the copied backends live here."""
    startup_timeout_s: float = 60.0
    """How long `start` waits for readiness."""
    load_timeout_s: float = 60.0
    """How long a model load may take."""


class SyncSettings(BaseModel):
    """The promotion-driven repository sync."""

    model_config = ConfigDict(frozen=True)

    models: list[str] = Field(default_factory=lambda: ["churn-prediction"])
    """Registered models the sync keeps in Triton."""
    keep_champions: int = Field(default=2, ge=0)
    """Previous champions kept loaded for instant rollback."""
    poll_interval_s: float = 30.0
    """Reconcile at least this often (covers lost webhooks)."""
    webhook_host: str = "127.0.0.1"
    webhook_port: Port = 8070
    """Where the webhook receiver and /metrics listen."""
    webhook_secret: str = ""
    """Shared HMAC secret for MLflow webhooks (empty: webhooks refused)."""
    webhook_max_age_s: float = 300.0
    """Deliveries older than this are rejected as stale."""
    status_file: Path = Path("var/sync/status.json")
    """Written after every pass; read by `treeserve sync status` and the gateway."""
    lock_file: Path = Path("var/sync/sync.lock")
    """One sync at a time."""
    lock_timeout_s: float = 0.0
    """How long a pass waits for another sync to finish (0: fail at once, -1: wait forever)."""
    triton_url: str = ""
    """Triton endpoint for load/unload/canary: ``grpc://host:port`` (Triton's gRPC port; recommended)
    or ``host:port`` / ``http://host:port`` (its HTTP port). Over HTTP, Triton answers no HTTP
    inference while a model loads (a gateway on ``gateway.triton.protocol=http`` waits that long);
    over gRPC it keeps answering. Empty: the local Triton's gRPC port
    (``grpc://<triton.host>:<triton.grpc_port>``)."""
    triton_urls: list[str] | None = None
    """Several Triton endpoints sharing the repository (JSON list, each written as ``triton_url``):
    each version is loaded and canaried on every server that answers, and routed only once READY on
    all of them. Unset: ``triton_url``."""
    triton_dns: str = ""
    """``[grpc://]host:port`` resolving to every Triton (e.g. a Kubernetes headless Service), resolved
    again every pass; takes precedence over ``triton_urls`` and ``triton_url``."""
    health_interval_s: float = Field(default=1.0, gt=0)
    """How often ``sync --watch`` checks that every server is up and has the routed versions READY; a
    server back or restarted empty starts a pass at once (no wait for ``poll_interval_s``)."""
    unload_grace_s: float = Field(default=1.0, ge=0.0)
    """Pause between a routing switch and unloading the versions it retired (gateways re-read routing)."""
    prestage_max: int = Field(default=1, ge=0)
    """Registry versions newer than a served model's champion that the sync exports, loads on every
    server and canaries ahead of their promotion (newest first, beyond the kept ones), so moving
    ``champion`` to one is only a routing switch. Each costs one more loaded version per Triton
    server. 0: nothing is staged before it is promoted."""
    retry_failed_after_s: float = Field(default=600.0, ge=0.0)
    """A version that failed validation or canary is not re-exported before this long."""

    @field_validator("triton_url", "triton_dns")
    @classmethod
    def _one_endpoint(cls, value: str) -> str:
        return parse_admin_endpoint(value) if value else value

    @field_validator("triton_urls")
    @classmethod
    def _endpoints(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else parse_admin_endpoints(value)


class ExporterConfig(CoreConfig, Protocol):
    """The settings the exporter and the local Triton read: the core, ``exporter`` and ``triton``."""

    @property
    def exporter(self) -> ExporterSettings: ...
    @property
    def triton(self) -> TritonServerSettings: ...


class SyncConfig(ExporterConfig, Protocol):
    """The settings the promotion sync reads: the exporter's and the ``sync`` group."""

    @property
    def sync(self) -> SyncSettings: ...
