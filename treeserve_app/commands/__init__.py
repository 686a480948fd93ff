"""The ``treeserve`` subcommands, one thin typer module per package: parse, build settings, call
the package, map errors to one line and exit 1. Each has ``register(app)``."""

from treeserve_app.commands import drift, export, gateway, loadtest, pipeline, sync, training

__all__ = ["drift", "export", "gateway", "loadtest", "pipeline", "sync", "training"]
