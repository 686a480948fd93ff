"""``treeserve pipeline run``: where the retraining pipeline (drift) meets the promotion sync (exporter).

``drift.pipeline.run_pipeline`` takes the sync pass and Triton's readiness as arguments, so the
drift package imports nothing of the exporter; this composition-root module hands it the
exporter's reconcile pass and the Triton admin client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from treeserve_app import clikit

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

pipeline_app = typer.Typer(help="The scheduled loop: materialize → drift → retrain → gate → sync → score.")


@pipeline_app.command("run")
@clikit.command
def pipeline_run_cmd(
    force_retrain: bool = typer.Option(False, "--force-retrain", help="Retrain even without drift."),
    since: str = typer.Option(None, "--since", help="Drift window (default: drift.default_window)."),
    last: int = typer.Option(None, "--last", help="Drift window as the last N prediction-log rows."),
) -> None:
    """Materialize, check drift, retrain + gate + promote + sync when needed, batch-score, compare."""
    from rich.console import Console

    from treeserve_app.pipeline import run_pipeline

    s = clikit.settings()
    console = Console(stderr=True)
    colours = {"ok": "green", "skipped": "dim", "warning": "yellow", "failed": "red"}

    def hook(step: str, status: str) -> None:
        console.print(f"  {step:<12} [{colours.get(status, 'white')}]{status}[/]")

    with triton_admin(s) as triton:
        run = run_pipeline(
            s,
            sync=sync_pass,
            triton=triton,
            force_retrain=force_retrain,
            drift_since=since,
            drift_last=last,
            hook=hook,
        )
    for st in run.steps:
        if st.reason:
            typer.echo(f"{st.name}: {st.reason}")
    typer.echo(
        f"pipeline {run.run_id}: {run.status}; serving v{run.serving_before} -> v{run.serving_after}; record {run.path}"
    )
    if run.status == "failed":
        clikit.fail(f"step {run.failed_step!r} failed: {run.reason}")


def sync_pass(settings: Settings, *, trigger: str, lock_timeout_s: float | None) -> Any:
    """One reconcile pass of the exporter's sync; None when another sync process holds the lock."""
    from exporter.sync import reconcile
    from exporter.sync.errors import SyncBusyError

    try:
        return reconcile.reconcile_once(settings, trigger=trigger, lock_timeout_s=lock_timeout_s)
    except SyncBusyError:
        return None


def triton_admin(settings: Settings) -> Any:
    """Every Triton server the sync drives, asked as one (``exporter.triton_admin.TritonAdminGroup``):
    a version is served once READY on each server that answers (``sync.triton_dns`` re-resolved)."""
    from exporter.sync.fleet import triton_endpoints
    from exporter.triton_admin import TritonAdminGroup

    return TritonAdminGroup(lambda: triton_endpoints(settings), timeout_s=5.0)


def register(app: typer.Typer) -> None:
    """Add ``treeserve pipeline`` to the root app."""
    app.add_typer(pipeline_app, name="pipeline")
