"""The scoring policy: missing values, the base-rate fallback, and model outputs -> scores.

Pure numpy, shared by the gateway (model inputs scored by Triton) and batch scoring (scored by
ONNX Runtime in-process), so a batch score equals the gateway's score for the same row by
construction::

    x float64 [n, f], NaN = missing
      -> prepare()  rows with a missing ``fallback`` feature, or with every feature missing (an
                    unknown entity, when that policy is ``fallback``), get the version's base rate
                    and a reason; the other rows have their gaps filled with the version's
                    training medians -> model inputs float32 [m, f]
      -> the model (Triton, ONNX Runtime) -> raw output rows
      -> finish()   output -> score per row: P(class 1) for binary, the highest probability (and
                    its class) for multiclass, the value for regression

Explanations (TreeSHAP contributions of the model inputs) become reasons with ``top_reasons``:
the features pushing the score up, largest first, with the value the model saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from treeserve import contract

MissingPolicy = Literal["impute", "fallback"]

FALLBACK_UNKNOWN_ENTITY = "unknown_entity"
"""Reason of a row with no feature at all (a cold-start entity)."""
FALLBACK_MISSING_FEATURES = "missing_features"
"""Reason prefix of a row missing a feature whose policy is ``fallback`` (``missing_features:a,b``)."""


@dataclass(frozen=True)
class MissingValuePolicy:
    """What a missing value does, resolved for one ordered feature list."""

    features: tuple[str, ...]
    fallback_features: np.ndarray
    """bool [n_features]: a missing value of this feature answers the base rate."""
    unknown_entity_fallback: bool
    """A row with every feature missing answers the base rate (else it is imputed)."""

    @classmethod
    def build(
        cls,
        features: Sequence[str],
        *,
        per_feature: Mapping[str, MissingPolicy],
        default: MissingPolicy,
        unknown_entity: MissingPolicy,
    ) -> MissingValuePolicy:
        """Resolve per-feature policies (``default`` for features not listed)."""
        names = tuple(features)
        fallback = np.array([per_feature.get(f, default) == "fallback" for f in names], dtype=bool)
        return cls(names, fallback, unknown_entity == "fallback" and len(names) > 0)


def median_vector(medians: Mapping[str, float], features: Sequence[str]) -> np.ndarray:
    """Training medians in feature order (NaN for a feature without one)."""
    return np.array([medians.get(f, np.nan) for f in features], dtype=np.float64)


def output_name(task: str) -> str:
    """The model output that scores are read from."""
    return contract.OUTPUT_PREDICTION if task == "regression" else contract.OUTPUT_PROBABILITIES


@dataclass
class Prepared:
    """The policy applied to a matrix: model inputs for some rows, the base rate for the others."""

    scores: np.ndarray
    """float64 [n]: the base rate on fallback rows; model rows are filled by ``finish``."""
    inputs: np.ndarray
    """float32 [m, n_features]: what the model scores (no NaN)."""
    model_rows: np.ndarray | None
    """Row indices scored by the model, in ``inputs`` order (None: every row, in order)."""
    fallback: list[str]
    """Per row: why the base rate answers it ('' when the model does)."""
    imputed: list[tuple[str, ...]]
    """Per row: features replaced by the training median."""
    missing: np.ndarray | None
    """bool [n, n_features]: missing values (None when none is)."""

    @property
    def imputed_counts(self) -> np.ndarray | None:
        """Imputations per feature (None when none happened)."""
        if self.missing is None:
            return None
        mm = self.missing if self.model_rows is None else self.missing[self.model_rows]
        return mm.sum(axis=0) if mm.any() else None


def prepare(x: np.ndarray, policy: MissingValuePolicy, *, medians: np.ndarray, base_rate: float) -> Prepared:
    """Apply the missing-value policy of one model version (``medians`` from ``median_vector``)."""
    n = x.shape[0]
    missing = np.isnan(x)
    if not missing.any():  # the common case: every row goes to the model unchanged
        return Prepared(np.zeros(n), x.astype(np.float32), None, [""] * n, [()] * n, None)
    features = policy.features
    unknown = missing.all(axis=1) if policy.unknown_entity_fallback else np.zeros(n, dtype=bool)
    by_feature = missing & policy.fallback_features
    fallback_rows = unknown | by_feature.any(axis=1)
    scores = np.zeros(n)
    fallback = [""] * n
    for i in np.flatnonzero(fallback_rows):
        scores[i] = base_rate
        if unknown[i]:
            fallback[i] = FALLBACK_UNKNOWN_ENTITY
        else:
            names = ",".join(features[j] for j in np.flatnonzero(by_feature[i]))
            fallback[i] = f"{FALLBACK_MISSING_FEATURES}:{names}"
    model_rows = np.flatnonzero(~fallback_rows)
    mm = missing[model_rows]
    inputs = np.where(mm, medians, x[model_rows]).astype(np.float32)
    imputed: list[tuple[str, ...]] = [()] * n
    for r in np.flatnonzero(mm.any(axis=1)):
        imputed[model_rows[r]] = tuple(features[j] for j in np.flatnonzero(mm[r]))
    return Prepared(scores, inputs, model_rows, fallback, imputed, missing)


def scores_from_output(output: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Score per output row (float64) and, for multiclass, the predicted class."""
    out = output.reshape(output.shape[0], -1).astype(np.float64)
    if task == "regression":
        return out[:, 0], None
    if task == "multiclass":
        return out.max(axis=1), out.argmax(axis=1)
    return (out[:, 1] if out.shape[1] > 1 else out[:, 0]), None


@dataclass(frozen=True)
class Scores:
    """The answer for every row of a prepared matrix."""

    scores: np.ndarray
    """float64 [n]."""
    labels: np.ndarray | None
    """int64 [n] predicted class for multiclass (-1 on fallback rows), else None."""
    fallback: list[str]
    imputed: list[tuple[str, ...]]


def finish(prepared: Prepared, output: np.ndarray | None, task: str) -> Scores:
    """Put the model's ``output`` for ``prepared.inputs`` into the per-row scores."""
    scores = prepared.scores
    labels = np.full(len(scores), -1, dtype=np.int64) if task == "multiclass" else None
    if output is not None and len(prepared.inputs):
        s, lab = scores_from_output(np.asarray(output), task)
        if prepared.model_rows is None:
            scores = s
            if labels is not None and lab is not None:
                labels = lab.astype(np.int64)
        else:
            scores[prepared.model_rows] = s
            if labels is not None and lab is not None:
                labels[prepared.model_rows] = lab
    return Scores(scores, labels, prepared.fallback, prepared.imputed)


def score(
    x: np.ndarray,
    policy: MissingValuePolicy,
    *,
    medians: np.ndarray,
    base_rate: float,
    task: str,
    model: Callable[[np.ndarray], np.ndarray],
) -> Scores:
    """``prepare`` -> ``model(inputs)`` -> ``finish`` in one call (the model is skipped without inputs)."""
    prepared = prepare(x, policy, medians=medians, base_rate=base_rate)
    output = model(prepared.inputs) if len(prepared.inputs) else None
    return finish(prepared, output, task)


@dataclass(frozen=True)
class Reason:
    """A feature pushing the score up."""

    feature: str
    value: float
    """The value the model saw (the training median when imputed)."""
    imputed: bool
    contribution: float
    """TreeSHAP contribution in the model's margin space."""

    def to_dict(self) -> dict[str, object]:
        """The JSON object of a reason (the gateway's and the batch table's shape)."""
        return {
            "feature": self.feature,
            "value": self.value,
            "imputed": self.imputed,
            "contribution": self.contribution,
        }


def reason_group(task: str, label: int | None) -> int:
    """Which row of a contributions matrix explains the score: the predicted class for multiclass."""
    return int(label) if task == "multiclass" and label is not None and label >= 0 else 0


def top_reasons(
    contributions: np.ndarray, seen: np.ndarray, features: Sequence[str], imputed: Sequence[str], k: int
) -> list[Reason]:
    """The ``k`` largest positive ``contributions`` of one row (ties: feature order), largest first.

    ``contributions`` [n_features] (bias excluded), ``seen`` the model inputs of the row,
    ``imputed`` the names of the features that were imputed.
    """
    phi = np.asarray(contributions, dtype=np.float64)
    order = sorted((j for j in range(len(features)) if phi[j] > 0), key=lambda j: (-phi[j], j))[:k]
    flagged = set(imputed)
    return [
        Reason(
            feature=features[j],
            value=float(seen[j]),
            imputed=features[j] in flagged,
            contribution=float(phi[j]),
        )
        for j in order
    ]
