"""Settings of the load tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class LoadtestSettings(BaseModel):
    """Headless Locust runs."""

    model_config = ConfigDict(frozen=True)

    reports_dir: Path = Path("reports/loadtest")
    """Each run writes JSON, CSV and HTML under <reports_dir>/<timestamp>/."""
    gateway_url: str = "http://127.0.0.1:8080"
    gateway_grpc_url: str = "127.0.0.1:8081"
    triton_grpc_url: str = "127.0.0.1:8001"
