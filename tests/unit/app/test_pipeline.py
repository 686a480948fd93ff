"""The pipeline's control flow with stand-in steps: what runs, what stops it, what stays served."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import drift.job
import drift.scoring
import exporter.sync.reconcile
import training.api
from drift.reference import repository_routing
from drift.score_store import open_sink
from drift.scoring import ScoringResult
from drift.summary import ColumnDrift, DriftSummary
from exporter.sync.errors import SyncBusyError
from treeserve_app.commands.pipeline import sync_pass
from treeserve_app.pipeline import run_pipeline
from treeserve_app.settings import load_settings
from treeserve_app.steps import score_shift

MODEL = "churn-prediction"


def _route(repo: Path, champion: str) -> None:
    folder = repo / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    value = json.dumps({"champion": champion}).replace('"', '\\"')
    (folder / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nparameters {{ key: "treeserve.routing" value {{ string_value: "{value}" }} }}\n'
    )


@dataclass
class FakeTriton:
    """Triton's READY versions as the pipeline sees them."""

    repo: Path
    loads_routed: bool = True
    """True: whatever the routing names is READY (a working Triton)."""
    ready: set[str] = field(default_factory=lambda: {"1"})
    asked: int = 0
    on_ask: Any = None

    def ready_versions(self, model: str) -> set[str]:
        self.asked += 1
        if self.on_ask is not None:
            self.on_ask(self.asked)
        if self.loads_routed:
            self.ready |= set(repository_routing(self.repo, model).values())
        return set(self.ready)


@dataclass
class World:
    settings: Any
    triton: FakeTriton
    drift: bool = False
    gate_passes: bool = True
    sync_works: bool = True
    sync_busy: int = 0
    """Passes that find the sync lock held by another process."""
    calls: list[str] = field(default_factory=list)
    shift: float = 0.0
    champion_age_days: float = 1.0

    def run(self, **kw: Any) -> Any:
        return run_pipeline(self.settings, sync=sync_pass, triton=self.triton, **kw)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    settings = load_settings(home=tmp_path, drift={"pipeline": {"sync_timeout_s": 1.0}})
    repo = settings.path(settings.exporter.repository)
    _route(repo, "1")
    w = World(settings, FakeTriton(repo))

    def materialize(s: Any) -> Any:
        w.calls.append("materialize")
        now = datetime.now(UTC)
        return SimpleNamespace(start=now, end=now)

    def run_drift(s: Any, **kw: Any) -> DriftSummary:
        w.calls.append("drift")
        col = ColumnDrift("a", "wasserstein", 0.9 if w.drift else 0.01, 0.2, w.drift)
        return DriftSummary(
            MODEL, "1", "routing", "w", None, None, 900, 3000, [col], float(w.drift), 0.3, None, [], {},
            "drift" if w.drift else "ok", "now",
        )  # fmt: skip

    def train(s: Any) -> Any:
        w.calls.append("train")
        return SimpleNamespace(version="2", run_id="r2", metrics={"val_roc_auc": 0.8})

    def gate(s: Any, model: str, version: str, alias: str = "champion", *, call: str = "gate") -> Any:
        w.calls.append(call)
        return SimpleNamespace(
            passed=w.gate_passes, alias_moved=w.gate_passes and call == "promote",
            reason="ok" if w.gate_passes else "vs_champion: worse",
            checks=[], roc_auc=0.8, champion_roc_auc=0.81, champion_version="1",
        )  # fmt: skip

    def promote(s: Any, model: str, version: str, alias: str = "champion") -> Any:
        return gate(s, model, version, alias, call="promote")

    def champion_since(s: Any, model: str) -> datetime:
        return datetime.now(UTC) - timedelta(days=w.champion_age_days)

    def rollback(s: Any, model: str) -> Any:
        w.calls.append("rollback")
        return SimpleNamespace(to_version="1")

    def reconcile_once(s: Any, **kw: Any) -> Any:
        w.calls.append("sync")
        if w.sync_busy:
            w.sync_busy -= 1
            raise SyncBusyError("another sync is running (test)")
        if w.sync_works and "rollback" not in w.calls:
            _route(repo, "2")
        return SimpleNamespace(
            result="ok" if w.sync_works else "failed", error="" if w.sync_works else "canary"
        )

    def score_all(s: Any, *, model: str, score_date: date | None = None) -> ScoringResult:
        w.calls.append("score")
        day = score_date or date(2026, 11, 27)
        rng = np.random.default_rng(day.toordinal())
        scores = rng.random(500) * (1 - w.shift) + w.shift
        frame = pd.DataFrame(
            {"entity": [f"c{i}" for i in range(500)], "score": scores, "score_decile": 1, "model": model,
             "model_version": "1", "score_date": day}
        )  # fmt: skip
        open_sink(s).replace_partition(frame, model, day)
        return ScoringResult(model, "1", day, 500, 0.1, "duckdb", 0)

    monkeypatch.setattr(training.api, "materialize", materialize)
    monkeypatch.setattr(training.api, "train", train)
    monkeypatch.setattr(training.api, "gate", gate)
    monkeypatch.setattr(training.api, "promote", promote)
    monkeypatch.setattr(training.api, "champion_since", champion_since)
    monkeypatch.setattr(training.api, "rollback", rollback)
    monkeypatch.setattr(drift.job, "run_drift", run_drift)
    monkeypatch.setattr(drift.scoring, "score_all", score_all)
    monkeypatch.setattr(exporter.sync.reconcile, "reconcile_once", reconcile_once)
    return w


def _statuses(run: Any) -> dict[str, str]:
    return {s.name: s.status for s in run.steps}


def test_without_drift_nothing_is_retrained_and_scores_are_written(world: World) -> None:
    run = world.run(score_date=date(2026, 11, 27))
    assert run.status == "ok"
    assert _statuses(run)["retrain"] == "skipped" and _statuses(run)["score"] == "ok"
    assert "train" not in world.calls
    assert json.loads(Path(run.path).read_text())["status"] == "ok"


def test_drift_retrains_promotes_and_serves_the_new_champion(world: World) -> None:
    world.drift = True
    run = world.run(score_date=date(2026, 11, 27))
    assert run.status == "warning"  # the drift step reports what it found
    assert world.calls == ["materialize", "drift", "train", "gate", "promote", "sync", "score"]
    assert (run.serving_before, run.serving_after) == ("1", "2")


def test_a_champion_serving_for_a_week_is_retrained_without_drift(world: World) -> None:
    world.champion_age_days = 7.5
    run = world.run(score_date=date(2026, 11, 27))
    retrain = run.step("retrain")
    assert retrain is not None and retrain.status == "ok" and "7.5 days" in retrain.reason
    assert (run.serving_before, run.serving_after) == ("1", "2")


def test_a_refused_candidate_stops_the_run_and_keeps_the_champion(world: World) -> None:
    world.gate_passes = False
    run = world.run(force_retrain=True)
    assert run.status == "failed" and run.failed_step == "gate"
    assert "worse" in run.reason
    assert "promote" not in world.calls and "sync" not in world.calls and "score" not in world.calls
    assert run.serving_after == "1"


def test_a_failed_sync_rolls_the_alias_back(world: World) -> None:
    world.drift, world.sync_works = True, False
    run = world.run()
    assert run.status == "failed" and run.failed_step == "sync"
    assert "rolled back to v1" in run.reason
    assert world.calls[-2:] == ["rollback", "sync"]
    assert run.serving_after == "1"


def test_the_sync_step_waits_while_another_sync_serves_the_new_champion(world: World) -> None:
    """The lock is held by the sync service: the pipeline waits for it, then confirms serving."""
    world.drift, world.sync_busy = True, 1

    def service_serves(asked: int) -> None:
        if asked == 2:  # the service's pass finishes while the pipeline waits
            _route(world.settings.path(world.settings.exporter.repository), "2")

    world.triton.on_ask = service_serves
    run = world.run()
    assert run.step("sync") is not None and run.step("sync").status == "ok", run.reason
    assert run.serving_after == "2"
    assert "rollback" not in world.calls


def test_routed_but_never_ready_in_triton_is_not_served(world: World) -> None:
    """The routing names the new champion but Triton never reports it READY: not served, rolled back."""
    world.drift, world.triton.loads_routed = True, False
    run = world.run()
    assert run.status == "failed" and run.failed_step == "sync"
    assert "v2 not served within sync_timeout_s=1s" in run.reason
    assert "Triton reports READY ['1']" in run.reason
    assert "rollback" in world.calls


def test_score_check_compares_with_the_previous_day(world: World) -> None:
    world.run(score_date=date(2026, 11, 26))
    assert _statuses(world.run(score_date=date(2026, 11, 27)))["score_check"] == "ok"
    world.shift = 0.6
    run = world.run(score_date=date(2026, 11, 28))
    check = run.step("score_check")
    assert check is not None and check.status == "warning" and check.detail["previous_date"] == "2026-11-27"


def test_score_shift_is_in_previous_std_units() -> None:
    a = np.random.default_rng(0).normal(0, 1, 5000)
    assert score_shift(a + 0.5, a) == pytest.approx(0.5, abs=0.02)
    assert score_shift(a, a) == 0.0
