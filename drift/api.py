"""The drift package's Python API: what ``treeserve demo`` and schedulers call.

    run_drift(settings, version=None, since=None, last=None, ...)  -> DriftSummary (verdict, exit_code)
    score_all(settings, version=None, score_date=None, ...)        -> ScoringResult (rows, rows_per_s)
    run_pipeline(settings, sync=reconcile_once, ...)               -> PipelineRun (status, steps)

Every function takes the root ``Settings`` and raises ``treeserve.errors`` subclasses
(``run_pipeline`` records a failed step in its result instead of raising).
"""

from __future__ import annotations

from drift.job import run_drift
from drift.pipeline import PipelineRun, StepRecord, run_pipeline
from drift.scoring import ScoringResult, score_all
from drift.summary import ColumnDrift, DriftSummary, QualityIssue

__all__ = [
    "ColumnDrift",
    "DriftSummary",
    "PipelineRun",
    "QualityIssue",
    "ScoringResult",
    "StepRecord",
    "run_drift",
    "run_pipeline",
    "score_all",
]
