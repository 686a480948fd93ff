"""CLI commands of the loadtest package: ``treeserve loadtest``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from treeserve_app import clikit


def _print_summary(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from loadtest.runner import LoadtestResult

    assert isinstance(result, LoadtestResult)
    s = result.summary
    table = Table(
        title=f"loadtest {result.target} @ {result.host}: {result.users} users, {result.duration_s:g} s"
    )
    for col in ("name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "error rate"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for i, e in enumerate([*s.endpoints, s.total]):
        table.add_row(
            e.name,
            str(e.requests),
            str(e.failures),
            f"{e.rps:.1f}",
            f"{e.p50_ms:.2f}",
            f"{e.p95_ms:.2f}",
            f"{e.p99_ms:.2f}",
            f"{e.error_rate:.2%}",
            end_section=i == len(s.endpoints) - 1,
        )
    console = Console(width=None if sys.stdout.isatty() else 120)  # pipes/CI: no 80-column truncation
    console.print(table)
    console.print(f"reports: {result.report_dir} (stats.json, stats_*.csv, report.html)")


def loadtest(
    target: str = typer.Option("gateway", "--target", help="gateway | gateway-grpc | triton"),
    users: int = typer.Option(None, "--users", "-u", help="Concurrent users (closed loop)."),
    spawn_rate: float = typer.Option(None, "--spawn-rate", "-r", help="Users started per second."),
    duration: str = typer.Option(None, "--duration", "-t", help="Run time, e.g. 30s, 2m."),
    slo_p99_ms: float = typer.Option(None, "--slo-p99-ms", help="Fail (exit 1) when p99 exceeds this."),
    max_error_rate: float = typer.Option(
        None,
        "--max-error-rate",
        help="Fail when failures/requests exceeds this (default: loadtest.max_error_rate, 0.01 = 1%).",
    ),
    host: str = typer.Option(None, "--host", help="Target URL/address (loopback or allowed hosts only)."),
    entities_file: Path = typer.Option(
        None, "--entities-file", help="Known entity ids: parquet or one id per line."
    ),
    processes: int = typer.Option(
        None, "--processes", help="Locust processes on this host (master + workers)."
    ),
) -> None:
    """Run a headless Locust load test, write reports and check the SLOs."""
    _run(target, users, spawn_rate, duration, slo_p99_ms, max_error_rate, host, entities_file, processes)


@clikit.command
def _run(
    target: str,
    users: int | None,
    spawn_rate: float | None,
    duration: str | None,
    slo_p99_ms: float | None,
    max_error_rate: float | None,
    host: str | None,
    entities_file: Path | None,
    processes: int | None,
) -> None:
    from loadtest.errors import SloMissedError
    from loadtest.runner import run_loadtest

    result = run_loadtest(
        clikit.settings(),
        target=target,
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        slo_p99_ms=slo_p99_ms,
        max_error_rate=max_error_rate,
        host=host,
        entities_file=entities_file,
        processes=processes,
    )
    _print_summary(result)
    if not result.passed:
        raise SloMissedError("SLO missed: " + "; ".join(result.slo_violations))
    typer.secho("passed: every SLO set was met", fg=typer.colors.GREEN)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("loadtest")(loadtest)
