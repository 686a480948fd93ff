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
    """Generate the seeded churn world: customers, daily customer_stats snapshots, labels."""
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
        f"({result.start:%Y-%m-%d} .. {result.end:%Y-%m-%d}), {result.n_labels} labels, "
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
    from training.api import promote
    from training.errors import GateFailedError

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
    from training.api import rollback

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
