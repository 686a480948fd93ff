"""``treeserve pipeline run``: the scheduled loop, one idempotent step after another.

    materialize -> drift -> retrain (on drift, --force-retrain or a champion due) -> gate -> alias -> sync
                -> batch scoring -> score distribution check against the previous day

The sync step runs a sync pass (waiting up to ``pipeline.lock_timeout_s`` for a running sync's
lock) and then waits, up to ``pipeline.sync_timeout_s`` in all, until the new champion is served:
the repository's routing names it and Triton reports it READY.

Every step is logged and recorded in ``<pipeline.runs_dir>/<run id>.json`` as it finishes. A
failed step stops the run with its reason. The serving version never changes in a failed run:
the gate moves ``champion`` only when it passes, and if the sync then cannot serve the new
champion, the alias is rolled back and the repository reconciled to the previous champion.
The steps themselves live in ``treeserve_app.steps`` (the Airflow DAG runs the same functions).
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
from typing import TYPE_CHECKING, Any, Literal

from drift.errors import PipelineStepError
from treeserve_app import steps
from treeserve_app.steps import ReadyVersions, StepOutcome, StepStatus, SyncPass, serving_version

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

log = logging.getLogger(__name__)

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

    def step(self, name: str, fn: Callable[[], StepOutcome]) -> StepOutcome:
        """Run one step function and record its outcome (a PipelineStepError is recorded, then re-raised)."""
        t0 = time.perf_counter()
        try:
            out = fn()
        except PipelineStepError as e:
            self.record(name, "failed", t0, e.reason)
            raise
        self.record(name, out.status, t0, out.reason, **out.detail)
        return out


def run_pipeline(
    settings: Settings,
    *,
    force_retrain: bool = False,
    drift_since: str | None = None,
    drift_last: int | None = None,
    score_date: date | None = None,
    hook: StepHook | None = None,
    sync: SyncPass,
    triton: ReadyVersions,
) -> PipelineRun:
    """Run every step; returns the run record (status ``failed`` with ``failed_step``/``reason`` on failure).

    Raises nothing for a failed step: the record says what happened (the CLI maps it to exit 1).
    ``sync`` runs one pass of the promotion sync; ``triton`` answers which versions are READY.
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
        _steps(settings, runner, model, force_retrain, drift_since, drift_last, score_date, sync, triton)
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
    settings: Settings,
    r: _Runner,
    model: str,
    force_retrain: bool,
    drift_since: str | None,
    drift_last: int | None,
    score_date: date | None,
    sync: SyncPass,
    triton: ReadyVersions,
) -> None:
    r.step("materialize", lambda: steps.materialize_step(settings))
    drift = r.step("drift", lambda: steps.drift_step(settings, model, since=drift_since, last=drift_last))
    drifted = drift.detail.get("verdict") == "drift"
    t0 = time.perf_counter()
    try:
        why = steps.retrain_reason(settings, model, drifted=drifted, force_retrain=force_retrain)
    except PipelineStepError as e:
        r.record("retrain", "failed", t0, e.reason)
        raise
    if not why:
        for name in ("retrain", "gate", "alias", "sync"):
            r.record(name, "skipped", t0, "no drift, not forced, champion not due for retraining")
    else:
        trained = r.step("retrain", lambda: steps.retrain_step(settings, why))
        version = str(trained.detail["version"])
        before = serving_version(settings, model)
        r.step("gate", lambda: steps.gate_step(settings, model, version))
        r.step("alias", lambda: steps.alias_step(settings, model, version))
        r.step(
            "sync",
            lambda: steps.sync_step(settings, model, version, previous=before, sync=sync, triton=triton),
        )
    scored = r.step("score", lambda: steps.score_step(settings, model, score_date))
    day = date.fromisoformat(scored.detail["score_date"])
    r.step("score_check", lambda: steps.score_check_step(settings, model, day))
