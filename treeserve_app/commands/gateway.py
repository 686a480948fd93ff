"""CLI commands of the gateway package, and the app factory its uvicorn workers call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from treeserve.errors import ConfigError
from treeserve_app import clikit

if TYPE_CHECKING:
    from fastapi import FastAPI

    from treeserve_app.settings import Settings

APP_FACTORY = "treeserve_app.commands.gateway:app_from_env"
"""What each uvicorn worker imports and calls to build the gateway app."""


def worker_settings() -> Settings:
    """The settings ``gateway.server.run`` exported for its workers; else settings from the environment."""
    from gateway.server import SETTINGS_ENV
    from treeserve_app.settings import Settings, load_settings

    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        return load_settings()
    try:
        return Settings.model_validate_json(raw)
    except ValueError as e:
        raise ConfigError(f"{SETTINGS_ENV} does not hold valid settings: {str(e).splitlines()[0]}") from e


def app_from_env() -> FastAPI:
    """uvicorn factory: each worker builds its own app with the settings ``run`` was given."""
    from gateway.app import create_app
    from treeserve.logs import setup_logging

    settings = worker_settings()
    # Worker processes do not inherit the CLI's logging set-up.
    setup_logging(settings.log_level, json_lines=settings.log_json)
    return create_app(settings)


def register(app: typer.Typer) -> None:
    """Add ``treeserve gateway`` and ``treeserve predlog``."""
    predlog_app = typer.Typer(help="The gateway's prediction log.", no_args_is_help=True)
    app.add_typer(predlog_app, name="predlog")

    @predlog_app.command("recover")
    @clikit.command
    def predlog_recover(
        predlog_dir: Path | None = typer.Option(
            None, "--dir", help="Prediction log directory (default: gateway.predlog_dir)."
        ),
    ) -> None:
        """Convert write-ahead segments left by a stopped or killed gateway into Parquet (exactly once)."""
        from gateway.predlog_recover import recover

        settings = clikit.settings()
        folder = predlog_dir if predlog_dir is not None else settings.path(settings.gateway.predlog_dir)
        try:
            done = recover(folder)
        except OSError as e:
            clikit.fail(f"cannot recover the prediction log in {folder}: {e.strerror or e}")
            return
        typer.echo(f"recovered {done.rows} rows from {done.segments} write-ahead segments into {folder}")

    @app.command("gateway")
    @clikit.service
    def gateway(
        host: str | None = typer.Option(None, help="Bind address (default: gateway.host)."),
        port: int | None = typer.Option(None, help="HTTP port (default: gateway.port)."),
        grpc_port: int | None = typer.Option(
            None, help="KServe v2 gRPC port, 0 disables (default: gateway.grpc_port)."
        ),
        workers: int | None = typer.Option(None, min=1, help="uvicorn workers (default: gateway.workers)."),
    ) -> None:
        """Serve the prediction API: entity ids in, scores out (HTTP + KServe v2 gRPC)."""
        from gateway.server import run

        settings = clikit.settings()
        overrides = {
            k: v
            for k, v in {"host": host, "port": port, "grpc_port": grpc_port, "workers": workers}.items()
            if v is not None
        }
        if overrides:
            settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update=overrides)})
        run(settings, app_factory=APP_FACTORY)
