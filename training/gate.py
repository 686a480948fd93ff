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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from training import registry
from training.errors import ModelNotFoundError
from treeserve import contract
from treeserve.errors import ConfigError, NotFoundError
from treeserve.registry import (
    HISTORY_LIMIT,
    ModelState,
    mlflow_errors,
    read_model_state,
    record_champion,
    with_champion,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from training.settings import TrainingConfig
    from treeserve.registry_clients import RegistryClient

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
    already: bool = False
    """The alias already pointed at this version: nothing was checked or moved."""

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
    import numpy as np
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
    champion_unscorable: str = "",
) -> tuple[list[GateCheck], float | None, float | None]:
    """The gate's checks on a candidate's held-out scores (pure: no MLflow).

    ``champion_version`` is the other version holding ``champion`` (None when there is none);
    ``champion_scores`` its scores on the same rows, None when it cannot score them
    (``champion_unscorable`` says why). Exactly one ``vs_champion`` check comes back.
    """
    import numpy as np
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
    if champion_version is None:
        checks.append(
            GateCheck(
                "vs_champion",
                auc is not None,
                "no other champion to compare with" if auc is not None else "held-out rows lack both classes",
            )
        )
    elif champion_scores is None:
        why = champion_unscorable or "it gave no scores"
        checks.append(
            GateCheck(
                "vs_champion", False, f"champion v{champion_version} cannot score the held-out rows: {why}"
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


def gate(
    settings: TrainingConfig, model: str, version: str | int, *, alias: str = contract.ALIAS_CHAMPION
) -> GateResult:
    """Run the gate's checks on ``model`` ``version`` and record them as version tags; moves no alias."""
    mlflow_client = registry.client(settings)
    result = _check(settings, mlflow_client, model, version, alias=alias, force=False, move=False)
    _write_gate_tags(mlflow_client, result, None)
    log.info(
        "gate model=%s version=%s passed=%s reason=%s", model, result.version, result.passed, result.reason
    )
    return result


def promote(
    settings: TrainingConfig,
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
    # The lookups need no MLflow import: a wrong name or an alias already in place answers in
    # well under a second; scoring below loads MLflow, XGBoost and pandas.
    lookups = registry.registry_client(settings)
    current = str(registry.get_version(lookups, model, version).version)
    if registry.alias_version(lookups, model, alias) == current:
        return GateResult(
            model=model,
            version=current,
            alias=alias,
            passed=True,
            forced=False,
            alias_moved=False,
            already=True,
        )
    mlflow_client = registry.client(settings)
    result = _check(settings, mlflow_client, model, version, alias=alias, force=force, move=True)
    _write_gate_tags(mlflow_client, result, reason)
    if result.alias_moved:
        _move_alias(
            mlflow_client,
            model,
            alias,
            result.version,
            reason=reason or ("gate passed" if result.passed else ""),
        )
    log.info(
        "gate model=%s version=%s alias=%s passed=%s forced=%s moved=%s reason=%s",
        model,
        result.version,
        alias,
        result.passed,
        result.forced,
        result.alias_moved,
        result.reason,
    )
    return result


def _check(
    settings: TrainingConfig,
    mlflow_client: MlflowClient,
    model: str,
    version: str | int,
    *,
    alias: str,
    force: bool,
    move: bool,
) -> GateResult:
    """Score the version's holdout (and the champion's on the same rows) and run the checks."""
    import numpy as np

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
        other = champion if champion is not None and champion != version else None
        champ_scores, unscorable = (
            _champion_scores(mlflow_client, model, other, holdout) if other else (None, "")
        )
        checks, auc, champ_auc = evaluate(
            scores,
            labels,
            champion_scores=champ_scores,
            champion_version=other,
            auc_tolerance=settings.training.gate_auc_tolerance,
            min_std=settings.training.gate_min_score_std,
            champion_unscorable=unscorable,
        )

    passed = all(c.passed for c in checks)
    return GateResult(
        model=model,
        version=version,
        alias=alias,
        passed=passed,
        forced=force and not passed,
        alias_moved=move and (passed or force),
        checks=checks,
        roc_auc=auc,
        champion_version=champion,
        champion_roc_auc=champ_auc,
    )


def rollback(
    settings: TrainingConfig, model: str, *, client: RegistryClient | MlflowClient | None = None
) -> RollbackResult:
    """Move ``champion`` back to the previous champion recorded in the history tag.

    ``client`` replaces the registry client built from ``settings`` (tests pass an in-memory
    registry). Rollback only reads and writes registry entries, so it never imports MLflow for an
    ``http(s)://`` or ``sqlite:///`` registry (``treeserve.registry.registry_client``).
    """
    mlflow_client = client if client is not None else registry.registry_client(settings)
    state = _model_state(mlflow_client, model)
    current = state.champion
    if current is None:
        raise ModelNotFoundError(f"model {model!r} has no champion to roll back")
    previous = state.previous_champions()
    if not previous:
        raise ModelNotFoundError(
            f"model {model!r} has no previous champion to roll back to (champion is v{current})"
        )
    target = previous[0]
    history = list(state.champion_history)
    while history and history[-1] != target:
        history.pop()  # drop the rolled-back-from champion(s): the target is current again
    registry.get_version(mlflow_client, model, target)
    now, user = _now(), getpass.getuser()
    with mlflow_errors(f"rollback of {model!r}"):
        mlflow_client.set_registered_model_alias(model, contract.ALIAS_CHAMPION, target)
        mlflow_client.set_registered_model_tag(
            model, contract.TAG_CHAMPION_HISTORY, json.dumps(history[-HISTORY_LIMIT:])
        )
        mlflow_client.set_model_version_tag(
            model, current, TAG_ROLLED_BACK, json.dumps({"at": now, "by": user, "to": target})
        )
        mlflow_client.set_model_version_tag(
            model,
            target,
            TAG_PROMOTED,
            json.dumps(
                {
                    "alias": contract.ALIAS_CHAMPION,
                    "at": now,
                    "by": user,
                    "previous": current,
                    "rollback": True,
                }
            ),
        )
    log.info("rollback model=%s from=%s to=%s", model, current, target)
    return RollbackResult(model=model, from_version=current, to_version=target)


def champion_since(settings: TrainingConfig, model: str) -> datetime | None:
    """When ``champion`` was moved to its current version (None when the model has no champion).

    Read from the version's promotion tag; an alias set outside treeserve counts from the
    version's registration time.
    """
    mlflow_client = registry.registry_client(settings)
    champion = registry.alias_version(mlflow_client, model, contract.ALIAS_CHAMPION)
    if champion is None:
        return None
    with mlflow_errors(f"champion of {model!r}"):
        mv = mlflow_client.get_model_version(model, champion)
    promoted = registry.read_json_tag(dict(mv.tags or {}), TAG_PROMOTED, {})
    if isinstance(promoted, dict) and promoted.get("at"):
        return datetime.fromisoformat(str(promoted["at"]))
    return datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC)


def champion_history(settings: TrainingConfig, model: str) -> list[str]:
    """Versions that held ``champion``, oldest first, current last."""
    return _model_state(registry.registry_client(settings), model).champion_history


# ---- helpers ---------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _model_state(mlflow_client: RegistryClient | MlflowClient, model: str) -> ModelState:
    try:
        return read_model_state(mlflow_client, model)
    except ModelNotFoundError:
        raise
    except NotFoundError as e:
        raise ModelNotFoundError(f"registered model {model!r} not found") from e


def _champion_scores(
    mlflow_client: MlflowClient, model: str, champion: str, holdout: pd.DataFrame
) -> tuple[np.ndarray | None, str]:
    """The champion's scores on the candidate's held-out rows, or None and the reason it has none."""
    champ = registry.get_version(mlflow_client, model, champion)
    features = registry.read_json_tag(dict(champ.tags or {}), contract.TAG_FEATURES, None)
    if not features:
        return None, f"it has no {contract.TAG_FEATURES} tag"
    missing = [f for f in features if f not in holdout.columns]
    if missing:
        return None, f"the held-out rows lack its features {missing}"
    return score(_load_model(model, champion), holdout[features]), ""


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
    with mlflow_errors(f"gate tags on {result.model!r} version {result.version}"):
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(result.model, result.version, key, value)


def _move_alias(mlflow_client: MlflowClient, model: str, alias: str, version: str, *, reason: str) -> None:
    previous = registry.alias_version(mlflow_client, model, alias)
    with mlflow_errors(f"alias {alias!r} of {model!r}"):
        mlflow_client.set_registered_model_alias(model, alias, version)
        mlflow_client.set_model_version_tag(
            model,
            version,
            TAG_PROMOTED,
            json.dumps(
                {
                    "alias": alias,
                    "at": _now(),
                    "by": getpass.getuser(),
                    "previous": previous,
                    "reason": reason,
                }
            ),
        )
    if alias != contract.ALIAS_CHAMPION or previous == version:
        return
    state = _model_state(mlflow_client, model)
    if state.champion_history[-1:] == [version]:
        return  # the sync recorded it already (it serves champions as soon as the alias moves)
    # A previous champion set outside the gate is recorded first, so it stays rollback-able.
    seen = replace(state, champion_history=with_champion(state.champion_history, previous))
    record_champion(mlflow_client, seen, version)
