"""``treeserve sync``: one pass, the watching service, the status, the webhook registration."""

from __future__ import annotations

import json

import typer

from treeserve_app import clikit

sync_app = typer.Typer(
    help="Promotion-driven sync: registry aliases -> Triton.",
    no_args_is_help=False,
    invoke_without_command=True,
)


@sync_app.callback()
@clikit.command
def sync(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run one reconcile pass and exit (the default)."),
    watch: bool = typer.Option(
        False, "--watch", help="Run as a service: webhook receiver + reconcile on wake-up or poll."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for a running sync instead of exiting."),
) -> None:
    """Make Triton serve what the registry aliases say (one pass by default)."""
    from treeserve.registry import fail_fast_registry

    fail_fast_registry()  # MLflow down: a pass or `sync status` says so in seconds, not minutes
    if ctx.invoked_subcommand is not None:
        return
    if once and watch:
        clikit.fail("choose one of --once and --watch")
    settings = clikit.settings()
    if watch:
        from exporter.sync.service import serve

        clikit.service(serve)(settings)
        return
    from exporter.sync.reconcile import reconcile_once

    result = reconcile_once(settings, trigger="cli", lock_timeout_s=-1 if wait else None)
    for model, st in result.models.items():
        routing = ", ".join(f"{a}={v}" for a, v in sorted(st.routing.items())) or "nothing routed"
        typer.echo(f"{model}: {routing}; loaded {', '.join(st.served_versions) or 'none'} — {st.message}")
    typer.echo(f"sync pass {result.result} in {result.duration_s:.1f}s")
    if result.result == "failed":
        clikit.fail(result.error or "sync pass failed")
    unserved = [
        f"{model} {alias} (version {st.routing.get(alias, '-')} not ready)"
        for model, st in result.models.items()
        for alias in sorted(set(st.desired_aliases) | set(st.routing))
        if st.routing.get(alias) not in st.served_versions
        and (alias in st.desired_aliases or alias == "champion")
    ]
    if unserved:
        clikit.fail("the pass left aliases unserved: " + "; ".join(unserved))


@sync_app.command("status")
@clikit.command
def status(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    live: bool = typer.Option(True, "--live/--no-live", help="Also ask the registry and Triton now."),
) -> None:
    """What is desired, what is served, and why they differ; exit 1 when a model is not in sync."""
    from exporter.sync.report import build_report, render_report

    report = build_report(clikit.settings(), live=live)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        render_report(report)
    behind = {m: e["message"] for m, e in report["models"].items() if not e["in_sync"]}
    if behind:
        clikit.fail("not in sync: " + "; ".join(f"{m}: {why}" for m, why in sorted(behind.items())))


@sync_app.command("register-webhook")
@clikit.command
def register_webhook(
    url: str = typer.Argument(..., help="Receiver URL, e.g. http://sync:8070/webhooks/mlflow"),
    secret: str = typer.Option(
        "", "--secret", help="HMAC secret (default: the sync.webhook_secret setting)."
    ),
    name: str = typer.Option("treeserve-sync", "--name", help="Webhook name in MLflow."),
) -> None:
    """Create or update the MLflow webhook that wakes the sync on alias changes."""
    from exporter.sync.registration import register_webhook as _register
    from treeserve.registry import mlflow_client

    settings = clikit.settings()
    client = mlflow_client(settings.mlflow_tracking_uri)
    hook_id = _register(client, url, secret=secret or settings.sync.webhook_secret, name=name)
    typer.echo(f"webhook {name!r} ({hook_id}) -> {url}")


def register(app: typer.Typer) -> None:
    """Add ``treeserve sync`` and its subcommands."""
    app.add_typer(sync_app, name="sync")
