"""Exact TreeSHAP (numpy) equals XGBoost's pred_contribs, on rows with NaN, for every task and booster."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from treeserve import treeshap

FEATURES = 6


def _train(params: dict[str, Any], *, rounds: int = 25, seed: int = 0) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(800, FEATURES)).astype(np.float32)
    objective = params["objective"]
    if objective.startswith("multi"):
        y = np.digitize(x[:, 0] + x[:, 1], [-1.0, 0.0, 1.0])
    elif objective.startswith("reg"):
        y = 300 + 40 * x[:, 0] + 10 * x[:, 2] ** 2
    else:
        y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    x[rng.random(x.shape) < 0.15] = np.nan
    booster = xgb.train({"max_depth": 5, "eta": 0.3, "nthread": 1, **params}, xgb.DMatrix(x, label=y), rounds)
    probe = x[:120].copy()
    probe[::7, 1] = np.nan
    probe[-1, :] = np.nan  # every feature missing
    return booster, probe


def _explainer(booster: xgb.Booster, x: np.ndarray) -> treeshap.TreeExplainer:
    model = json.loads(bytes(booster.save_raw("json")))
    margin = booster.predict(xgb.DMatrix(x), output_margin=True).reshape(len(x), -1)
    probe = treeshap.TreeExplainer(treeshap.compile_xgboost(model, base_margin=[0.0] * margin.shape[1]))
    base = np.median(margin - probe.leaf_sum(x), axis=0)
    compiled = treeshap.compile_xgboost(model, base_margin=[float(b) for b in base])
    return treeshap.TreeExplainer(treeshap.loads(treeshap.dumps(compiled)))


CASES = {
    "binary": {"objective": "binary:logistic"},
    "multiclass": {"objective": "multi:softprob", "num_class": 4},
    "regression": {"objective": "reg:squarederror"},
    "dart": {"objective": "binary:logistic", "booster": "dart", "rate_drop": 0.2},
    "forest": {"objective": "binary:logistic", "num_parallel_tree": 3},
    "deep": {"objective": "binary:logistic", "max_depth": 9},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("table", [True, False], ids=["leaf-table", "direct"])
def test_contributions_equal_xgboost_pred_contribs(
    case: str, table: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not table:
        monkeypatch.setattr(treeshap, "_TABLE_ELEMENTS", 0)
    booster, x = _train(CASES[case])
    explainer = _explainer(booster, x)
    got = explainer.contributions(x)
    dm = xgb.DMatrix(x)
    want = booster.predict(dm, pred_contribs=True).reshape(len(x), -1, FEATURES + 1)
    margin = booster.predict(dm, output_margin=True).reshape(len(x), -1)
    scale = max(1.0, float(np.abs(margin).max()))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * scale
    assert np.abs(got.sum(axis=2) - margin).max() <= 1e-4 * scale  # efficiency: sum + bias = margin


def test_bias_is_the_same_for_every_row_and_a_row_of_nan_is_explained() -> None:
    booster, x = _train(CASES["binary"])
    got = _explainer(booster, x).contributions(x)
    assert np.all(got[:, :, -1] == got[0, 0, -1])
    assert np.all(np.isfinite(got[-1]))


def test_wrong_width_and_categorical_splits_are_refused() -> None:
    booster, x = _train(CASES["binary"])
    explainer = _explainer(booster, x)
    with pytest.raises(ValueError, match="6 features"):
        explainer.contributions(x[:, :3])
    model = json.loads(bytes(booster.save_raw("json")))
    model["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"][0] = 1
    with pytest.raises(treeshap.UnsupportedTreesError, match="categorical"):
        treeshap.compile_xgboost(model, base_margin=[0.0])


def test_empty_input_gives_an_empty_answer() -> None:
    booster, x = _train(CASES["multiclass"])
    assert _explainer(booster, x).contributions(x[:0]).shape == (0, 4, FEATURES + 1)
