"""Attribution drift: shares of mean |TreeSHAP contribution|, window vs reference, in every output."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from drift import outputs
from drift.attribution import attribution_drift, compare_attribution, window_attribution
from drift.summary import DriftSummary
from tests.unit.drift.test_outputs import _summary
from treeserve import treeshap

FEATURES = ["a", "b", "c"]
GATEWAY = SimpleNamespace(
    missing_policy={}, default_missing_policy="impute", unknown_entity_policy="fallback"
)


def _explainer() -> tuple[xgb.Booster, treeshap.TreeExplainer, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (2 * x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgb.DMatrix(x, label=y), 20
    )
    model = json.loads(bytes(booster.save_raw("json")))
    margin = booster.predict(xgb.DMatrix(x), output_margin=True).reshape(-1, 1)
    probe = treeshap.TreeExplainer(treeshap.compile_xgboost(model, base_margin=[0.0]))
    base = float(np.median(margin - probe.leaf_sum(x)))
    return booster, treeshap.TreeExplainer(treeshap.compile_xgboost(model, base_margin=[base])), x


def test_a_share_that_moves_past_the_threshold_is_reported() -> None:
    got = compare_attribution(
        {"a": 3.0, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 0.0}, FEATURES, threshold=0.1
    )
    by = {g.feature: g for g in got}
    assert by["a"].reference_share == pytest.approx(0.75) and by["a"].current_share == pytest.approx(0.5)
    assert by["a"].drifted and by["b"].drifted and not by["c"].drifted
    same = compare_attribution({"a": 3.0, "b": 1.0}, {"a": 6.0, "b": 2.0}, FEATURES, threshold=0.1)
    assert not any(g.drifted for g in same)  # scale alone is no drift


def test_window_attribution_is_xgboost_mean_abs_contribution_on_the_gateway_inputs() -> None:
    booster, explainer, x = _explainer()
    window = x[:200].astype(np.float64)
    window[::3, 1] = np.nan  # imputed with the median, like the gateway
    window[5, :] = np.nan  # an unknown entity: base rate, not explained
    medians = {"a": 0.0, "b": 0.5, "c": -0.25}
    got, rows = window_attribution(
        explainer,
        pd.DataFrame(window, columns=FEATURES),
        FEATURES,
        medians=medians,
        base_rate=0.3,
        gateway=GATEWAY,
    )
    seen = np.where(np.isnan(window), [0.0, 0.5, -0.25], window)
    seen = np.delete(seen, 5, axis=0).astype(np.float32)
    want = np.abs(booster.predict(xgb.DMatrix(seen), pred_contribs=True)[:, :3]).mean(axis=0)
    assert rows == 199
    assert [got[f] for f in FEATURES] == pytest.approx(want.tolist(), abs=1e-5)


def test_versions_without_an_explainer_say_why(tmp_path: Path) -> None:
    frame = pd.DataFrame(np.zeros((3, 3)), columns=FEATURES)
    shifts, note = attribution_drift(tmp_path, "m", "1", frame, FEATURES, gateway=GATEWAY, threshold=0.1)
    assert shifts == [] and "no explainer" in note


def test_attribution_reaches_json_html_and_the_textfile(tmp_path: Path) -> None:
    shifts = compare_attribution({"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, FEATURES, threshold=0.1)
    summary = replace(_summary(), attribution=shifts)
    d = summary.to_dict()
    assert d["attribution_drifted"] == ["a", "b"]
    assert DriftSummary.from_dict(json.loads(json.dumps(d))).attribution == shifts
    assert [a["feature"] for a in summary.alert_payload()["attribution_drifted"]] == ["a", "b"]
    path = tmp_path / "drift.prom"
    outputs.write_textfile(path, summary)
    text = path.read_text()
    assert 'treeserve_drift_attribution_shift{feature="a",model="m",version="2"} 0.25' in text
    assert 'treeserve_drift_attribution_drifted{model="m",version="2"} 2.0' in text
    section = outputs.attribution_html(summary)
    assert "Attribution drift" in section and "<td>a</td>" in section
