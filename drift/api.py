"""The drift package's Python API: what ``treeserve demo`` and schedulers call.

    run_drift(settings, version=None, since=None, last=None, ...)  -> DriftSummary (verdict, exit_code)
    score_all(settings, version=None, score_date=None, ...)        -> ScoringResult (rows, rows_per_s)

Every function takes the settings (``drift.settings.DriftJobConfig``) and raises
``treeserve.errors`` subclasses. The retraining pipeline, which composes training, the sync and
drift, lives in the application (``treeserve_app.pipeline.run_pipeline``).
"""

from __future__ import annotations

from drift.job import run_drift
from drift.scoring import ScoringResult, score_all
from drift.summary import ColumnDrift, DriftSummary, QualityIssue

__all__ = [
    "ColumnDrift",
    "DriftSummary",
    "QualityIssue",
    "ScoringResult",
    "run_drift",
    "score_all",
]
