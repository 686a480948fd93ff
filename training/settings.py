"""Settings of training and the promotion gate (``TREESERVE_TRAINING__*``)."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from treeserve.settings import CoreConfig


class TrainingSettings(BaseModel):
    """XGBoost hyper-parameters, data splits and the promotion gate's thresholds."""

    model_config = ConfigDict(frozen=True)

    n_estimators: int = Field(default=600, ge=1)
    """Upper bound on boosting rounds (early stopping picks the best iteration)."""
    early_stopping_rounds: int = Field(default=30, ge=1)
    """Stop when validation log-loss has not improved for this many rounds."""
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    """XGBoost eta."""
    max_depth: int = Field(default=4, ge=1, le=16)
    """Tree depth."""
    n_threads: int = Field(default=1, ge=1)
    """XGBoost threads (the demo machine has 2 cores shared with everything else)."""
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    """Share of labelled rows for early stopping and the reported ``val_*`` metrics."""
    holdout_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    """Share of labelled rows kept aside for the promotion gate."""
    seed: int = 42
    """Split and XGBoost seed."""
    reference_rows: int = Field(default=5000, ge=100)
    """Rows in the reference sample artifact (drift, parity)."""
    gate_auc_tolerance: float = Field(default=0.01, ge=0)
    """A candidate may be at most this much ROC-AUC below the champion (same held-out rows)."""
    gate_min_score_std: float = Field(default=0.01, ge=0)
    """Predictions with a smaller standard deviation are degenerate."""
    materialize_days: int = Field(default=2, ge=1)
    """`features materialize` loads only this many most recent days into the online store."""


class TrainingConfig(CoreConfig, Protocol):
    """The settings training reads: the shared core and the ``training`` group."""

    @property
    def training(self) -> TrainingSettings: ...
