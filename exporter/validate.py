"""Checks a converted model must pass before anything is written into the repository.

``onnx.checker`` first, then parity with XGBoost (the booster at its best iteration) on the
version's reference rows plus rows with NaNs: probabilities within ``proba_atol`` absolute,
regression outputs within ``regression_rtol`` of the output scale (max |y|, at least 1), and
classifier labels equal to the argmax XGBoost implies wherever the top two classes are not tied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from exporter.convert import run_onnx
from exporter.errors import ParityError, UnsupportedModelError
from exporter.trees import booster_json, split_ranges
from treeserve import contract

if TYPE_CHECKING:
    from exporter.source import SourceModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityReport:
    """The outcome of a parity check."""

    rows: int
    nan_rows: int
    max_abs_diff: float
    tolerance: float
    outputs: dict[str, np.ndarray]
    """ONNX Runtime's outputs on the parity inputs (stored as the canary reference)."""


def check_onnx(model_bytes: bytes, *, name: str) -> None:
    """Run ``onnx.checker`` (full check) on a serialized model."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise UnsupportedModelError(f"{name}: ONNX checker rejected the converted model: {e}") from e


def parity_inputs(src: SourceModel, *, rows: int, seed: int = 0) -> np.ndarray:
    """Reference rows (or generated ones) plus NaN rows, as float32 [n, n_features]."""
    rng = np.random.default_rng(seed)
    n_features = len(src.features)
    if src.reference is not None and len(src.reference):
        base = np.asarray(src.reference, dtype=np.float64)
        if len(base) > rows:
            base = base[rng.choice(len(base), size=rows, replace=False)]
    else:
        base = np.empty((0, n_features))
    if len(base) < rows:
        # A handful of example rows is a weak test: top up within the trees' split ranges.
        base = np.vstack([base, generated_rows(src, rows=rows - len(base), seed=seed)])
    base = base.astype(np.float32)
    # NaN rows: one all-missing row, one row per single missing feature, then random masks.
    n_random = max(8, len(base) // 8)
    picks = base[rng.integers(0, len(base), size=n_features + n_random)].copy()
    for i in range(n_features):
        picks[i, i] = np.nan
    mask = rng.random((n_random, n_features)) < 0.3
    picks[n_features:][mask] = np.nan
    all_nan = np.full((1, n_features), np.nan, dtype=np.float32)
    return np.vstack([base, picks, all_nan]).astype(np.float32)


def generated_rows(src: SourceModel, *, rows: int, seed: int = 0) -> np.ndarray:
    """Rows drawn uniformly within each feature's split-threshold range (± 10 %), for models without data."""
    rng = np.random.default_rng(seed)
    n_features = len(src.features)
    try:
        lo, hi = split_ranges(booster_json(src.booster), n_features)
    except (KeyError, ValueError, TypeError) as e:  # an unexpected layout: sample [0, 1]
        log.info("split ranges unavailable (%s); sampling in [0, 1]", e)
        lo, hi = np.zeros(n_features), np.ones(n_features)
    span = np.maximum(hi - lo, 1e-3)
    return rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(rows, n_features))


def xgboost_outputs(src: SourceModel, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What the booster says for ``inputs``, shaped like the contract's outputs."""
    import xgboost as xgb

    pred = np.asarray(src.booster.predict(xgb.DMatrix(inputs, missing=np.nan), validate_features=False))
    if src.task == "regression":
        return {contract.OUTPUT_PREDICTION: pred.reshape(-1, 1).astype(np.float64)}
    proba = np.column_stack([1.0 - pred, pred]) if src.task == "binary" and pred.ndim == 1 else pred
    return {contract.OUTPUT_PROBABILITIES: proba.astype(np.float64)}


def check_parity(
    src: SourceModel,
    model_bytes: bytes,
    inputs: np.ndarray,
    *,
    proba_atol: float,
    regression_rtol: float,
) -> ParityReport:
    """Compare ONNX Runtime with XGBoost on ``inputs``; ParityError naming the difference."""
    expected = xgboost_outputs(src, inputs)
    got = run_onnx(model_bytes, inputs)
    where = f"model {src.name!r} version {src.version}"
    nan_rows = int(np.isnan(inputs).any(axis=1).sum())
    if src.task == "regression":
        exp = expected[contract.OUTPUT_PREDICTION]
        out = got[contract.OUTPUT_PREDICTION].astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(exp))) if exp.size else 1.0)
        tol = regression_rtol * scale
        kind = f"regression outputs (tolerance {regression_rtol:g} x scale {scale:.4g})"
    else:
        exp = expected[contract.OUTPUT_PROBABILITIES]
        out = got[contract.OUTPUT_PROBABILITIES].astype(np.float64)
        tol = proba_atol
        kind = f"probabilities (tolerance {proba_atol:g})"
    if out.shape != exp.shape:
        raise ParityError(f"{where}: ONNX output shape {out.shape} differs from XGBoost's {exp.shape}")
    diff = np.abs(out - exp)
    max_diff = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.all(np.isfinite(out)) or max_diff > tol:
        row = int(np.unravel_index(np.nanargmax(diff), diff.shape)[0]) if diff.size else 0
        raise ParityError(
            f"{where}: ONNX {kind} differ from XGBoost by {max_diff:.3g} "
            f"(row {row} of {len(inputs)}, {nan_rows} rows with NaN); nothing was installed"
        )
    if src.task != "regression":
        _check_labels(where, exp, got[contract.OUTPUT_LABEL])
    log.info("parity ok", extra={"model": src.name, "version": src.version, "max_abs_diff": max_diff})
    return ParityReport(
        rows=len(inputs), nan_rows=nan_rows, max_abs_diff=max_diff, tolerance=tol, outputs=got
    )


def _check_labels(where: str, proba: np.ndarray, labels: np.ndarray) -> None:
    labels = labels.reshape(-1)
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    wrong = clear & (labels != np.argmax(proba, axis=1))
    if wrong.any():
        raise ParityError(f"{where}: ONNX labels differ from XGBoost's argmax on {int(wrong.sum())} rows")
