"""Reading and repairing the trees of an XGBoost model through its JSON form.

XGBoost (3.x, e.g. boosters trained on GPU with ``hist``) can hold split thresholds of ``±inf``.
XGBoost routes a present value ``x`` left when ``x < threshold``, so ``-inf`` sends every present
value right and ``+inf`` sends every finite value left. Its text/JSON *dump* prints them as bare
``-inf``/``inf``, which is not JSON: onnxmltools cannot parse such a dump. ``finite_thresholds``
rewrites them to ``∓FLT_MAX`` (the float32 extremes the ONNX tree ensemble compares in), which
routes every finite input the same way; missing values keep their default direction.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import UnsupportedModelError

if TYPE_CHECKING:
    import xgboost as xgb

log = logging.getLogger(__name__)

FLT_MAX = float(np.finfo(np.float32).max)


def model_trees(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The trees of an XGBoost JSON model (``gbtree`` and ``dart``)."""
    booster = model["learner"]["gradient_booster"]
    inner = booster.get("model") or booster.get("gbtree", {}).get("model") or {}
    return list(inner.get("trees", []))


def splits(tree: dict[str, Any]) -> Iterator[tuple[int, int, float]]:
    """(node, feature index, threshold) of every split node of one tree."""
    left = tree["left_children"]
    for node, (feature, threshold) in enumerate(
        zip(tree["split_indices"], tree["split_conditions"], strict=True)
    ):
        if left[node] != -1:
            yield node, int(feature), float(threshold)


def split_ranges(model: dict[str, Any], n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the smallest and largest finite split threshold ([0, 1] where there is none)."""
    lo = np.full(n_features, np.inf)
    hi = np.full(n_features, -np.inf)
    for tree in model_trees(model):
        for _, feature, threshold in splits(tree):
            if 0 <= feature < n_features and math.isfinite(threshold):
                lo[feature] = min(lo[feature], threshold)
                hi[feature] = max(hi[feature], threshold)
    unseen = lo > hi
    lo[unseen], hi[unseen] = 0.0, 1.0
    return lo, hi


def booster_json(booster: xgb.Booster) -> dict[str, Any]:
    """The booster's JSON model (XGBoost writes ``±Infinity``, which ``json`` reads)."""
    return dict(json.loads(bytes(booster.save_raw("json"))))


def finite_thresholds(booster: xgb.Booster, *, where: str) -> tuple[xgb.Booster, int]:
    """``booster`` with its ``±inf`` split thresholds rewritten to ``±FLT_MAX``; (booster, how many).

    Returns ``booster`` itself when nothing needed rewriting. UnsupportedModelError when a leaf
    value or a threshold is NaN or infinite in a way no finite threshold can express.
    """
    import xgboost as xgb

    model = booster_json(booster)
    rewritten = 0
    for t, tree in enumerate(model_trees(model)):
        conditions = tree["split_conditions"]
        split_nodes = {node for node, _, _ in splits(tree)}
        for node, value in enumerate(conditions):
            value = float(value)
            if math.isfinite(value):
                continue
            if node not in split_nodes:
                raise UnsupportedModelError(f"{where}: tree {t} node {node} has a leaf value of {value}")
            if math.isnan(value):
                raise UnsupportedModelError(f"{where}: tree {t} node {node} splits on a NaN threshold")
            conditions[node] = -FLT_MAX if value < 0 else FLT_MAX
            rewritten += 1
    if not rewritten:
        return booster, 0
    log.info("%s: %d split thresholds of ±inf rewritten to ±FLT_MAX before conversion", where, rewritten)
    fixed = xgb.Booster()
    fixed.load_model(bytearray(json.dumps(model).encode()))
    return fixed, rewritten
