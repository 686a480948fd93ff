"""The one canary rule shared by ``treeserve export --load`` and the sync."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.canary import compare_outputs, run_canary
from exporter.errors import CanaryError
from treeserve.repository import ReferenceData

WANT = {
    "probabilities": np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32),
    "label": np.array([[1], [0], [0]], np.int64),
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinite_output_never_matches(value: float) -> None:
    got = {k: v.copy() for k, v in WANT.items()}
    got["probabilities"][1, 0] = value
    miss, _ = compare_outputs(got, WANT, atol=1.0, rtol=1.0)  # even with a huge tolerance
    assert miss is not None and "NaN or infinite" in miss


def test_a_reference_holding_nan_matches_nothing() -> None:
    want = {"prediction": np.array([[np.nan], [1.0]], np.float32)}
    miss, _ = compare_outputs({"prediction": want["prediction"].copy()}, want, atol=1e-5, rtol=1e-5)
    assert miss is not None and "reference" in miss


def test_run_canary_batches_the_inputs_and_reports_the_worst_difference() -> None:
    inputs = np.arange(6, dtype=np.float32).reshape(3, 2)
    seen: list[int] = []

    def infer(x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        start = int(x[0, 0]) // 2
        seen.append(len(x))
        out = {k: WANT[k][start : start + len(x)].copy() for k in names}
        out["probabilities"] = out["probabilities"] + np.float32(1e-6)
        return out

    result = run_canary(
        infer, ReferenceData(inputs, WANT), model="m", version=3, batch_rows=2, atol=1e-5, rtol=0.0
    )
    assert seen == [2, 1]
    assert result.rows == 3 and 0 < result.max_abs_diff < 1e-5


def test_run_canary_names_the_model_version_and_output() -> None:
    def infer(x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        return {"probabilities": np.full((len(x), 2), np.nan, np.float32), "label": WANT["label"][: len(x)]}

    with pytest.raises(CanaryError, match=r"model 'm' version 3: .*'probabilities'.*NaN or infinite"):
        run_canary(
            infer, ReferenceData(np.zeros((3, 2), np.float32), WANT), model="m", version=3, atol=1e-5, rtol=0
        )
