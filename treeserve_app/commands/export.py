"""CLI commands of the exporter package: ``treeserve export`` and ``treeserve triton …``.

The promotion sync registers its own commands from ``exporter/sync/cli.py`` (``register(app)``),
hooked in here when that module exists.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treeserve_app import clikit

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

triton_app = typer.Typer(
    help="Run a local Triton Inference Server (from .venv-triton).", no_args_is_help=True
)

RepositoryOpt = Annotated[
    Path | None, typer.Option("--repository", help="Triton model repository (default: model_repository/).")
]
HttpPortOpt = Annotated[int | None, typer.Option("--http-port", help="HTTP port (default 8000).")]
GrpcPortOpt = Annotated[int | None, typer.Option("--grpc-port", help="gRPC port (default 8001).")]
MetricsPortOpt = Annotated[int | None, typer.Option("--metrics-port", help="Metrics port (default 8002).")]


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("export")(export_command)
    app.add_typer(triton_app, name="triton")


@clikit.command
def export_command(
    model: Annotated[str, typer.Argument(help="Registered model name, e.g. churn-prediction.")],
    alias: Annotated[str | None, typer.Option("--alias", help="Registry alias, e.g. champion.")] = None,
    version: Annotated[int | None, typer.Option("--version", help="Registry version number.")] = None,
    repository: RepositoryOpt = None,
    flavor: Annotated[
        str | None,
        typer.Option("--flavor", help="python-ort (local Triton) | onnxruntime (NGC) | fil (NGC GPU)."),
    ] = None,
    load: Annotated[
        bool, typer.Option("--load", help="Ask the running Triton to (re)load the model.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Re-export even when the same model is installed.")
    ] = False,
) -> None:
    """Export a registered XGBoost version to ONNX into the Triton model repository."""
    if (alias is None) == (version is None):
        clikit.fail("name exactly one of --alias or --version")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = clikit.settings()
    from exporter.install import export
    from exporter.source import mlflow_client

    repo = Path(repository) if repository else settings.path(settings.exporter.repository)
    started = time.monotonic()
    with _repository_lock(settings):
        result = export(
            settings,
            mlflow_client(settings),
            model,
            alias=alias,
            version=version,
            repository=repo,
            flavor=flavor,
            force=force,
        )
    inst = result.installed
    verb = "already installed" if inst.reused else "installed"
    typer.echo(
        f"{model} version {inst.version} {verb} at {inst.path} ({inst.flavor}, {inst.task}, "
        f"{len(inst.features)} features, parity max |diff| {inst.max_abs_diff:.2g}"
        f"{_explainer_parity(inst.metadata.parity)}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    versions = ", ".join(str(v) for v in result.model.versions) or "none"
    routing = ", ".join(f"{a} → v{v}" for a, v in sorted(result.model.routing.items())) or "nothing routed"
    typer.echo(f"config: {result.config_path}  versions {versions}; {routing}")
    if load:
        _load(settings, repo, model, inst.version)


def _repository_lock(settings: Settings) -> Any:
    """The sync's lock: an export and a sync pass never write the same config.pbtxt at once."""
    from exporter.sync.lock import sync_lock

    return sync_lock(settings.path(settings.sync.lock_file), timeout_s=120.0)


def _load(settings: Settings, repo: Path, model: str, version: int) -> None:
    from exporter.errors import TritonNotRunningError
    from exporter.triton_server import TritonServer

    server = TritonServer.from_settings(settings, repository=repo)
    if server.pid() is not None and server.repository.resolve() != repo.resolve():
        raise TritonNotRunningError(
            f"the running Triton serves {server.repository}, not {repo}; restart it with --repository {repo}"
        )
    if not server.is_ready():
        raise TritonNotRunningError(
            f"Triton is not running at {server.http_url}; start it with `treeserve triton start`"
        )
    ready = server.load_model(model)
    canary = server.canary(
        model, version, atol=settings.exporter.proba_atol, rtol=settings.exporter.regression_rtol
    )
    typer.echo(
        f"loaded {model} in Triton (ready versions {ready}); canary on version {version}: "
        f"{canary.rows} rows, max |diff| {canary.max_abs_diff:.2g}"
    )


def _server(
    repository: Path | None, http_port: int | None, grpc_port: int | None, metrics_port: int | None
) -> Any:
    from exporter.triton_server import TritonServer

    return TritonServer.from_settings(
        clikit.settings(),
        repository=repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )


@triton_app.command("start")
@clikit.command
def triton_start(
    repository: RepositoryOpt = None,
    http_port: HttpPortOpt = None,
    grpc_port: GrpcPortOpt = None,
    metrics_port: MetricsPortOpt = None,
    load: Annotated[
        list[str] | None, typer.Option("--load", help="Model to load after start (repeatable).")
    ] = None,
) -> None:
    """Start Triton in the background (explicit model control) and wait until it is ready."""
    server = _server(repository, http_port, grpc_port, metrics_port)
    was_running = server.pid() is not None
    started = time.monotonic()
    pid = server.start()
    state = "already running" if was_running else f"ready in {time.monotonic() - started:.1f} s"
    typer.echo(
        f"Triton {state}: pid {pid}, HTTP {server.http_url}, gRPC {server.grpc_url}, "
        f"metrics {server.metrics_url}, repository {server.repository}, log {server.log_file}"
    )
    for model in load or []:
        versions = server.load_model(model)
        typer.echo(f"loaded {model}: ready versions {versions}")
    if not load and not was_running:
        # A restarted Triton serves what the repository routes at once, not after the next sync pass.
        for model, ready in server.load_repository().items():
            typer.echo(
                f"loaded {model}: ready versions {ready}" if isinstance(ready, list) else f"{model}: {ready}"
            )


@triton_app.command("stop")
@clikit.command
def triton_stop() -> None:
    """Stop the Triton started by `treeserve triton start`."""
    server = _server(None, None, None, None)
    typer.echo("Triton stopped" if server.stop() else "Triton was not running")


@triton_app.command("status")
@clikit.command
def triton_status(
    http_port: HttpPortOpt = None,
    grpc_port: GrpcPortOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Process, health and loaded models; exit 1 when Triton is not running."""
    server = _server(None, http_port, grpc_port, metrics_port)
    st = server.status()
    if not st.running and not st.live:
        clikit.fail(f"Triton is not running (no live process in {server.run_dir})")
    typer.echo(
        f"pid {st.pid}  live={st.live} ready={st.ready}  HTTP {st.http_url}  gRPC {st.grpc_url}  "
        f"metrics {st.metrics_url}\nrepository {st.repository}"
    )
    for m in st.models:
        if str(m.get("name", "")).startswith("."):
            continue
        reason = f"  ({m['reason']})" if m.get("reason") else ""
        typer.echo(f"  {m.get('name')} v{m.get('version', '-')}: {m.get('state', 'UNAVAILABLE')}{reason}")


@triton_app.command("logs")
@clikit.service
def triton_logs(
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
) -> None:
    """Print the end of the Triton log."""
    server = _server(None, None, None, None)
    if not server.log_file.exists():
        clikit.fail(f"no Triton log at {server.log_file}")
    typer.echo(server.logs(lines=lines))
    if follow:
        with server.log_file.open() as f:
            f.seek(0, os.SEEK_END)
            while True:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)


def _explainer_parity(parity: Any) -> str:
    """ ", explainer max |diff| X" when the version was exported with its explainer companion."""
    diff = parity.get("contributions_max_abs_diff") if hasattr(parity, "get") else None
    return f", explainer max |diff| {float(diff):.2g}" if diff is not None else ""
