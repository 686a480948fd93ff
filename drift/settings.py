"""Settings of the drift job, batch scoring and the pipeline."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class DriftSettings(BaseModel):
    """Drift detection over the prediction log."""

    model_config = ConfigDict(frozen=True)

    reports_dir: Path = Path("reports/drift")
    """Where HTML reports and JSON summaries are written."""
    share_threshold: float = 0.3
    """Drift share at or above which the verdict is 'drift' (exit code 2)."""
    alert_url: str = ""
    """If set, the alert payload is POSTed here."""
    experiment: str = "drift-monitoring"
    """MLflow experiment that drift runs are logged to."""
