"""Building a workload from the settings: the model's contract from the Triton repository, known
entity ids from the demo data (or an entities file), real feature rows for raw/Triton requests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loadtest.errors import LoadtestConfigError
from loadtest.settings import LoadtestConfig
from loadtest.workload import Workload, load_entity_ids, load_feature_rows
from treeserve.errors import TreeserveError

log = logging.getLogger(__name__)

Target = Literal["gateway", "gateway-grpc", "triton"]
TARGETS: tuple[str, ...] = ("gateway", "gateway-grpc", "triton")
STATS_FILE = "customer_stats.parquet"
CUSTOMERS_FILE = "customers.parquet"
MAX_FEATURE_ROWS = 500


def _repository_model(settings: LoadtestConfig, model: str) -> Any | None:
    from treeserve.repository import read_model_config

    try:
        return read_model_config(settings.path(settings.exporter.repository), model)
    except TreeserveError as e:
        log.info("no repository config for %s: %s", model, e)
        return None


def _reference_rows(settings: LoadtestConfig, model: str, version: str) -> list[list[float]]:
    from treeserve.repository import read_reference

    try:
        inputs = read_reference(settings.path(settings.exporter.repository), model, version).inputs
    except TreeserveError:
        return []
    inputs = np.asarray(inputs, dtype=np.float64)
    complete = inputs[~np.isnan(inputs).any(axis=1)]
    return complete[:MAX_FEATURE_ROWS].tolist()


def build_workload(
    settings: LoadtestConfig, *, target: str = "gateway", entities_file: Path | None = None
) -> Workload:
    """The workload for ``target``: gateway targets need known ids, Triton needs the model's features."""
    if target not in TARGETS:
        raise LoadtestConfigError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")
    lt = settings.loadtest
    model = settings.gateway.model
    repo_model = _repository_model(settings, model)
    features = repo_model.features if repo_model else []
    entity_key = (repo_model.entity_keys[0] if repo_model and repo_model.entity_keys else "") or lt.entity_key
    version = ""
    if repo_model:
        version = repo_model.version_for("champion") or (
            str(max(repo_model.versions)) if repo_model.versions else ""
        )
    if target == "triton" and not (repo_model and version):
        raise LoadtestConfigError(
            f"model {model!r} has no served version in {settings.path(settings.exporter.repository)}: export one first"
        )

    ids_path = entities_file or lt.entities_file
    ids_path = settings.path(ids_path) if ids_path else settings.path(settings.data.data_dir) / CUSTOMERS_FILE
    known_ids: list[str] = []
    if target == "triton":
        known_ids = []  # Triton takes features, not ids
    else:
        known_ids = load_entity_ids(ids_path, entity_key, limit=lt.max_entities, seed=lt.seed)

    stats_path = settings.path(settings.data.data_dir) / STATS_FILE
    rows = load_feature_rows(stats_path, features, limit=MAX_FEATURE_ROWS, seed=lt.seed)
    if not rows and repo_model and version:
        rows = _reference_rows(settings, model, version)
    if target == "triton" and not rows:
        raise LoadtestConfigError(
            f"no feature rows for model {model!r}: neither {stats_path} nor a reference.npz"
        )

    max_batch = settings.gateway.max_entities
    if target == "triton" and repo_model:
        max_batch = repo_model.spec.max_batch_size
    mix = lt.mix
    return Workload(
        model=model,
        entity_key=entity_key,
        known_ids=known_ids,
        feature_names=features,
        feature_rows=rows,
        model_version=version,
        weights={"single": mix.single, "batch": mix.batch, "unknown": mix.unknown, "raw": mix.raw},
        batch_min=mix.batch_min,
        batch_max=mix.batch_max,
        max_batch=max_batch,
    )
