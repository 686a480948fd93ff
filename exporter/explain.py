"""The explainer companion of a version: compile its trees, gate them against XGBoost, write them.

``build_explainer`` compiles the booster's trees for ``treeserve.treeshap`` and holds the result
to XGBoost itself on the version's parity inputs (reference rows plus NaN rows): every
contribution within ``CONTRIBUTIONS_ATOL`` of ``pred_contribs``, and each row's contributions plus
bias within the same of the margin (``output_margin``). XGBoost sums in float32, so for margins
beyond 1 in magnitude (regressors with targets in the hundreds) the tolerance scales with the
largest |margin|, like the regression parity of the predictions. ``write_explainer_version`` lays out the
companion's version directory (``treeserve.repository.explainer``): the Triton Python model, the
numpy-only TreeSHAP module beside it, the compiled trees, and the canary reference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporter.errors import ParityError, UnsupportedModelError
from exporter.flavors import PYTHON_MODEL_FILE
from treeserve import contract, treeshap
from treeserve import repository as repo_mod
from treeserve.repository import VersionMetadata

if TYPE_CHECKING:
    from exporter.source import SourceModel

log = logging.getLogger(__name__)

CONTRIBUTIONS_ATOL = 1e-4
"""Contributions vs XGBoost ``pred_contribs``, and contributions + bias vs the margin."""
TREESHAP_FILE = "treeshap.py"
_TEMPLATE = Path(__file__).with_name("explainer_model.py.tmpl")
FILES: tuple[str, ...] = (PYTHON_MODEL_FILE, TREESHAP_FILE, repo_mod.EXPLAINER_FILE)


@dataclass(frozen=True)
class ExplainerBuild:
    """A compiled explainer that matched XGBoost."""

    compiled: dict[str, object]
    contributions: np.ndarray
    """float64 [n, n_groups, n_features + 1] on the parity inputs (bias last)."""
    max_abs_diff: float
    """Worst |contribution - pred_contribs| and |sum - margin| on the parity inputs."""
    attribution: dict[str, float]
    """Mean |contribution| per feature on the reference rows (classes summed)."""


def xgboost_contributions(src: SourceModel, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``pred_contribs`` [n, n_groups, n_features + 1], margin [n, n_groups]) of the booster."""
    import xgboost as xgb

    dm = xgb.DMatrix(np.asarray(inputs, dtype=np.float32), missing=np.nan)
    n, width = len(inputs), len(src.features) + 1
    contribs = np.asarray(src.booster.predict(dm, pred_contribs=True, validate_features=False))
    margin = np.asarray(src.booster.predict(dm, output_margin=True, validate_features=False))
    return contribs.reshape(n, -1, width).astype(np.float64), margin.reshape(n, -1).astype(np.float64)


def mean_abs_attribution(
    contributions: np.ndarray, features: list[str] | tuple[str, ...]
) -> dict[str, float]:
    """Mean |contribution| per feature over rows, summed over output groups (bias excluded)."""
    c = np.asarray(contributions, dtype=np.float64)
    if c.ndim == 2:
        c = c[:, None, :]
    per_feature = (
        np.abs(c[:, :, : len(features)]).sum(axis=1).mean(axis=0) if len(c) else np.zeros(len(features))
    )
    return {f: float(v) for f, v in zip(features, per_feature, strict=True)}


def build_explainer(
    src: SourceModel, inputs: np.ndarray, *, reference_rows: int, atol: float = CONTRIBUTIONS_ATOL
) -> ExplainerBuild:
    """Compile ``src``'s trees and check them against XGBoost on ``inputs``; ParityError beyond ``atol``.

    ``reference_rows``: how many leading rows of ``inputs`` are reference rows (the attribution
    reference is computed on them; the rest are NaN probes).
    """
    where = f"model {src.name!r} version {src.version}"
    model = json.loads(src.xgboost_json or bytes(src.booster.save_raw("json")))
    expected, margin = xgboost_contributions(src, inputs)
    try:
        probe = treeshap.TreeExplainer(treeshap.compile_xgboost(model, base_margin=[0.0] * margin.shape[1]))
        base = (
            np.median(margin - probe.leaf_sum(inputs), axis=0) if len(inputs) else np.zeros(margin.shape[1])
        )
        compiled = treeshap.compile_xgboost(model, base_margin=[float(b) for b in base])
        got = treeshap.TreeExplainer(compiled).contributions(inputs)
    except (treeshap.UnsupportedTreesError, KeyError, IndexError) as e:
        raise UnsupportedModelError(f"{where}: no exact TreeSHAP explainer for this model: {e}") from e
    nan_rows = int(np.isnan(inputs).any(axis=1).sum())
    if got.shape != expected.shape:
        raise ParityError(f"{where}: contributions shape {got.shape} differs from XGBoost's {expected.shape}")
    diff = np.abs(got - expected)
    sums = np.abs(got.sum(axis=2) - margin)
    worst = max(float(diff.max(initial=0.0)), float(sums.max(initial=0.0)))
    tolerance = atol * max(1.0, float(np.abs(margin).max(initial=0.0)))
    if not np.all(np.isfinite(got)) or worst > tolerance:
        what = (
            "contributions differ from XGBoost pred_contribs"
            if diff.max(initial=0.0) > tolerance
            else "contributions + bias differ from the margin"
        )
        row = int(np.unravel_index(np.argmax(diff), diff.shape)[0]) if diff.size else 0
        raise ParityError(
            f"{where}: {what} by {worst:.3g} > {tolerance:.3g} (row {row} of {len(inputs)}, "
            f"{nan_rows} rows with NaN); nothing was installed"
        )
    reference = got[: max(0, reference_rows)]
    log.info("explainer parity ok", extra={"model": src.name, "version": src.version, "max_abs_diff": worst})
    return ExplainerBuild(
        compiled=compiled,
        contributions=got,
        max_abs_diff=worst,
        attribution=mean_abs_attribution(reference, src.features),
    )


def write_explainer_version(
    folder: Path, build: ExplainerBuild, inputs: np.ndarray, metadata: VersionMetadata
) -> list[str]:
    """Write the companion's version directory into ``folder`` (staging); ``treeserve.json`` last."""
    folder = Path(folder)
    (folder / PYTHON_MODEL_FILE).write_text(_TEMPLATE.read_text())
    (folder / TREESHAP_FILE).write_text(Path(treeshap.__file__).read_text())
    (folder / repo_mod.EXPLAINER_FILE).write_text(treeshap.dumps(build.compiled))
    repo_mod.write_reference(
        folder, inputs, {contract.OUTPUT_CONTRIBUTIONS: build.contributions.astype(np.float32)}
    )
    repo_mod.write_version_metadata(folder, replace(metadata, files=FILES))
    return list(FILES)
