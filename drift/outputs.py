"""Where a drift run's result goes: report folder, MLflow, Prometheus textfile, alert URL."""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from drift.summary import DriftSummary
from treeserve.registry import mlflow_client, mlflow_errors

log = logging.getLogger(__name__)


def write_report(report_dir: Path, summary: DriftSummary, snapshot: Any | None) -> None:
    """``report.html`` (Evidently) and ``summary.json`` into ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        snapshot.save_html(str(report_dir / "report.html"))
        _append_attribution_html(report_dir / "report.html", summary)
    tmp = report_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    os.replace(tmp, report_dir / "summary.json")


def attribution_html(summary: DriftSummary) -> str:
    """An HTML section with the attribution drift table (or why there is none)."""
    rows = "".join(
        f"<tr><td>{html.escape(a.feature)}</td><td>{a.reference_share:.3f}</td><td>{a.current_share:.3f}</td>"
        f"<td>{a.shift:.3f}</td><td>{'yes' if a.drifted else 'no'}</td></tr>"
        for a in summary.attribution
    )
    body = (
        "<table><tr><th>feature</th><th>reference share</th><th>window share</th><th>shift</th>"
        f"<th>drifted</th></tr>{rows}</table>"
        if summary.attribution
        else f"<p>{html.escape(summary.attribution_note or 'not computed')}</p>"
    )
    return (
        '<section id="treeserve-attribution-drift" style="font-family: sans-serif; margin: 1em">'
        "<h2>Attribution drift</h2><p>Each feature's share of the mean |TreeSHAP contribution|, "
        f"window vs the version's reference sample (threshold {_threshold(summary)}).</p>{body}</section>"
    )


def _threshold(summary: DriftSummary) -> str:
    return f"{summary.attribution[0].threshold:g}" if summary.attribution else "n/a"


def _append_attribution_html(path: Path, summary: DriftSummary) -> None:
    text = path.read_text()
    section = attribution_html(summary)
    at = text.rfind("</body>")
    path.write_text(text[:at] + section + text[at:] if at >= 0 else text + section)


def log_to_mlflow(
    tracking_uri: str, experiment: str, artifact_root: str, summary: DriftSummary, report_dir: Path
) -> str:
    """One run in ``experiment``: params, metrics per column, the HTML and JSON as artifacts.

    MLflow failures come out as ``ServiceUnavailableError``.
    """
    with mlflow_errors(f"drift run in {experiment!r}"):
        return _log_run(mlflow_client(tracking_uri), experiment, artifact_root, summary, report_dir)


def _log_run(
    client: Any, experiment: str, artifact_root: str, summary: DriftSummary, report_dir: Path
) -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root)
    )
    run = client.create_run(
        exp_id,
        run_name=f"drift-{summary.model}-v{summary.version}",
        tags={
            "treeserve.model": summary.model,
            "treeserve.version": summary.version,
            "treeserve.verdict": summary.verdict,
        },
    )
    rid = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        params = {
            "model": summary.model,
            "version": summary.version,
            "window": summary.window,
            "share_threshold": summary.share_threshold,
        }
        values = {
            "drift_share": summary.drift_share,
            "n_drifted": float(len(summary.drifted_columns)),
            "current_rows": float(summary.current_rows),
            "drift_detected": 1.0 if summary.verdict == "drift" else 0.0,
        }
        for c in summary.columns:
            values[f"drift_score.{c.column}"] = c.score
        if summary.score_drift is not None:
            values["score_drift"] = summary.score_drift.score
        for f, r in summary.null_rates.items():
            values[f"null_rate.{f}"] = r["current"]
        for a in summary.attribution:
            values[f"attribution_share.{a.feature}"] = a.current_share
            values[f"attribution_shift.{a.feature}"] = a.shift
        if summary.attribution:
            values["n_attribution_drifted"] = float(len(summary.attribution_drifted))
        now_ms = int(time.time() * 1000)
        client.log_batch(
            rid,
            metrics=[Metric(k, float(v), now_ms, 0) for k, v in values.items() if v == v],  # NaN is no metric
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        for name in ("report.html", "summary.json"):
            if (report_dir / name).exists():
                client.log_artifact(rid, str(report_dir / name))
        client.set_terminated(rid)
    except Exception:
        client.set_terminated(rid, status="FAILED")
        raise
    return str(rid)


def write_textfile(path: Path, summary: DriftSummary) -> None:
    """Prometheus textfile-collector gauges for the latest run of this model/version."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    labels = {"model": summary.model, "version": summary.version}
    Gauge("treeserve_drift_share", "Share of features that drifted", list(labels), registry=reg).labels(
        **labels
    ).set(summary.drift_share)
    Gauge("treeserve_drift_detected", "1 when the drift verdict is drift", list(labels), registry=reg).labels(
        **labels
    ).set(1.0 if summary.verdict == "drift" else 0.0)
    Gauge("treeserve_drift_window_rows", "Prediction-log rows compared", list(labels), registry=reg).labels(
        **labels
    ).set(summary.current_rows)
    col = Gauge(
        "treeserve_drift_column_score",
        "Per-feature drift score (method in label)",
        [*labels, "column", "method"],
        registry=reg,
    )
    for c in summary.columns:
        col.labels(**labels, column=c.column, method=c.method).set(c.score)
    if summary.score_drift is not None:
        Gauge(
            "treeserve_drift_score_distribution",
            "Drift score of the prediction score",
            list(labels),
            registry=reg,
        ).labels(**labels).set(summary.score_drift.score)
    if summary.attribution:
        share = Gauge(
            "treeserve_drift_attribution_share",
            "Feature's share of the mean |TreeSHAP contribution| in the window",
            [*labels, "feature"],
            registry=reg,
        )
        shift = Gauge(
            "treeserve_drift_attribution_shift",
            "|window share - reference share| of the mean |TreeSHAP contribution|",
            [*labels, "feature"],
            registry=reg,
        )
        for a in summary.attribution:
            share.labels(**labels, feature=a.feature).set(a.current_share)
            shift.labels(**labels, feature=a.feature).set(a.shift)
        Gauge(
            "treeserve_drift_attribution_drifted",
            "Features whose share of attribution moved past the threshold",
            list(labels),
            registry=reg,
        ).labels(**labels).set(len(summary.attribution_drifted))
    Gauge(
        "treeserve_drift_last_run_timestamp_seconds",
        "When the drift job last ran",
        list(labels),
        registry=reg,
    ).labels(**labels).set_to_current_time()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)


def post_alert(url: str, payload: dict[str, Any], *, timeout_s: float) -> bool:
    """POST the alert as JSON; False (logged) when the receiver cannot be reached or refuses."""
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            ok = 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.warning("drift alert POST to %s failed: %s", url, e)
        return False
    if not ok:
        log.warning("drift alert POST to %s answered %s", url, r.status)
    return ok


def timestamp_dir(root: Path, now_iso: str) -> Path:
    """A new, unique folder ``<root>/<UTC timestamp>``."""
    base = now_iso.replace(":", "").replace("-", "").split(".")[0]
    for i in range(1000):
        d = root / (base if i == 0 else f"{base}-{i}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    return Path(tempfile.mkdtemp(prefix=base, dir=root))
