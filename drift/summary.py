"""The machine-readable result of a drift run: ``summary.json`` and the alert payload."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["ok", "drift"]

EXIT_DRIFT = 3
"""Exit status of ``treeserve drift`` when it finds drift: 1 is an error, 2 a usage error."""


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift test, as Evidently reported it."""

    column: str
    method: str
    """Evidently's method name, e.g. ``Wasserstein distance (normed)``."""
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class QualityIssue:
    """A data-quality finding for one column of the current window."""

    column: str
    kind: Literal["null_rate", "out_of_range", "all_null"]
    current: float
    reference: float
    message: str


@dataclass(frozen=True)
class AttributionShift:
    """One feature's share of the total mean |TreeSHAP contribution|, reference vs window."""

    feature: str
    reference_share: float
    current_share: float
    shift: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """Everything a machine needs to act on a drift run."""

    model: str
    version: str
    version_source: str
    window: str
    window_start: str | None
    window_end: str | None
    current_rows: int
    reference_rows: int
    columns: list[ColumnDrift]
    drift_share: float
    share_threshold: float
    score_drift: ColumnDrift | None
    quality: list[QualityIssue]
    null_rates: dict[str, dict[str, float]]
    verdict: Verdict
    created_at: str
    report_dir: str = ""
    mlflow_run_id: str = ""
    alert_posted: bool | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    attribution: list[AttributionShift] = field(default_factory=list)
    """Attribution drift per feature (empty when the version has no explainer: see attribution_note)."""
    attribution_note: str = ""

    @property
    def attribution_drifted(self) -> list[AttributionShift]:
        """Features whose share of attribution moved past the threshold."""
        return [a for a in self.attribution if a.drifted]

    @property
    def drifted_columns(self) -> list[ColumnDrift]:
        """Columns whose test failed."""
        return [c for c in self.columns if c.drifted]

    @property
    def exit_code(self) -> int:
        """``EXIT_DRIFT`` when the verdict is drift, else 0."""
        return EXIT_DRIFT if self.verdict == "drift" else 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``summary.json``."""
        d = asdict(self)
        d["drifted_columns"] = [asdict(c) for c in self.drifted_columns]
        d["n_drifted"] = len(self.drifted_columns)
        d["n_columns"] = len(self.columns)
        d["attribution_drifted"] = [a.feature for a in self.attribution_drifted]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftSummary:
        """Read a ``summary.json`` back."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["columns"] = [ColumnDrift(**c) for c in d["columns"]]
        fields["quality"] = [QualityIssue(**q) for q in d.get("quality", [])]
        sd = d.get("score_drift")
        fields["score_drift"] = ColumnDrift(**sd) if sd else None
        fields["attribution"] = [AttributionShift(**a) for a in d.get("attribution", [])]
        return cls(**fields)

    def alert_payload(self) -> dict[str, Any]:
        """The compact payload printed and POSTed when the verdict is drift."""
        return {
            "event": "treeserve.drift",
            "verdict": self.verdict,
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "current_rows": self.current_rows,
            "drift_share": round(self.drift_share, 4),
            "share_threshold": self.share_threshold,
            "drifted_columns": [
                {"column": c.column, "method": c.method, "score": round(c.score, 4), "threshold": c.threshold}
                for c in self.drifted_columns
            ],
            "score_drift": None
            if self.score_drift is None
            else {"score": round(self.score_drift.score, 4), "drifted": self.score_drift.drifted},
            "attribution_drifted": [
                {
                    "feature": a.feature,
                    "reference_share": round(a.reference_share, 4),
                    "current_share": round(a.current_share, 4),
                }
                for a in self.attribution_drifted
            ],
            "report": self.report_dir,
            "created_at": self.created_at,
        }
