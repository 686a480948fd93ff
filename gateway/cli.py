"""CLI commands of the gateway package."""

from __future__ import annotations

import typer

from treeserve import clikit


def register(app: typer.Typer) -> None:
    """Add ``treeserve gateway``."""

    @app.command("gateway")
    @clikit.command
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
