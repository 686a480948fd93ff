"""Attribution drift: has the model's reasoning moved, not only its inputs?

At export every version stores the mean |TreeSHAP contribution| per feature on its reference rows
(``treeserve.json`` ``attribution``). For a prediction-log window this module explains the same
rows the gateway scored (the version's missing-value policy applied, base-rate rows left out)
with the version's explainer (``explainer.json``, ``treeserve.treeshap``), takes the mean
|contribution| per feature, and compares each feature's *share* of the total attribution with the
reference's: a feature whose share moved by ``attribution_threshold`` or more is reported. Shares
make the comparison independent of the window's overall score level.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from drift.summary import AttributionShift
from treeserve import repository as repo_format
from treeserve import scoring, treeshap
from treeserve.errors import TreeserveError

if TYPE_CHECKING:
    from drift.settings import GatewayOutputs

log = logging.getLogger(__name__)


def shares(mean_abs: dict[str, float], features: list[str]) -> np.ndarray:
    """Each feature's share of the summed mean |contribution| (zeros when the sum is zero)."""
    v = np.array([max(0.0, float(mean_abs.get(f, 0.0))) for f in features])
    total = v.sum()
    return v / total if total > 0 else np.zeros(len(features))


def compare_attribution(
    reference: dict[str, float], current: dict[str, float], features: list[str], *, threshold: float
) -> list[AttributionShift]:
    """Per feature: reference vs current share of attribution, drifted at ``threshold`` or more."""
    ref, cur = shares(reference, features), shares(current, features)
    return [
        AttributionShift(
            feature=f,
            reference_share=float(r),
            current_share=float(c),
            shift=float(abs(c - r)),
            threshold=threshold,
            drifted=bool(abs(c - r) >= threshold),
        )
        for f, r, c in zip(features, ref, cur, strict=True)
    ]


def window_attribution(
    explainer: treeshap.TreeExplainer,
    current: pd.DataFrame,
    features: list[str],
    *,
    medians: dict[str, float],
    base_rate: float,
    gateway: GatewayOutputs,
) -> tuple[dict[str, float], int]:
    """(mean |contribution| per feature over the window's model rows, how many rows) — the gateway's inputs."""
    x = current[features].to_numpy(dtype=np.float64) if len(current) else np.empty((0, len(features)))
    policy = scoring.MissingValuePolicy.build(
        features,
        per_feature=gateway.missing_policy,
        default=gateway.default_missing_policy,
        unknown_entity=gateway.unknown_entity_policy,
    )
    prepared = scoring.prepare(
        x, policy, medians=scoring.median_vector(medians, features), base_rate=base_rate
    )
    if not len(prepared.inputs):
        return {f: 0.0 for f in features}, 0
    phi = explainer.contributions(prepared.inputs)[:, :, : len(features)]
    per_feature = np.abs(phi).sum(axis=1).mean(axis=0)
    return {f: float(v) for f, v in zip(features, per_feature, strict=True)}, len(prepared.inputs)


def attribution_drift(
    repository: Path,
    model: str,
    version: str,
    current: pd.DataFrame,
    features: list[str],
    *,
    gateway: GatewayOutputs,
    threshold: float,
) -> tuple[list[AttributionShift], str]:
    """(per-feature attribution drift, '' ) or ([], why it could not be computed)."""
    try:
        meta = repo_format.read_version_metadata(repository, model, version)
        folder = repo_format.version_dir(repository, repo_format.explainer_name(model), version)
        text = repo_format.explainer_file(folder).read_text()
    except (OSError, TreeserveError) as e:
        return [], f"version {version} has no explainer in {repository} ({e})"
    if not meta.attribution:
        return [], f"version {version} has no attribution reference (exported before explanations existed)"
    explainer = treeshap.TreeExplainer(treeshap.loads(text))
    mean_abs, rows = window_attribution(
        explainer, current, features, medians=dict(meta.medians), base_rate=meta.base_rate, gateway=gateway
    )
    if rows == 0:
        return [], "no window row was scored by the model (every row fell back to the base rate)"
    log.info("drift: attribution over %d model rows of %s version %s", rows, model, version)
    return compare_attribution(dict(meta.attribution), mean_abs, features, threshold=threshold), ""
