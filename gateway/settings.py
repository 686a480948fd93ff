"""Settings of the FastAPI/gRPC gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GatewayTritonSettings(BaseModel):
    """How the gateway talks to Triton."""

    model_config = ConfigDict(frozen=True)

    grpc_url: str = "127.0.0.1:8001"
    """Triton gRPC endpoint."""
    timeout_s: float = 0.5
    """Deadline for one inference call (retries included)."""


class GatewaySettings(BaseModel):
    """The gateway service."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 8081
    """KServe v2 gRPC port (0 disables)."""
    workers: int = Field(default=1, ge=1)
    model: str = "churn-prediction"
    """Registered model served."""
    triton: GatewayTritonSettings = GatewayTritonSettings()
    max_entities: int = Field(default=1000, ge=1)
    """Largest request (entities or instances)."""
    predlog_dir: Path = Path("var/predlog")
    """Prediction log Parquet segments (the drift job's input)."""
    predlog_overflow: Literal["block", "drop"] = "block"
    api_keys: list[str] = Field(default_factory=list)
    """If non-empty, requests need ``Authorization: Bearer <key>``."""
