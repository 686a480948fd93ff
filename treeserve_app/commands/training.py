"""CLI commands of the training package: data, features, train, promote, rollback."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from treeserve_app import clikit

data_app = typer.Typer(help="The demo data set.", no_args_is_help=True)
features_app = typer.Typer(help="The Feast feature repository.", no_args_is_help=True)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@data_app.command("generate")
@clikit.command
def data_generate(
    customers: Annotated[int | None, typer.Option("--customers", min=1, help="Number of customers.")] = None,
    days: Annotated[int | None, typer.Option("--days", min=37, help="Days of daily snapshots.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Generator seed.")] = None,
    drift: Annotated[
        bool, typer.Option("--drift", help="Shift the population (see DRIFTED_FEATURES).")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: data.data_dir).")] = None,
    end_date: Annotated[
        str | None, typer.Option("--end-date", help="Last snapshot day, YYYY-MM-DD (default: today, UTC).")
    ] = None,
) -> None:
    """Generate the seeded churn world: customers, daily customer_stats snapshots, session activity, labels."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from training.api import generate_data
    from training.data import DRIFTED_FEATURES
    from treeserve.errors import ConfigError

    settings = clikit.settings()
    try:
        end = date.fromisoformat(end_date) if end_date else None
    except ValueError as e:
        raise ConfigError(f"--end-date must be YYYY-MM-DD, got {end_date!r}") from e
    with Progress(TextColumn("simulating days"), BarColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("days", total=1.0)
        result = generate_data(
            settings,
            n_customers=customers,
            n_days=days,
            seed=seed,
            drift=drift,
            out=out,
            end_date=end,
            progress=lambda frac: bar.update(task, completed=frac),
        )
    console = _console()
    console.print(
        f"wrote {result.data_dir}: {result.n_customers} customers, {result.n_snapshots} snapshots "
        f"({result.start:%Y-%m-%d} .. {result.end:%Y-%m-%d}), {result.n_events} session events, "
        f"{result.n_labels} labels, "
        f"churn rate {result.churn_rate:.3f} in {result.elapsed_s:.1f}s"
    )
    if drift:
        console.print(f"drifted features: {', '.join(DRIFTED_FEATURES)}")


@features_app.command("apply")
@clikit.command
def features_apply() -> None:
    """Register the feature_repo/ definitions in the Feast registry."""
    from training.api import apply_features

    settings = clikit.settings()
    with _console().status("feast apply"):
        result = apply_features(settings)
    _console().print(
        f"applied {len(result.objects)} objects to project {result.project!r} "
        f"({result.registry_uri}): {', '.join(result.objects)}"
    )


@features_app.command("materialize")
@clikit.command
def features_materialize(
    days: Annotated[int | None, typer.Option("--days", min=1, help="Recent days to load.")] = None,
) -> None:
    """Load the latest features per customer into the online store."""
    from training.api import materialize

    settings = clikit.settings()
    with _console().status("materializing the newest features into the online store"):
        result = materialize(settings, days=days)
    _console().print(
        f"materialized {result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} into the "
        f"{result.online_store} online store (project {result.project!r}) in {result.elapsed_s:.1f}s"
    )


def _gateway_url(settings: Any, url: str | None) -> str:
    """``--url`` or the local gateway of the settings (``gateway.host``/``port``)."""
    if url:
        return url.rstrip("/")
    host = settings.gateway.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{settings.gateway.port}"


def _api_key(settings: Any, api_key: str | None) -> str | None:
    """``--api-key`` or the first of ``gateway.api_keys`` (None: the gateway is open)."""
    return api_key or (settings.gateway.api_keys[0] if settings.gateway.api_keys else None)


_URL_HELP = "Gateway base URL (default: http://<gateway.host>:<gateway.port>)."
_KEY_HELP = "API key (default: the first of gateway.api_keys)."
_SOURCE_HELP = "Feast PushSource (default: the one feeding the served FeatureService)."


@features_app.command("push")
@clikit.command
def features_push(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="Rows to push: a .csv, .jsonl/.ndjson, .json or .parquet file, or - (JSON lines on stdin).",
        ),
    ],
    url: Annotated[str | None, typer.Option("--url", help=_URL_HELP)] = None,
    push_source: Annotated[str | None, typer.Option("--push-source", help=_SOURCE_HELP)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per request.")] = 500,
    api_key: Annotated[str | None, typer.Option("--api-key", help=_KEY_HELP)] = None,
) -> None:
    """Push feature rows (e.g. session activity) through the gateway: online and offline."""
    from treeserve.features.push_client import PushClient, read_rows

    settings = clikit.settings()
    client = PushClient(_gateway_url(settings, url), api_key=_api_key(settings, api_key))
    rows = batches = 0
    try:
        for batch in read_rows(source, batch_size=batch_size):
            answer = client.push(batch, push_source=push_source)
            rows += int(answer.get("rows", len(batch)))
            batches += 1
    finally:
        client.close()
    _console().print(f"pushed {rows} rows in {batches} requests to {client.url} (online and offline)")


@data_app.command("stream")
@clikit.command
def data_stream(
    rate: Annotated[float, typer.Option("--rate", help="Events per second.")] = 10.0,
    count: Annotated[int, typer.Option("--count", help="Stop after this many events.")] = 1000,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds.")] = 60.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Most events per request.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the event draws.")] = 0,
    url: Annotated[str | None, typer.Option("--url", help=_URL_HELP + " Loopback only.")] = None,
    push_source: Annotated[str | None, typer.Option("--push-source", help=_SOURCE_HELP)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help=_KEY_HELP)] = None,
) -> None:
    """Replay simulated session events (stamped now) against a local gateway's push endpoint."""
    from training.stream import stream

    settings = clikit.settings()
    with _console().status("streaming events") as status:
        result = stream(
            settings,
            url=_gateway_url(settings, url),
            rate=rate,
            count=count,
            duration_s=duration,
            batch_size=batch_size,
            seed=seed,
            api_key=_api_key(settings, api_key),
            push_source=push_source,
            progress=lambda n: status.update(f"streaming events: {n} sent"),
        )
    _console().print(
        f"sent {result.events} events for {result.customers} customers in {result.batches} requests "
        f"over {result.elapsed_s:.1f}s"
    )


def train_command() -> None:
    """Train XGBoost on point-in-time Feast features and register a new MLflow model version."""
    from training.api import train

    settings = clikit.settings()
    console = _console()
    with console.status("training") as status:
        result = train(settings, progress=lambda msg: status.update(msg))
    m = result.metrics
    console.print(
        f"registered {result.model_name} version {result.version} (run {result.run_id})\n"
        f"  rows {result.fingerprint['rows']}  labels {result.fingerprint['start'][:10]} .. "
        f"{result.fingerprint['end'][:10]}  sha256 {result.fingerprint['sha256'][:12]}\n"
        f"  val_roc_auc {m['val_roc_auc']:.4f}  val_avg_precision {m['val_avg_precision']:.4f}  "
        f"val_log_loss {m['val_log_loss']:.4f}  val_f1 {m['val_f1']:.4f}  "
        f"best_iteration {int(m['best_iteration'])}\n"
        f"  features {', '.join(result.features)}\n"
        f"  took {result.elapsed_s:.1f}s; next: treeserve promote {result.model_name} {result.version}"
    )


def promote_command(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move.")] = "champion",
    force: Annotated[bool, typer.Option("--force", help="Move the alias even if the gate fails.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with --force).")] = None,
) -> None:
    """Run the promotion gate on MODEL VERSION and move the alias only if it passes."""
    # training.gate, not training.api: the API module loads the data and Feast modules (~1 s).
    from training.errors import GateFailedError
    from training.gate import promote

    settings = clikit.settings()
    with _console().status(f"gate for {model} v{version}"):
        result = promote(settings, model, version, alias=alias, force=force, reason=reason)
    console = _console()
    if result.already:
        console.print(f"{model} version {result.version} is already {alias}; nothing to do")
        return
    for c in result.checks:
        console.print(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
    if not result.alias_moved:
        raise GateFailedError(
            f"gate failed for {model} v{result.version}: {result.reason}; alias {alias!r} unchanged"
        )
    verdict = "passed" if result.passed else f"FORCED by reason {reason!r}"
    console.print(f"gate {verdict}: {model} @{alias} -> version {result.version}")


def rollback_command(model: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """Move the champion alias back to the previous champion."""
    from training.gate import rollback

    settings = clikit.settings()
    result = rollback(settings, model)
    _console().print(f"rolled back {model} @champion: version {result.from_version} -> {result.to_version}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.add_typer(data_app, name="data")
    app.add_typer(features_app, name="features")
    app.command("train")(clikit.command(train_command))
    app.command("promote")(clikit.command(promote_command))
    app.command("rollback")(clikit.command(rollback_command))
