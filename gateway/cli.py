"""CLI commands of the gateway package."""

from __future__ import annotations

from pathlib import Path

import typer

from treeserve import clikit


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
        run(settings)
