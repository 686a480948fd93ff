"""Exact TreeSHAP for XGBoost tree ensembles, numpy only (runs inside Triton's Python backend too).

XGBoost's ``pred_contribs`` is the path-dependent TreeSHAP of Lundberg et al. (2018): for one
leaf with value ``v`` whose root path tests the distinct features ``P``, the expected value given
a coalition ``S`` is the product game ``v * prod_{j in P} (o_j if j in S else z_j)``, where
``o_j`` is 1 when the row follows every branch on ``j`` along the path (missing values take the
default branch) and ``z_j`` is the product of the branches' cover fractions. The Shapley value of
feature ``i`` in that game is (multilinear extension)::

    phi_i = v * (o_i - z_i) * integral_0^1 prod_{j in P, j != i} (z_j + u * (o_j - z_j)) du

a polynomial of degree ``|P| - 1`` in ``u``, so Gauss-Legendre quadrature with
``|P| // 2 + 1`` nodes computes it exactly. A tree's contribution is the sum over its leaves,
the bias is the cover-weighted mean leaf value plus the model's base margin. Paths are padded to
one width with dummy features (``o = z = 1``), which change no Shapley value.

``compile_xgboost`` turns an XGBoost JSON model into plain lists (``explainer.json`` of a version);
``TreeExplainer`` evaluates it for a float32 matrix (NaN = missing) and returns
``[n, n_groups, n_features + 1]`` (the last column is the bias), in XGBoost's margin space.
This module imports nothing but numpy: the exporter copies it next to the Triton model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = 1
_CHUNK_ELEMENTS = 1 << 22
"""Rows are explained in chunks so that one [rows, leaves, path] array stays below ~4M values."""
_TABLE_ELEMENTS = 1 << 23
"""Leaf tables (every follow/not-follow pattern precomputed) are used up to this many values."""


class UnsupportedTreesError(ValueError):
    """The model holds something exact TreeSHAP here does not handle (categorical splits, vector leaves)."""


def _trees_of(model: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[int], list[float]]:
    booster = model["learner"]["gradient_booster"]
    name = booster.get("name", "gbtree")
    if name == "gblinear":
        raise UnsupportedTreesError("linear boosters have no trees")
    inner = booster.get("model") or booster.get("gbtree", {}).get("model") or {}
    trees = list(inner.get("trees", []))
    info = [int(g) for g in inner.get("tree_info", [0] * len(trees))]
    weights = [float(w) for w in booster.get("weight_drop", [])] if name == "dart" else []
    if len(weights) != len(trees):
        weights = [1.0] * len(trees)
    return trees, info, weights


def compile_xgboost(model: Mapping[str, Any], *, base_margin: Sequence[float]) -> dict[str, Any]:
    """The explainer description of an XGBoost JSON model (``Booster.save_raw("json")`` parsed).

    ``base_margin``: the model's margin with no tree (one value per output group), which the
    caller measures with XGBoost itself (its encoding of ``base_score`` varies between versions).
    """
    params = model["learner"]["learner_model_param"]
    n_features = int(params["num_feature"])
    trees, info, weights = _trees_of(model)
    n_groups = max(1, int(params.get("num_class", "0") or 0))
    if len(base_margin) != n_groups:
        raise UnsupportedTreesError(f"base margin has {len(base_margin)} values for {n_groups} output groups")
    out = []
    for t, (tree, group, weight) in enumerate(zip(trees, info, weights, strict=True)):
        if int(tree.get("tree_param", {}).get("size_leaf_vector", "1") or 1) > 1:
            raise UnsupportedTreesError(f"tree {t} has vector leaves (multi-target trees)")
        if any(int(s) != 0 for s in tree.get("split_type", [])):
            raise UnsupportedTreesError(f"tree {t} has categorical splits")
        out.append(
            {
                "group": group,
                "left": [int(v) for v in tree["left_children"]],
                "right": [int(v) for v in tree["right_children"]],
                "feature": [int(v) for v in tree["split_indices"]],
                "threshold": [float(v) for v in tree["split_conditions"]],
                "default_left": [int(v) for v in tree["default_left"]],
                "cover": [float(v) for v in tree["sum_hessian"]],
                "weight": weight,
            }
        )
    return {
        "format": FORMAT,
        "n_features": n_features,
        "n_groups": n_groups,
        "base_margin": [float(b) for b in base_margin],
        "trees": out,
    }


def dumps(compiled: Mapping[str, Any]) -> str:
    """``explainer.json`` text (``±inf`` thresholds as ``±Infinity``, which ``json.loads`` reads)."""
    return json.dumps(compiled, separators=(",", ":"))


def loads(text: str | bytes) -> dict[str, Any]:
    """The compiled description of ``explainer.json`` text."""
    return dict(json.loads(text))


def _gauss_legendre_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def _leaf_phi(o: np.ndarray, z: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Shapley values of the product games: ``o`` [..., L, D] in {0, 1}, ``z`` [L, D], ``value`` [L]."""
    depth = z.shape[-1]
    nodes, weights = _gauss_legendre_01(depth // 2 + 1)
    diff = o - z
    acc = np.zeros(np.broadcast_shapes(o.shape, z.shape))
    ones = np.ones((*acc.shape[:-1], 1))
    for u, w in zip(nodes, weights, strict=True):
        f = z + u * diff
        before = np.concatenate([ones, np.cumprod(f[..., :-1], axis=-1)], axis=-1)
        after = np.concatenate([np.cumprod(f[..., :0:-1], axis=-1)[..., ::-1], ones], axis=-1)
        acc += w * before * after
    return value[:, None] * diff * acc


class TreeExplainer:
    """Exact path-dependent TreeSHAP of a compiled ensemble (see ``compile_xgboost``)."""

    def __init__(self, compiled: Mapping[str, Any]) -> None:
        if int(compiled.get("format", 0)) != FORMAT:
            raise UnsupportedTreesError(f"explainer format {compiled.get('format')!r}, expected {FORMAT}")
        self.n_features = int(compiled["n_features"])
        self.n_groups = int(compiled["n_groups"])
        base = np.asarray(compiled["base_margin"], dtype=np.float64)
        feat: list[int] = []
        thr: list[float] = []
        dleft: list[bool] = []
        leaves: list[tuple[int, float, list[tuple[int, bool, int]], list[int], list[float]]] = []
        for tree in compiled["trees"]:
            offset = len(feat)
            feat += tree["feature"]
            thr += tree["threshold"]
            dleft += [bool(d) for d in tree["default_left"]]
            self._walk(tree, offset, leaves)
        self._node_feature = np.asarray(feat, dtype=np.int64)
        self._node_threshold = np.asarray(thr, dtype=np.float64).astype(np.float32)
        self._node_default_left = np.asarray(dleft, dtype=bool)
        n_leaves = len(leaves)
        depth = max([1, *(len(slots) for _, _, _, slots, _ in leaves)])
        steps = max([1, *(len(s) for _, _, s, _, _ in leaves)])
        self._value = np.zeros(n_leaves)
        self._leaf_group = np.asarray([g for g, _, _, _, _ in leaves], dtype=np.int64)
        self._z = np.ones((n_leaves, depth))
        self._step_node = np.zeros((n_leaves, steps), dtype=np.int64)
        self._step_left = np.zeros((n_leaves, steps), dtype=bool)
        self._step_slot = np.full((n_leaves, steps), -1, dtype=np.int64)
        width = self.n_features + 1
        dump = self.n_groups * width
        target = np.full((n_leaves, depth), dump, dtype=np.int64)
        bias = base.copy()
        for i, (group, value, path, slots, zs) in enumerate(leaves):
            self._value[i] = value
            self._z[i, : len(zs)] = zs
            for s, (node, went_left, slot) in enumerate(path):
                self._step_node[i, s], self._step_left[i, s], self._step_slot[i, s] = node, went_left, slot
            target[i, : len(slots)] = [group * width + f for f in slots]
            bias[group] += value * math.prod(zs)
        self._target = target.reshape(-1)
        self._bias = bias
        self._depth = depth
        self._table: np.ndarray | None = None
        if n_leaves * (2**depth) * depth <= _TABLE_ELEMENTS:
            patterns = ((np.arange(2**depth)[:, None] >> np.arange(depth)[None, :]) & 1).astype(np.float64)
            # [patterns, leaves, depth] -> [leaves * patterns, depth]: row leaf * 2**depth + pattern
            table = _leaf_phi(patterns[:, None, :], self._z, self._value).transpose(1, 0, 2)
            self._table = np.ascontiguousarray(table.reshape(n_leaves * 2**depth, depth))
            self._leaf_base = np.arange(n_leaves, dtype=np.int64) * 2**depth
            # A step that is not followed clears its slot's bit; padded steps clear nothing.
            self._step_bit = np.where(self._step_slot >= 0, 1 << np.maximum(self._step_slot, 0), 0).astype(
                np.int64
            )
        # The sum over leaves: slots sorted by their (group, feature) target, then one reduceat
        # (single-threaded; a BLAS product would spawn threads on a machine Triton shares).
        order = np.argsort(self._target, kind="stable")
        targets = self._target[order]
        starts = np.flatnonzero(np.r_[True, targets[1:] != targets[:-1]])
        keep = targets[starts] < dump
        self._slot_order = order
        self._group_starts = starts
        self._group_targets = targets[starts]
        self._group_keep = keep

    @staticmethod
    def _walk(
        tree: Mapping[str, Any],
        offset: int,
        leaves: list[tuple[int, float, list[tuple[int, bool, int]], list[int], list[float]]],
    ) -> None:
        left, right, cover = tree["left"], tree["right"], tree["cover"]
        weight, group = float(tree.get("weight", 1.0)), int(tree["group"])
        stack: list[tuple[int, list[tuple[int, bool, int]], list[int], list[float]]] = [(0, [], [], [])]
        while stack:
            node, path, slots, zs = stack.pop()
            if left[node] == -1:
                leaves.append((group, weight * float(tree["threshold"][node]), path, slots, zs))
                continue
            feature = int(tree["feature"][node])
            for child, went_left in ((left[node], True), (right[node], False)):
                frac = cover[child] / cover[node] if cover[node] > 0 else 0.0
                if feature in slots:
                    slot = slots.index(feature)
                    new_slots, new_zs = slots, [*zs[:slot], zs[slot] * frac, *zs[slot + 1 :]]
                else:
                    slot = len(slots)
                    new_slots, new_zs = [*slots, feature], [*zs, frac]
                stack.append((child, [*path, (offset + node, went_left, slot)], new_slots, new_zs))

    @property
    def bias(self) -> np.ndarray:
        """Expected margin per output group [n_groups]."""
        return self._bias.copy()

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """float32 ``x`` [n, n_features] (NaN = missing) -> float64 [n, n_groups, n_features + 1]."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        per_row = self._value.size * max(self._depth, self._step_node.shape[1])
        step = max(1, _CHUNK_ELEMENTS // max(1, per_row))
        parts = [self._explain(x[i : i + step]) for i in range(0, len(x), step)]
        if not parts:
            return np.zeros((0, self.n_groups, self.n_features + 1))
        return np.concatenate(parts, axis=0)

    def _explain(self, x: np.ndarray) -> np.ndarray:
        n, n_leaves = x.shape[0], self._value.size
        values = x[:, self._node_feature]
        go_left = np.where(np.isnan(values), self._node_default_left, values < self._node_threshold)
        follows = go_left[:, self._step_node] == self._step_left
        if self._table is not None:
            failed = np.bitwise_or.reduce(np.where(follows, 0, self._step_bit), axis=2)
            pattern = ((1 << self._depth) - 1) & ~failed
            phi = self._table[self._leaf_base + pattern]
        else:
            follows |= self._step_slot < 0
            o = np.empty((n, n_leaves, self._depth))
            for d in range(self._depth):
                o[:, :, d] = np.all(follows | (self._step_slot != d), axis=2)
            phi = _leaf_phi(o, self._z, self._value)
        width = self.n_groups * (self.n_features + 1)
        sums = np.add.reduceat(phi.reshape(n, -1)[:, self._slot_order], self._group_starts, axis=1)
        flat = np.zeros((n, width))
        flat[:, self._group_targets[self._group_keep]] = sums[:, self._group_keep]
        out = flat.reshape(n, self.n_groups, self.n_features + 1)
        out[:, :, -1] = self._bias
        return out

    def leaf_sum(self, x: np.ndarray) -> np.ndarray:
        """Sum of the leaf values each row reaches, per output group [n, n_groups] (no base margin)."""
        x = np.asarray(x, dtype=np.float32)
        values = x[:, self._node_feature]
        go_left = np.where(np.isnan(values), self._node_default_left, values < self._node_threshold)
        follows = np.all((go_left[:, self._step_node] == self._step_left) | (self._step_slot < 0), axis=2)
        out = np.zeros((x.shape[0], self.n_groups))
        for g in range(self.n_groups):
            mask = self._leaf_group == g
            out[:, g] = follows[:, mask].astype(np.float64) @ self._value[mask]
        return out
