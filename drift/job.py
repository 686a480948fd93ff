"""``run_drift``: the serving version's reference sample vs a prediction-log window."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from drift import outputs
from drift.attribution import attribution_drift
from drift.errors import WindowTooSmallError
from drift.evaluate import DriftConfig, evaluate
from drift.reference import VersionInfo, load_reference, resolve_version
from drift.settings import DriftJobConfig
from drift.summary import DriftSummary
from drift.window import Window, read_window
from treeserve.errors import TreeserveError

log = logging.getLogger(__name__)


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    info: VersionInfo,
    *,
    window: str,
    share_threshold: float,
    cfg: DriftConfig,
    min_rows: int,
    now: datetime | None = None,
) -> tuple[DriftSummary, Any]:
    """Evaluate ``current`` against ``reference``; (summary, Evidently snapshot). Pure: writes nothing."""
    if len(current) < min_rows:
        what = "no rows" if current.empty else f"only {len(current)} rows"
        raise WindowTooSmallError(
            f"prediction log for {info.model} version {info.version} has {what} in window {window}; "
            f"need at least {min_rows} (widen --since/--last or lower drift.min_rows)"
        )
    ev = evaluate(reference, current, info.features, replace(cfg, share_threshold=share_threshold))
    share = ev.drift_share
    ts = current["timestamp"] if "timestamp" in current.columns else pd.Series(dtype="datetime64[ns, UTC]")
    now = now or datetime.now(UTC)
    summary = DriftSummary(
        model=info.model,
        version=info.version,
        version_source=info.source,
        window=window,
        window_start=str(ts.min()) if len(ts) else None,
        window_end=str(ts.max()) if len(ts) else None,
        current_rows=len(current),
        reference_rows=len(reference),
        columns=ev.columns,
        drift_share=share,
        share_threshold=share_threshold,
        score_drift=ev.score_drift,
        quality=ev.quality,
        null_rates=ev.null_rates,
        verdict="drift" if share >= share_threshold else "ok",
        created_at=now.isoformat(),
    )
    return summary, ev.snapshot


def run_drift(
    settings: DriftJobConfig,
    *,
    version: str | None = None,
    since: str | None = None,
    last: int | None = None,
    model: str | None = None,
    share_threshold: float | None = None,
    post_alert: bool = True,
    now: datetime | None = None,
) -> DriftSummary:
    """Run the drift job end to end and write its outputs; the returned summary says the verdict.

    Attribution drift (``drift.attribution``) is reported beside the feature drift; it does not
    change the verdict. Output: ``<reports_dir>/<UTC timestamp>/{report.html,summary.json}``, an MLflow run in
    ``drift.experiment``, Prometheus gauges in ``drift.textfile_path`` and, when the verdict is
    drift and ``drift.alert_url`` is set, a POSTed alert payload.
    """
    ds = settings.drift
    model = model or settings.mlflow.model_name
    now = now or datetime.now(UTC)
    win = Window.build(since=since, last=last, default=ds.default_window, now=now)
    info = resolve_version(
        settings.mlflow_tracking_uri, settings.path(settings.exporter.repository), model, version
    )
    log.info("drift: %s version %s (%s), window %s", model, info.version, info.source, win.describe())
    current = read_window(
        settings.path(settings.gateway.predlog_dir), model, info.version, info.features, win
    )
    reference = load_reference(settings.mlflow_tracking_uri, info)
    summary, snapshot = compare(
        reference,
        current,
        info,
        window=win.describe(),
        share_threshold=ds.share_threshold if share_threshold is None else share_threshold,
        cfg=DriftConfig.from_settings(ds),
        min_rows=ds.min_rows,
        now=now,
    )
    shifts, note = attribution_drift(
        settings.path(settings.exporter.repository),
        model,
        info.version,
        current,
        info.features,
        gateway=settings.gateway,
        threshold=ds.attribution_threshold,
    )
    if note:
        log.info("drift: no attribution drift for %s version %s: %s", model, info.version, note)
    report_dir = outputs.timestamp_dir(settings.path(ds.reports_dir), now.isoformat())
    summary = _with(summary, report_dir=str(report_dir), attribution=shifts, attribution_note=note)
    outputs.write_report(report_dir, summary, snapshot)
    if ds.log_to_mlflow:
        try:
            rid = outputs.log_to_mlflow(
                settings.mlflow_tracking_uri,
                ds.experiment,
                settings.mlflow_artifact_root,
                summary,
                report_dir,
            )
            summary = _with(summary, mlflow_run_id=rid)
        except TreeserveError as e:  # monitoring history is best effort; the verdict must still come out
            log.warning("drift: logging to MLflow failed: %s", e)
    try:
        outputs.write_textfile(settings.path(ds.textfile_path), summary)
    except OSError as e:
        log.warning("drift: writing the Prometheus textfile failed: %s", e)
    if summary.verdict == "drift" and post_alert and ds.alert_url:
        summary = _with(
            summary,
            alert_posted=outputs.post_alert(
                ds.alert_url, summary.alert_payload(), timeout_s=ds.alert_timeout_s
            ),
        )
    outputs.write_report(report_dir, summary, None)
    log.info(
        "drift: verdict %s, share %.2f (%d/%d columns), report %s",
        summary.verdict,
        summary.drift_share,
        len(summary.drifted_columns),
        len(summary.columns),
        report_dir,
    )
    return summary


def _with(summary: DriftSummary, **changes: Any) -> DriftSummary:
    from dataclasses import replace

    return replace(summary, **changes)
