"""``treeserve pipeline run``: the scheduled loop, one idempotent step after another.

    materialize -> drift -> retrain (on drift or --force-retrain) -> gate -> alias -> sync
                -> batch scoring -> score distribution check against the previous day

The sync step runs a sync pass (waiting up to ``pipeline.lock_timeout_s`` for a running sync's
lock) and then waits, up to ``pipeline.sync_timeout_s`` in all, until the new champion is served:
the repository's routing names it and Triton reports it READY.

Every step is logged and recorded in ``<pipeline.runs_dir>/<run id>.json`` as it finishes. A
failed step stops the run with its reason. The serving version never changes in a failed run:
the gate moves ``champion`` only when it passes, and if the sync then cannot serve the new
champion, the alias is rolled back and the repository reconciled to the previous champion.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from drift.errors import PipelineStepError, WindowTooSmallError
from drift.reference import repository_routing
from treeserve import contract
from treeserve.errors import TreeserveError

log = logging.getLogger(__name__)

_SERVE_POLL_S = 0.25
"""How often the sync step looks at the routing and Triton while it waits for the new champion."""

StepStatus = Literal["ok", "skipped", "warning", "failed"]
StepHook = Callable[[str, str], None]
"""Called with (step name, status) when a step finishes (CLI progress)."""

STEPS = ("materialize", "drift", "retrain", "gate", "alias", "sync", "score", "score_check")


@dataclass
class StepRecord:
    """One step's outcome."""

    name: str
    status: StepStatus
    elapsed_s: float
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineRun:
    """The record of one pipeline run."""

    run_id: str
    started_at: str
    force_retrain: bool
    model: str
    serving_before: str | None = None
    serving_after: str | None = None
    status: Literal["running", "ok", "warning", "failed"] = "running"
    failed_step: str = ""
    reason: str = ""
    finished_at: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    path: str = ""

    def step(self, name: str) -> StepRecord | None:
        """The record of step ``name`` (None when it did not run)."""
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class _Runner:
    """Runs steps in order, records each, stops at the first failure."""

    def __init__(self, run: PipelineRun, record_path: Path, hook: StepHook | None) -> None:
        self.run = run
        self.path = record_path
        self.hook = hook

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.run.to_dict(), indent=2, default=str))
        os.replace(tmp, self.path)

    def record(self, name: str, status: StepStatus, t0: float, reason: str = "", **detail: Any) -> StepRecord:
        rec = StepRecord(name, status, round(time.perf_counter() - t0, 3), reason, detail)
        self.run.steps.append(rec)
        log.info("pipeline step=%s status=%s elapsed_s=%.2f %s", name, status, rec.elapsed_s, reason)
        self.save()
        if self.hook is not None:
            self.hook(name, status)
        return rec

    def fail(self, name: str, t0: float, reason: str, **detail: Any) -> PipelineStepError:
        self.record(name, "failed", t0, reason, **detail)
        return PipelineStepError(name, reason)


class ReadyVersions(Protocol):
    """What the pipeline asks Triton: the READY versions of a model."""

    def ready_versions(self, model: str) -> set[str]:
        """Versions of ``model`` Triton reports READY."""
        ...


def serving_version(settings: Any, model: str) -> str | None:
    """The version Triton's repository routes ``champion`` to (None when not deployed)."""
    return repository_routing(settings.path(settings.exporter.repository), model).get(contract.ALIAS_CHAMPION)


def score_shift(today: np.ndarray, previous: np.ndarray) -> float:
    """Wasserstein distance between two score samples, in units of the previous day's std."""
    from scipy.stats import wasserstein_distance

    std = float(np.std(previous))
    d = float(wasserstein_distance(today, previous))
    return d / std if std > 0 else (0.0 if d == 0 else float("inf"))


def run_pipeline(
    settings: Any,
    *,
    force_retrain: bool = False,
    drift_since: str | None = None,
    drift_last: int | None = None,
    score_date: date | None = None,
    hook: StepHook | None = None,
    triton: ReadyVersions | None = None,
) -> PipelineRun:
    """Run every step; returns the run record (status ``failed`` with ``failed_step``/``reason`` on failure).

    Raises nothing for a failed step: the record says what happened (the CLI maps it to exit 1).
    ``triton`` answers which versions are READY (default: the sync's Triton client on the settings).
    """
    model = settings.mlflow.model_name
    now = datetime.now(UTC)
    run = PipelineRun(
        run_id=f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        started_at=now.isoformat(),
        force_retrain=force_retrain,
        model=model,
    )
    runner = _Runner(run, settings.path(settings.drift.pipeline.runs_dir) / f"{run.run_id}.json", hook)
    run.path = str(runner.path)
    run.serving_before = serving_version(settings, model)
    try:
        _steps(settings, runner, model, force_retrain, drift_since, drift_last, score_date, triton)
        run.status = "warning" if any(s.status == "warning" for s in run.steps) else "ok"
    except PipelineStepError as e:
        run.status, run.failed_step, run.reason = "failed", e.step, e.reason
    run.serving_after = serving_version(settings, model)
    run.finished_at = datetime.now(UTC).isoformat()
    runner.save()
    log.info(
        "pipeline run=%s status=%s serving %s -> %s %s",
        run.run_id,
        run.status,
        run.serving_before,
        run.serving_after,
        run.reason,
    )
    return run


def _steps(
    settings: Any,
    r: _Runner,
    model: str,
    force_retrain: bool,
    drift_since: str | None,
    drift_last: int | None,
    score_date: date | None,
    triton: ReadyVersions | None,
) -> None:
    from training import api as training

    # 1. materialize: the online store gets the newest snapshot per entity (idempotent)
    t0 = time.perf_counter()
    try:
        m = training.materialize(settings)
    except TreeserveError as e:
        raise r.fail("materialize", t0, str(e)) from e
    r.record("materialize", "ok", t0, start=m.start.isoformat(), end=m.end.isoformat())

    # 2. drift check on the serving version (read-only apart from its report)
    t0 = time.perf_counter()
    from drift.job import run_drift

    drifted = False
    try:
        summary = run_drift(settings, model=model, since=drift_since, last=drift_last)
        drifted = summary.verdict == "drift"
        r.record(
            "drift",
            "warning" if drifted else "ok",
            t0,
            f"drift share {summary.drift_share:.2f} >= {summary.share_threshold:g}" if drifted else "",
            verdict=summary.verdict,
            drift_share=summary.drift_share,
            drifted_columns=[c.column for c in summary.drifted_columns],
            report=summary.report_dir,
            version=summary.version,
        )
    except WindowTooSmallError as e:
        # no traffic is not a failure of the loop: no verdict, no retraining unless forced
        r.record("drift", "skipped", t0, str(e))
    except TreeserveError as e:
        raise r.fail("drift", t0, str(e)) from e

    # 3. retrain
    t0 = time.perf_counter()
    if not (drifted or force_retrain):
        for name in ("retrain", "gate", "alias", "sync"):
            r.record(name, "skipped", t0, "no drift and no --force-retrain")
    else:
        try:
            trained = training.train(settings)
        except TreeserveError as e:
            raise r.fail("retrain", t0, str(e)) from e
        r.record(
            "retrain",
            "ok",
            t0,
            "forced" if force_retrain and not drifted else "drift detected",
            version=trained.version,
            run_id=trained.run_id,
            val_roc_auc=trained.metrics.get("val_roc_auc"),
        )
        _promote_and_sync(settings, r, model, trained.version, triton)

    # 7. batch scoring with whatever is serving now
    t0 = time.perf_counter()
    from drift.scoring import score_all

    try:
        scored = score_all(settings, model=model, score_date=score_date)
    except TreeserveError as e:
        raise r.fail("score", t0, str(e)) from e
    r.record(
        "score",
        "ok",
        t0,
        rows=scored.rows,
        rows_per_s=round(scored.rows_per_s, 1),
        model_version=scored.model_version,
        score_date=scored.score_date.isoformat(),
        sink=scored.sink,
    )

    # 8. today's score distribution vs the previous scored day
    t0 = time.perf_counter()
    from drift.score_store import open_sink

    sink = open_sink(settings)
    earlier = [d for d in sink.dates(model) if d < scored.score_date]
    if not earlier:
        r.record("score_check", "skipped", t0, "no previous day to compare with")
        return
    prev_day = earlier[-1]
    today = sink.read_partition(model, scored.score_date)["score"].to_numpy(dtype=float)
    prev = sink.read_partition(model, prev_day)
    shift = score_shift(today, prev["score"].to_numpy(dtype=float))
    limit = settings.drift.pipeline.score_shift_threshold
    prev_versions = sorted(set(prev["model_version"].astype(str)))
    detail = {
        "previous_date": prev_day.isoformat(),
        "shift": round(shift, 4),
        "threshold": limit,
        "mean_today": float(np.mean(today)),
        "mean_previous": float(prev["score"].mean()),
        "previous_versions": prev_versions,
    }
    if shift > limit:
        r.record("score_check", "warning", t0, f"scores moved {shift:.2f} std since {prev_day}", **detail)
    else:
        r.record("score_check", "ok", t0, **detail)


def _promote_and_sync(
    settings: Any, r: _Runner, model: str, version: str, triton: ReadyVersions | None
) -> None:
    from training import api as training

    # 4. gate (+ 5. alias): promote moves champion only when every check passes
    t0 = time.perf_counter()
    before = serving_version(settings, model)
    try:
        gate = training.promote(settings, model, version, alias=contract.ALIAS_CHAMPION)
    except TreeserveError as e:
        raise r.fail("gate", t0, str(e)) from e
    checks = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in gate.checks]
    if not gate.passed:
        raise r.fail("gate", t0, f"version {version} refused: {gate.reason}", checks=checks)
    r.record(
        "gate",
        "ok",
        t0,
        gate.reason,
        checks=checks,
        roc_auc=gate.roc_auc,
        champion_roc_auc=gate.champion_roc_auc,
    )
    r.record(
        "alias",
        "ok",
        t0,
        f"champion -> v{version}",
        previous=gate.champion_version,
        alias_moved=gate.alias_moved,
    )

    # 6. sync: Triton must serve the new champion; otherwise roll the alias back
    t0 = time.perf_counter()
    ps = settings.drift.pipeline
    reason = _sync_until_served(settings, model, str(version), triton)
    if not reason:
        r.record("sync", "ok", t0, f"Triton serves v{version}", previous=before)
        return
    rolled = ""
    try:
        back = training.rollback(settings, model)
        rolled = f"; alias rolled back to v{back.to_version}"
        from exporter.sync.reconcile import reconcile_once

        reconcile_once(settings, trigger="pipeline-rollback", lock_timeout_s=ps.lock_timeout_s)
    except TreeserveError as e:
        rolled = f"; rollback incomplete: {e}"
    raise r.fail("sync", t0, reason + rolled)


def _sync_until_served(settings: Any, model: str, version: str, triton: ReadyVersions | None) -> str:
    """Run a sync pass and wait until ``version`` is served; "" when it is, else why not.

    Served = the repository's routing names it as champion and Triton reports it READY. A pass
    that ran and routed another version is final (its failures are sticky); a sync lock held by
    another process (the ``sync --watch`` service) is waited for, pass after pass, within
    ``sync_timeout_s``.
    """
    from exporter.sync.errors import SyncBusyError
    from exporter.sync.reconcile import reconcile_once

    ps = settings.drift.pipeline
    deadline = time.monotonic() + ps.sync_timeout_s
    owned = triton is None
    if triton is None:
        from exporter.sync.reconcile import triton_url
        from exporter.sync.triton import TritonControl

        triton = TritonControl(triton_url(settings), timeout_s=5.0)
    result: Any = None
    ready: set[str] = set()
    triton_error = ""
    try:
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if result is None:
                try:
                    result = reconcile_once(
                        settings, trigger="pipeline", lock_timeout_s=min(ps.lock_timeout_s, remaining)
                    )
                except SyncBusyError:
                    pass  # another sync is at work: it will serve the new champion, or we will next time
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
    finally:
        close = getattr(triton, "close", None)
        if owned and close is not None:
            close()
