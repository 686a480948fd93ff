"""CLI commands of the drift package: ``treeserve drift``, ``treeserve score``.

``treeserve pipeline run`` is in ``treeserve_app.commands.pipeline``.
"""

from __future__ import annotations

import json

import typer

from treeserve_app import clikit


@clikit.command
def drift_cmd(
    since: str = typer.Option(
        None, "--since", help="Time window back from now, e.g. 7d, 12h (default: drift.default_window)."
    ),
    last: int = typer.Option(
        None, "--last", help="Use the last N prediction-log rows instead of a time window."
    ),
    version: str = typer.Option(None, "--version", help="Model version (default: the serving champion)."),
    model: str = typer.Option(None, "--model", help="Registered model (default: mlflow.model_name)."),
    threshold: float = typer.Option(
        None, "--threshold", help="Drift share that alarms (default: drift.share_threshold)."
    ),
    no_alert: bool = typer.Option(False, "--no-alert", help="Do not POST the alert payload."),
) -> None:
    """Compare the prediction log with the serving version's training reference (exit 3 on drift)."""
    from drift.job import run_drift

    s = clikit.settings()
    summary = run_drift(
        s,
        version=version,
        since=since,
        last=last,
        model=model,
        share_threshold=threshold,
        post_alert=not no_alert,
    )
    _print_summary(summary)
    if summary.verdict == "drift":
        if clikit.output.verbose:
            typer.echo(json.dumps(summary.alert_payload(), indent=2))
        typer.echo(_alert_line(summary.alert_posted, no_alert=no_alert))
        raise typer.Exit(summary.exit_code)


def _alert_line(posted: bool | None, *, no_alert: bool) -> str:
    if no_alert:
        return "alert: not posted (--no-alert); -v prints the payload"
    if posted is None:
        return "alert: not posted (TREESERVE_DRIFT__ALERT_URL is not set); -v prints the payload"
    return "alert: posted" if posted else "alert: posting FAILED (see the log above)"


@clikit.command
def score_cmd(
    version: str = typer.Option(None, "--version", help="Model version (default: the serving champion)."),
    model: str = typer.Option(None, "--model", help="Registered model (default: mlflow.model_name)."),
    score_date: str = typer.Option(None, "--date", help="Partition date YYYY-MM-DD (default: today, UTC)."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Also write each entity's top reasons (TreeSHAP, JSON in the reasons column) beside its score.",
    ),
    reasons: int = typer.Option(
        3, "--reasons", min=1, max=100, help="How many reasons per entity with --explain."
    ),
) -> None:
    """Score every active entity with the serving ONNX model; replace the day's partition."""
    from datetime import date

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from drift.scoring import score_all
    from treeserve.errors import ConfigError

    s = clikit.settings()
    try:
        day = date.fromisoformat(score_date) if score_date else None
    except ValueError as e:
        raise ConfigError(f"--date must be YYYY-MM-DD, got {score_date!r}") from e
    with Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        task = bar.add_task("score", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = score_all(
            s,
            model=model,
            version=version,
            score_date=day,
            progress=progress,
            explain_k=reasons if explain else None,
        )
    typer.echo(
        f"scored {result.rows} entities with {result.model} v{result.model_version} for {result.score_date} "
        f"in {result.elapsed_s:.2f}s ({result.rows_per_s:,.0f} rows/s overall, {result.loop_rows_per_s:,.0f} rows/s "
        f"features+inference, {result.fallback_rows} base-rate fallbacks"
        f"{', top ' + str(reasons) + ' reasons per entity' if explain else ''}) "
        f"-> {result.sink}"
    )


def _print_summary(summary: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from drift.summary import DriftSummary

    assert isinstance(summary, DriftSummary)
    console = Console()
    table = Table(title=f"{summary.model} v{summary.version} — {summary.window}, {summary.current_rows} rows")
    for col in ("column", "method", "score", "threshold", "drifted"):
        table.add_column(col)
    rows = list(summary.columns) + ([summary.score_drift] if summary.score_drift else [])
    for c in rows:
        table.add_row(
            c.column, c.method, f"{c.score:.3f}", f"{c.threshold:g}", "[red]yes[/red]" if c.drifted else "no"
        )
    console.print(table)
    for q in summary.quality:
        console.print(f"[yellow]quality:[/yellow] {q.message}")
    for a in summary.attribution_drifted:
        console.print(
            f"[yellow]attribution:[/yellow] {a.feature} carries {a.current_share:.0%} of the attribution "
            f"(reference {a.reference_share:.0%}, threshold {a.threshold:g})"
        )
    if summary.attribution_note:
        console.print(f"attribution drift not computed: {summary.attribution_note}")
    colour = "red" if summary.verdict == "drift" else "green"
    console.print(
        f"verdict [{colour}]{summary.verdict}[/{colour}]: drift share {summary.drift_share:.2f} "
        f"(threshold {summary.share_threshold:g}); report {summary.report_dir}"
    )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("drift")(drift_cmd)
    app.command("score")(score_cmd)
