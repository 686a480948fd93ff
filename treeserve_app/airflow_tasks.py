"""The Airflow DAG's task bodies: a JSON-able run config and upstream outcomes in, a JSON-able
outcome out (XCom). Each runs in treeserve's own virtual environment (the DAG's
``@task.external_python`` tasks) and calls one ``treeserve_app.steps`` function.

The run config, built by the DAG's ``resolve_config`` task from Airflow Variables and the run's
conf::

    {"settings": {...nested Settings overrides...}, "force_retrain": bool,
     "drift_since": str | None, "drift_last": int | None, "score_date": "YYYY-MM-DD" | None}

Settings not overridden come from the environment (``TREESERVE_*``) and treeserve's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from treeserve_app import steps

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

Config = Mapping[str, Any]
Outcome = dict[str, Any]


def task_settings(config: Config) -> Any:
    """Settings for one task: the environment and defaults, overridden by ``config["settings"]``;
    treeserve's log lines go to the task log."""
    from treeserve.logs import setup_logging
    from treeserve_app.settings import load_settings

    settings = load_settings(**dict(config.get("settings") or {}))
    setup_logging(settings.log_level, json_lines=settings.log_json)
    return settings


def _model(settings: Settings) -> str:
    return str(settings.mlflow.model_name)


def _version(trained: Outcome) -> str:
    return str(trained["detail"]["version"])


def materialize(config: Config) -> Outcome:
    """Newest snapshot per entity -> online store."""
    return steps.materialize_step(task_settings(config)).to_dict()


def drift(config: Config) -> Outcome:
    """Drift check of the serving version over the prediction log."""
    s = task_settings(config)
    return steps.drift_step(
        s, _model(s), since=config.get("drift_since"), last=config.get("drift_last")
    ).to_dict()


def retrain_reason(config: Config, drift_outcome: Outcome) -> str:
    """Why this run retrains ("" = it does not): drift, ``force_retrain`` or a champion due."""
    s = task_settings(config)
    why = steps.retrain_reason(
        s,
        _model(s),
        drifted=drift_outcome.get("detail", {}).get("verdict") == "drift",
        force_retrain=bool(config.get("force_retrain")),
    )
    logging.getLogger(__name__).info(
        "retrain decision: %s", why or "no retraining (no drift, not forced, not due)"
    )
    return why


def train(config: Config, reason: str = "") -> Outcome:
    """Train and register a new version."""
    return steps.retrain_step(task_settings(config), reason).to_dict()


def gate(config: Config, trained: Outcome) -> Outcome:
    """The promotion gate's checks on the new version (no alias move)."""
    s = task_settings(config)
    return steps.gate_step(s, _model(s), _version(trained)).to_dict()


def promote(config: Config, trained: Outcome) -> Outcome:
    """Move ``champion`` to the new version (the gate is checked again against the champion of now)."""
    s = task_settings(config)
    return steps.alias_step(s, _model(s), _version(trained)).to_dict()


def wait_served(
    config: Config,
    trained: Outcome,
    promoted: Outcome,
    *,
    sync: steps.SyncPass,
    triton_for: Callable[[Any], steps.ReadyVersions],
) -> Outcome:
    """Sync the Triton repository and wait until the new version is served (rollback otherwise).

    ``sync`` runs one sync pass and ``triton_for(settings)`` gives Triton's readiness (the DAG
    hands in ``treeserve_app.commands.pipeline``'s, which wrap the exporter).
    """
    s = task_settings(config)
    previous = promoted.get("detail", {}).get("previous")
    triton = triton_for(s)
    try:
        return steps.sync_step(
            s, _model(s), _version(trained), previous=previous, sync=sync, triton=triton
        ).to_dict()
    finally:
        close = getattr(triton, "close", None)
        if close is not None:
            close()


def batch_score(config: Config) -> Outcome:
    """Score every active entity with the serving version for the run's date."""
    s = task_settings(config)
    day = config.get("score_date")
    return steps.score_step(s, _model(s), date.fromisoformat(day) if day else None).to_dict()


def score_check(config: Config, scored: Outcome) -> Outcome:
    """The day's score distribution against the previous scored day."""
    s = task_settings(config)
    return steps.score_check_step(s, _model(s), date.fromisoformat(scored["detail"]["score_date"])).to_dict()
