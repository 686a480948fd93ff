"""The promotion gate and rollback: the only ways treeserve moves a registry alias.

``promote`` scores the candidate version on its own held-out rows (run artifact
``contract.ARTIFACT_HOLDOUT``) and checks:

* ``score_range``: every prediction is finite and within [0, 1];
* ``not_degenerate``: the predictions' standard deviation exceeds ``gate_min_score_std``;
* ``vs_champion``: ROC-AUC is not below the current champion's ROC-AUC on the same rows by more
  than ``gate_auc_tolerance`` (passes when there is no champion yet).

The outcome is written as version tags (``treeserve.gate.*``). The alias moves only when every
check passes, or with ``force`` and a reason (recorded with the user name). Champion moves are
kept as a JSON list of versions in the registered-model tag ``contract.TAG_CHAMPION_HISTORY``
(current champion last); ``rollback`` moves ``champion`` back to the previous entry.
"""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import registry
from training.errors import ModelNotFoundError
from treeserve import contract
from treeserve.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from treeserve.settings import Settings

log = logging.getLogger(__name__)

TAG_GATE_STATUS = "treeserve.gate.status"
"""passed | failed | forced"""
TAG_GATE_CHECKS = "treeserve.gate.checks"
TAG_GATE_ROC_AUC = "treeserve.gate.roc_auc"
TAG_GATE_CHAMPION = "treeserve.gate.champion"
TAG_GATE_AT = "treeserve.gate.at"
TAG_GATE_REASON = "treeserve.gate.reason"
TAG_FORCED_BY = "treeserve.gate.forced_by"
TAG_FORCE_REASON = "treeserve.gate.force_reason"
TAG_PROMOTED = "treeserve.promoted"
"""JSON {alias, at, by, previous} on the version an alias was moved to."""
TAG_ROLLED_BACK = "treeserve.rolled_back"
"""JSON {at, by, to} on the version a rollback moved away from."""
_HISTORY_LIMIT = 50


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and what happened to the alias."""

    model: str
    version: str
    alias: str
    passed: bool
    forced: bool
    alias_moved: bool
    checks: list[GateCheck] = field(default_factory=list)
    roc_auc: float | None = None
    champion_version: str | None = None
    champion_roc_auc: float | None = None

    @property
    def reason(self) -> str:
        """One line: the failed checks' details, or "all checks passed"."""
        failed = [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]
        return "; ".join(failed) if failed else "all checks passed"


@dataclass(frozen=True)
class RollbackResult:
    """Where ``champion`` pointed before and after a rollback."""

    model: str
    from_version: str
    to_version: str


def _load_model(model: str, version: str) -> Any:
    import mlflow.xgboost

    return mlflow.xgboost.load_model(f"models:/{model}/{version}")


def score(model: Any, X: pd.DataFrame) -> np.ndarray:
    """P(positive) from a native Booster or an sklearn-API XGBoost classifier."""
    import xgboost as xgb

    X = X.astype(np.float64)
    if isinstance(model, xgb.Booster):
        return np.asarray(model.predict(xgb.DMatrix(X, missing=np.nan)), dtype=np.float64)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    return proba[:, 1] if proba.ndim == 2 else proba


def evaluate(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    champion_scores: np.ndarray | None,
    champion_version: str | None,
    auc_tolerance: float,
    min_std: float,
) -> tuple[list[GateCheck], float | None, float | None]:
    """The gate's checks on a candidate's held-out scores (pure: no MLflow)."""
    from sklearn.metrics import roc_auc_score

    checks: list[GateCheck] = []
    finite = bool(np.all(np.isfinite(scores)))
    in_range = finite and bool(np.all((scores >= 0.0) & (scores <= 1.0)))
    checks.append(
        GateCheck(
            "score_range",
            in_range,
            "predictions within [0, 1]"
            if in_range
            else f"predictions outside [0, 1] or not finite (min {np.nanmin(scores):.4g}, max {np.nanmax(scores):.4g})",
        )
    )
    std = float(np.nanstd(scores)) if len(scores) else 0.0
    checks.append(
        GateCheck(
            "not_degenerate",
            std > min_std,
            f"prediction std {std:.4f} {'>' if std > min_std else '<='} {min_std}",
        )
    )
    both = len(np.unique(labels)) == 2
    auc = float(roc_auc_score(labels, np.nan_to_num(scores))) if both and finite else None
    champ_auc = None
    if champion_scores is None:
        checks.append(
            GateCheck(
                "vs_champion",
                auc is not None,
                "no other champion to compare with" if auc is not None else "held-out rows lack both classes",
            )
        )
    elif auc is None:
        checks.append(GateCheck("vs_champion", False, "held-out rows lack both classes or scores not finite"))
    else:
        champ_auc = float(roc_auc_score(labels, np.nan_to_num(champion_scores)))
        ok = auc >= champ_auc - auc_tolerance
        checks.append(
            GateCheck(
                "vs_champion",
                ok,
                f"roc_auc {auc:.4f} {'>=' if ok else '<'} champion v{champion_version} "
                f"{champ_auc:.4f} - tolerance {auc_tolerance}",
            )
        )
    return checks, auc, champ_auc


def promote(
    settings: Settings,
    model: str,
    version: str | int,
    *,
    alias: str = contract.ALIAS_CHAMPION,
    force: bool = False,
    reason: str | None = None,
) -> GateResult:
    """Run the gate on ``model`` ``version``; move ``alias`` to it if it passes (or is forced)."""
    if force and not (reason and reason.strip()):
        raise ConfigError("--force needs --reason explaining why the gate is overridden")
    if not alias.strip():
        raise ConfigError("alias must not be empty")
    mlflow_client = registry.client(settings)
    mv = registry.get_version(mlflow_client, model, version)
    version = str(mv.version)
    tags = dict(mv.tags or {})
    holdout = (
        registry.download_parquet(mlflow_client, mv.run_id, contract.ARTIFACT_HOLDOUT) if mv.run_id else None
    )
    champion = registry.alias_version(mlflow_client, model, contract.ALIAS_CHAMPION)

    checks: list[GateCheck]
    auc = champ_auc = None
    task = tags.get(contract.TAG_TASK, "binary")
    if holdout is None or "label" not in holdout.columns:
        checks = [
            GateCheck("holdout", False, f"version {version} has no {contract.ARTIFACT_HOLDOUT} run artifact")
        ]
    elif task != "binary":
        checks = [
            GateCheck("task", False, f"the gate scores binary classifiers; version {version} is {task!r}")
        ]
    else:
        features = registry.read_json_tag(
            tags, contract.TAG_FEATURES, [c for c in holdout.columns if c != "label"]
        )
        labels = holdout["label"].to_numpy(dtype=np.int64)
        scores = score(_load_model(model, version), holdout[features])
        champ_scores = None
        if champion is not None and champion != version:
            champ_scores = _champion_scores(mlflow_client, model, champion, holdout)
        checks, auc, champ_auc = evaluate(
            scores,
            labels,
            champion_scores=champ_scores,
            champion_version=champion,
            auc_tolerance=settings.training.gate_auc_tolerance,
            min_std=settings.training.gate_min_score_std,
        )
        if champion is not None and champion != version and champ_scores is None:
            checks.append(
                GateCheck(
                    "vs_champion", False, f"champion v{champion} cannot score this version's held-out rows"
                )
            )

    passed = all(c.passed for c in checks)
    result = GateResult(
        model=model,
        version=version,
        alias=alias,
        passed=passed,
        forced=force and not passed,
        alias_moved=passed or force,
        checks=checks,
        roc_auc=auc,
        champion_version=champion,
        champion_roc_auc=champ_auc,
    )
    _write_gate_tags(mlflow_client, result, reason)
    if result.alias_moved:
        _move_alias(mlflow_client, model, alias, version, reason=reason or ("gate passed" if passed else ""))
    log.info(
        "gate model=%s version=%s alias=%s passed=%s forced=%s moved=%s reason=%s",
        model,
        version,
        alias,
        passed,
        result.forced,
        result.alias_moved,
        result.reason,
    )
    return result


def rollback(settings: Settings, model: str) -> RollbackResult:
    """Move ``champion`` back to the previous champion recorded in the history tag."""
    mlflow_client = registry.client(settings)
    registered = _registered_model(mlflow_client, model)
    current = registry.alias_version(mlflow_client, model, contract.ALIAS_CHAMPION)
    if current is None:
        raise ModelNotFoundError(f"model {model!r} has no champion to roll back")
    history = [
        str(v) for v in registry.read_json_tag(dict(registered.tags or {}), contract.TAG_CHAMPION_HISTORY, [])
    ]
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise ModelNotFoundError(
            f"model {model!r} has no previous champion to roll back to (champion is v{current})"
        )
    target = history[-1]
    registry.get_version(mlflow_client, model, target)
    now, user = _now(), getpass.getuser()
    mlflow_client.set_registered_model_alias(model, contract.ALIAS_CHAMPION, target)
    mlflow_client.set_registered_model_tag(
        model, contract.TAG_CHAMPION_HISTORY, json.dumps(history[-_HISTORY_LIMIT:])
    )
    mlflow_client.set_model_version_tag(
        model, current, TAG_ROLLED_BACK, json.dumps({"at": now, "by": user, "to": target})
    )
    mlflow_client.set_model_version_tag(
        model,
        target,
        TAG_PROMOTED,
        json.dumps(
            {"alias": contract.ALIAS_CHAMPION, "at": now, "by": user, "previous": current, "rollback": True}
        ),
    )
    log.info("rollback model=%s from=%s to=%s", model, current, target)
    return RollbackResult(model=model, from_version=current, to_version=target)


def champion_history(settings: Settings, model: str) -> list[str]:
    """Versions that held ``champion``, oldest first, current last."""
    mlflow_client = registry.client(settings)
    registered = _registered_model(mlflow_client, model)
    return [
        str(v) for v in registry.read_json_tag(dict(registered.tags or {}), contract.TAG_CHAMPION_HISTORY, [])
    ]


# ---- helpers ---------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _registered_model(mlflow_client: MlflowClient, model: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(model)
    except MlflowException as e:
        raise ModelNotFoundError(f"registered model {model!r} not found") from e


def _champion_scores(
    mlflow_client: MlflowClient, model: str, champion: str, holdout: pd.DataFrame
) -> np.ndarray | None:
    champ = mlflow_client.get_model_version(model, champion)
    features = registry.read_json_tag(dict(champ.tags or {}), contract.TAG_FEATURES, None)
    if not features or any(f not in holdout.columns for f in features):
        return None
    return score(_load_model(model, champion), holdout[features])


def _write_gate_tags(mlflow_client: MlflowClient, result: GateResult, reason: str | None) -> None:
    status = "passed" if result.passed else ("forced" if result.forced else "failed")
    tags = {
        TAG_GATE_STATUS: status,
        TAG_GATE_CHECKS: json.dumps([c.__dict__ for c in result.checks]),
        TAG_GATE_AT: _now(),
        TAG_GATE_REASON: result.reason,
        TAG_GATE_CHAMPION: result.champion_version or "",
    }
    if result.roc_auc is not None:
        tags[TAG_GATE_ROC_AUC] = f"{result.roc_auc:.6f}"
    if result.forced:
        tags[TAG_FORCED_BY] = getpass.getuser()
        tags[TAG_FORCE_REASON] = reason or ""
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(result.model, result.version, key, value)


def _move_alias(mlflow_client: MlflowClient, model: str, alias: str, version: str, *, reason: str) -> None:
    previous = registry.alias_version(mlflow_client, model, alias)
    mlflow_client.set_registered_model_alias(model, alias, version)
    mlflow_client.set_model_version_tag(
        model,
        version,
        TAG_PROMOTED,
        json.dumps(
            {"alias": alias, "at": _now(), "by": getpass.getuser(), "previous": previous, "reason": reason}
        ),
    )
    if alias != contract.ALIAS_CHAMPION or previous == version:
        return
    registered = _registered_model(mlflow_client, model)
    history = [
        str(v) for v in registry.read_json_tag(dict(registered.tags or {}), contract.TAG_CHAMPION_HISTORY, [])
    ]
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # the alias was set outside the gate: keep it rollback-able
    history.append(version)
    mlflow_client.set_registered_model_tag(
        model, contract.TAG_CHAMPION_HISTORY, json.dumps(history[-_HISTORY_LIMIT:])
    )
