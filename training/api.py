"""The training package's Python API: what ``treeserve demo`` and the retraining pipeline call.

    generate_data(settings, ...)                         -> GeneratedData
    apply_features(settings)                             -> ApplyResult
    materialize(settings, days=None)                     -> MaterializeResult
    train(settings, progress=None)                       -> TrainResult(version, run_id, metrics, ...)
    gate(settings, model, version)                       -> GateResult (checks recorded as tags, no alias move)
    promote(settings, model, version, alias, force, reason) -> GateResult (alias moved only if passed/forced)
    rollback(settings, model)                            -> RollbackResult
    champion_history(settings, model)                    -> list[str] (oldest first, current last)
    champion_since(settings, model)                      -> datetime | None (when champion last moved)

Every function takes the root ``Settings`` and raises ``treeserve.errors`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from training.data import GeneratedData, generate_world
from training.features import ApplyResult, MaterializeResult, apply_features, materialize
from training.gate import (
    GateResult,
    RollbackResult,
    champion_history,
    champion_since,
    gate,
    promote,
    rollback,
)
from training.settings import TrainingConfig
from training.train import TrainResult, train

__all__ = [
    "ApplyResult",
    "GateResult",
    "GeneratedData",
    "MaterializeResult",
    "RollbackResult",
    "TrainResult",
    "apply_features",
    "champion_history",
    "champion_since",
    "gate",
    "generate_data",
    "materialize",
    "promote",
    "rollback",
    "train",
]


def generate_data(
    settings: TrainingConfig,
    *,
    n_customers: int | None = None,
    n_days: int | None = None,
    seed: int | None = None,
    drift: bool = False,
    out: Path | None = None,
    end_date: date | None = None,
    progress: Callable[[float], None] | None = None,
) -> GeneratedData:
    """Generate the demo world into ``out`` (default: ``data.data_dir``); settings fill the gaps."""
    d = settings.data
    return generate_world(
        settings.path(out) if out is not None else settings.path(d.data_dir),
        n_customers=n_customers or d.n_customers,
        n_days=n_days or d.n_days,
        seed=d.seed if seed is None else seed,
        end_date=end_date,
        drift=drift,
        progress=progress,
    )
