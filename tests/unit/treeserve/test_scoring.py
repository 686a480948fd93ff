"""The scoring policy: imputation, base-rate fallback, outputs -> scores (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from treeserve import scoring

FEATURES = ("a", "b", "c")
MEDIANS = {"a": 1.0, "b": -2.0, "c": 0.5}
BASE_RATE = 0.125


def logistic(x: np.ndarray) -> np.ndarray:
    """A binary model's output [n, 2] (float32, like Triton and ONNX Runtime answer)."""
    z = np.clip(0.3 * x[:, 0] - 0.2 * x[:, 1] + 0.7 * x[:, 2], -50, 50)  # row by row: no BLAS reordering
    p = 1.0 / (1.0 + np.exp(-z))
    return np.column_stack([1 - p, p]).astype(np.float32)


def policy(**per_feature: str) -> scoring.MissingValuePolicy:
    return scoring.MissingValuePolicy.build(
        FEATURES,
        per_feature=per_feature,
        default="impute",
        unknown_entity="fallback",  # type: ignore[arg-type]
    )


def score(x: np.ndarray, pol: scoring.MissingValuePolicy, task: str = "binary") -> scoring.Scores:
    return scoring.score(
        x,
        pol,
        medians=scoring.median_vector(MEDIANS, FEATURES),
        base_rate=BASE_RATE,
        task=task,
        model=logistic,
    )


values = st.one_of(st.just(np.nan), st.floats(-1e3, 1e3, allow_nan=False))
matrices = st.integers(1, 12).flatmap(lambda n: arrays(np.float64, (n, 3), elements=values))
policies = st.fixed_dictionaries({}, optional={f: st.sampled_from(["impute", "fallback"]) for f in FEATURES})


@settings(max_examples=200, deadline=None)
@given(matrices, policies)
def test_every_row_is_scored_as_if_alone(x: np.ndarray, per_feature: dict[str, str]) -> None:
    """Batching (the gateway coalesces requests) never changes a row's answer."""
    pol = policy(**per_feature)
    batch = score(x, pol)
    for i in range(len(x)):
        alone = score(x[i : i + 1], pol)
        assert batch.scores[i] == alone.scores[0]
        assert batch.fallback[i] == alone.fallback[0] and batch.imputed[i] == alone.imputed[0]


@settings(max_examples=200, deadline=None)
@given(matrices, policies)
def test_policy_decides_fallback_imputation_and_model_inputs(
    x: np.ndarray, per_feature: dict[str, str]
) -> None:
    pol = policy(**per_feature)
    prepared = scoring.prepare(x, pol, medians=scoring.median_vector(MEDIANS, FEATURES), base_rate=BASE_RATE)
    assert not np.isnan(prepared.inputs).any()
    assert prepared.inputs.dtype == np.float32
    result = score(x, pol)
    for i, row in enumerate(x):
        missing = [f for f, v in zip(FEATURES, row, strict=True) if np.isnan(v)]
        fallback_missing = [f for f in missing if per_feature.get(f) == "fallback"]
        if len(missing) == len(FEATURES):
            assert result.fallback[i] == scoring.FALLBACK_UNKNOWN_ENTITY
        elif fallback_missing:
            assert result.fallback[i] == "missing_features:" + ",".join(fallback_missing)
        else:
            assert result.fallback[i] == ""
            assert result.imputed[i] == tuple(missing)
            filled = np.where(np.isnan(row), [MEDIANS[f] for f in FEATURES], row).astype(np.float32)
            assert result.scores[i] == float(logistic(filled[None, :])[0, 1])
        if result.fallback[i]:
            assert result.scores[i] == BASE_RATE and result.imputed[i] == ()


def test_unknown_entity_imputed_when_that_policy_is_impute() -> None:
    pol = scoring.MissingValuePolicy.build(
        FEATURES, per_feature={}, default="impute", unknown_entity="impute"
    )
    result = score(np.full((1, 3), np.nan), pol)
    assert result.fallback == [""] and result.imputed == [FEATURES]
    want = logistic(np.array([[1.0, -2.0, 0.5]], dtype=np.float32))[0, 1]
    assert result.scores[0] == pytest.approx(float(want))


def test_model_not_called_when_every_row_falls_back() -> None:
    def model(x: np.ndarray) -> np.ndarray:
        raise AssertionError("no row needs the model")

    result = scoring.score(
        np.full((2, 3), np.nan), policy(), medians=np.zeros(3), base_rate=0.3, task="binary", model=model
    )
    assert result.scores.tolist() == [0.3, 0.3]


@pytest.mark.parametrize(
    ("task", "output", "scores", "labels"),
    [
        ("binary", [[0.9, 0.1], [0.2, 0.8]], [0.1, 0.8], None),
        ("binary", [[0.1], [0.8]], [0.1, 0.8], None),
        ("multiclass", [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], [0.5, 0.6], [1, 0]),
        ("regression", [[3.5], [-1.0]], [3.5, -1.0], None),
    ],
)
def test_outputs_to_scores(
    task: str, output: list[list[float]], scores: list[float], labels: list[int] | None
) -> None:
    s, lab = scoring.scores_from_output(np.array(output, dtype=np.float32), task)
    np.testing.assert_allclose(s, scores, rtol=1e-6)
    assert (lab.tolist() if lab is not None else None) == labels
    assert scoring.output_name(task) == ("prediction" if task == "regression" else "probabilities")


def test_multiclass_labels_stay_minus_one_on_fallback_rows() -> None:
    def model(x: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.1, 0.7, 0.2]], dtype=np.float32), (len(x), 1))

    x = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    result = scoring.score(x, policy(), medians=np.zeros(3), base_rate=0.4, task="multiclass", model=model)
    assert result.labels is not None and result.labels.tolist() == [1, -1]
    assert result.scores[1] == 0.4
