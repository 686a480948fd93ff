"""The scheduled loop's steps, one function each: what ``treeserve pipeline run`` and the Airflow
DAG (``deploy/airflow/dags/churn_model_pipeline.py``) both call.

    materialize_step(settings)                             -> StepOutcome
    drift_step(settings, model, since=None, last=None)     -> StepOutcome (detail: verdict, drift_share, ...)
    retrain_reason(settings, model, drifted, force_retrain) -> str ("" = no retraining)
    retrain_step(settings, reason)                         -> StepOutcome (detail: version, run_id, ...)
    gate_step(settings, model, version)                    -> StepOutcome (checks only, no alias move)
    alias_step(settings, model, version)                   -> StepOutcome (gate again + move champion)
    sync_step(settings, model, version, previous=..., sync=..., triton=...)
                                                           -> StepOutcome (served + READY, else rollback)
    score_step(settings, model, score_date=None)           -> StepOutcome
    score_check_step(settings, model, score_date)          -> StepOutcome

A step that cannot do its work raises ``PipelineStepError(step, reason)``; otherwise its outcome
says ``ok``, ``warning`` or ``skipped`` with a one-line reason and a JSON-able ``detail``.

The promotion sync and Triton come in as arguments (``SyncPass``, ``ReadyVersions``): this package
imports nothing of the exporter; ``treeserve_app.commands.pipeline`` and the Airflow DAG hand them in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from drift.errors import PipelineStepError, WindowTooSmallError
from drift.reference import repository_routing
from treeserve import contract
from treeserve.errors import TreeserveError

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

log = logging.getLogger(__name__)

StepStatus = Literal["ok", "skipped", "warning", "failed"]

_SERVE_POLL_S = 0.25
"""How often the sync step looks at the routing and Triton while it waits for the new champion."""


class SyncPass(Protocol):
    """One pass of the promotion sync (``treeserve_app.commands.pipeline.sync_pass`` wraps the exporter's).

    Returns the pass result (``result``, ``error``), or None when another sync process holds the
    lock; raises TreeserveError when the pass cannot run.
    """

    def __call__(self, settings: Settings, *, trigger: str, lock_timeout_s: float | None) -> Any: ...


class ReadyVersions(Protocol):
    """What the pipeline asks Triton: the READY versions of a model."""

    def ready_versions(self, model: str) -> set[str]:
        """Versions of ``model`` Triton reports READY."""
        ...


@dataclass(frozen=True)
class StepOutcome:
    """What one step did: status, a one-line reason and JSON-able detail."""

    status: StepStatus
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what the Airflow tasks pass on through XCom)."""
        return asdict(self)


def serving_version(settings: Settings, model: str) -> str | None:
    """The version Triton's repository routes ``champion`` to (None when not deployed)."""
    return repository_routing(settings.path(settings.exporter.repository), model).get(contract.ALIAS_CHAMPION)


def score_shift(today: np.ndarray, previous: np.ndarray) -> float:
    """Wasserstein distance between two score samples, in units of the previous day's std."""
    from scipy.stats import wasserstein_distance

    std = float(np.std(previous))
    d = float(wasserstein_distance(today, previous))
    return d / std if std > 0 else (0.0 if d == 0 else float("inf"))


def materialize_step(settings: Settings) -> StepOutcome:
    """The online store gets the newest snapshot per entity (idempotent)."""
    from training import api as training

    try:
        m = training.materialize(settings)
    except TreeserveError as e:
        raise PipelineStepError("materialize", str(e)) from e
    return StepOutcome("ok", detail={"start": m.start.isoformat(), "end": m.end.isoformat()})


def drift_step(
    settings: Settings, model: str, *, since: str | None = None, last: int | None = None
) -> StepOutcome:
    """Drift check on the serving version (read-only apart from its report)."""
    from drift.job import run_drift

    try:
        summary = run_drift(settings, model=model, since=since, last=last)
    except WindowTooSmallError as e:
        # no traffic is not a failure of the loop: no verdict, no retraining unless forced
        return StepOutcome("skipped", str(e), {"verdict": "none"})
    except TreeserveError as e:
        raise PipelineStepError("drift", str(e)) from e
    drifted = summary.verdict == "drift"
    return StepOutcome(
        "warning" if drifted else "ok",
        f"drift share {summary.drift_share:.2f} >= {summary.share_threshold:g}" if drifted else "",
        {
            "verdict": summary.verdict,
            "drift_share": summary.drift_share,
            "drifted_columns": [c.column for c in summary.drifted_columns],
            "report": str(summary.report_dir),
            "version": summary.version,
        },
    )


def retrain_reason(
    settings: Settings, model: str, *, drifted: bool, force_retrain: bool, now: datetime | None = None
) -> str:
    """Why the loop retrains this time ("" = it does not): drift, a forced run, or a champion that
    has served ``drift.pipeline.retrain_after_days`` (the weekly retraining)."""
    if drifted:
        return "drift detected"
    if force_retrain:
        return "forced"
    days = settings.drift.pipeline.retrain_after_days
    if days <= 0:
        return ""
    from training import api as training

    try:
        since = training.champion_since(settings, model)
    except TreeserveError as e:
        raise PipelineStepError("retrain", str(e)) from e
    if since is None:
        return "no champion yet"
    age_days = ((now or datetime.now(UTC)) - since).total_seconds() / 86400
    return f"champion has served {age_days:.1f} days (>= {days})" if age_days >= days else ""


def retrain_step(settings: Settings, reason: str) -> StepOutcome:
    """Train a new version from point-in-time features and register it."""
    from training import api as training

    try:
        trained = training.train(settings)
    except TreeserveError as e:
        raise PipelineStepError("retrain", str(e)) from e
    return StepOutcome(
        "ok",
        reason,
        {
            "version": trained.version,
            "run_id": trained.run_id,
            "val_roc_auc": trained.metrics.get("val_roc_auc"),
        },
    )


def _checks(gate: Any) -> list[dict[str, Any]]:
    return [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in gate.checks]


def gate_step(settings: Settings, model: str, version: str) -> StepOutcome:
    """The promotion gate's checks on ``version`` (recorded as version tags); moves no alias."""
    from training import api as training

    try:
        gate = training.gate(settings, model, version)
    except TreeserveError as e:
        raise PipelineStepError("gate", str(e)) from e
    if not gate.passed:
        raise PipelineStepError("gate", f"version {version} refused: {gate.reason}")
    return StepOutcome(
        "ok",
        gate.reason,
        {"checks": _checks(gate), "roc_auc": gate.roc_auc, "champion_roc_auc": gate.champion_roc_auc},
    )


def alias_step(settings: Settings, model: str, version: str) -> StepOutcome:
    """Move ``champion`` to ``version`` through the gate (checked again against the champion of now)."""
    from training import api as training

    try:
        gate = training.promote(settings, model, version, alias=contract.ALIAS_CHAMPION)
    except TreeserveError as e:
        raise PipelineStepError("alias", str(e)) from e
    if not gate.alias_moved:
        raise PipelineStepError("alias", f"version {version} refused: {gate.reason}")
    return StepOutcome(
        "ok", f"champion -> v{version}", {"previous": gate.champion_version, "alias_moved": gate.alias_moved}
    )


def sync_step(
    settings: Settings,
    model: str,
    version: str,
    *,
    previous: str | None,
    sync: SyncPass,
    triton: ReadyVersions,
) -> StepOutcome:
    """Triton must serve ``version``; otherwise the alias is rolled back and the repository reconciled.

    ``sync`` runs one sync pass; ``triton`` answers which versions are READY.
    """
    from training import api as training

    reason = _sync_until_served(settings, model, str(version), sync, triton)
    if not reason:
        return StepOutcome("ok", f"Triton serves v{version}", {"previous": previous, "version": str(version)})
    rolled = ""
    try:
        back = training.rollback(settings, model)
        rolled = f"; alias rolled back to v{back.to_version}"
        lock_timeout_s = settings.drift.pipeline.lock_timeout_s
        if sync(settings, trigger="pipeline-rollback", lock_timeout_s=lock_timeout_s) is None:
            rolled += " (another sync holds the lock; it restores the previous champion)"
    except TreeserveError as e:
        rolled = f"; rollback incomplete: {e}"
    raise PipelineStepError("sync", reason + rolled)


def _sync_until_served(
    settings: Settings, model: str, version: str, sync: SyncPass, triton: ReadyVersions
) -> str:
    """Run a sync pass and wait until ``version`` is served; "" when it is, else why not.

    Served = the repository's routing names it as champion and Triton reports it READY. A pass
    that ran and routed another version is final (its failures are sticky); a sync lock held by
    another process (the ``sync --watch`` service) is waited for, pass after pass, within
    ``sync_timeout_s``.
    """
    ps = settings.drift.pipeline
    deadline = time.monotonic() + ps.sync_timeout_s
    result: Any = None
    ready: set[str] = set()
    triton_error = ""
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        if result is None:
            try:
                # None: another sync is at work; it will serve the new champion, or we will next time
                result = sync(settings, trigger="pipeline", lock_timeout_s=min(ps.lock_timeout_s, remaining))
            except TreeserveError as e:
                return f"sync failed: {e}"
        served = serving_version(settings, model)
        try:
            ready, triton_error = triton.ready_versions(model), ""
        except TreeserveError as e:
            ready, triton_error = set(), str(e)
        if served == version and version in ready:
            return ""
        if result is not None and served != version:
            return (
                f"sync result {result.result}: Triton serves v{served}, not v{version} "
                f"({result.error or 'see sync status'})"
            )
        if time.monotonic() >= deadline:
            where = (
                f"routing names v{served}"
                if served != version
                else f"Triton reports READY {sorted(ready, key=int) or 'nothing'}"
            )
            why = f": {triton_error}" if triton_error else ""
            return f"v{version} not served within sync_timeout_s={ps.sync_timeout_s:g}s ({where}{why})"
        time.sleep(_SERVE_POLL_S)


def score_step(settings: Settings, model: str, score_date: date | None = None) -> StepOutcome:
    """Batch-score every active entity with whatever is serving now."""
    from drift.scoring import score_all

    try:
        scored = score_all(settings, model=model, score_date=score_date)
    except TreeserveError as e:
        raise PipelineStepError("score", str(e)) from e
    return StepOutcome(
        "ok",
        detail={
            "rows": scored.rows,
            "rows_per_s": round(scored.rows_per_s, 1),
            "model_version": scored.model_version,
            "score_date": scored.score_date.isoformat(),
            "sink": scored.sink,
        },
    )


def score_check_step(settings: Settings, model: str, score_date: date) -> StepOutcome:
    """The day's score distribution against the previous scored day (a shift is a warning)."""
    from drift.score_store import open_sink

    sink = open_sink(settings)
    earlier = [d for d in sink.dates(model) if d < score_date]
    if not earlier:
        return StepOutcome("skipped", "no previous day to compare with")
    prev_day = earlier[-1]
    today = sink.read_partition(model, score_date)["score"].to_numpy(dtype=float)
    prev = sink.read_partition(model, prev_day)
    shift = score_shift(today, prev["score"].to_numpy(dtype=float))
    limit = settings.drift.pipeline.score_shift_threshold
    detail = {
        "previous_date": prev_day.isoformat(),
        "shift": round(shift, 4),
        "threshold": limit,
        "mean_today": float(np.mean(today)),
        "mean_previous": float(prev["score"].mean()),
        "previous_versions": sorted(set(prev["model_version"].astype(str))),
    }
    if shift > limit:
        return StepOutcome("warning", f"scores moved {shift:.2f} std since {prev_day}", detail)
    return StepOutcome("ok", detail=detail)
