"""Batch scoring (drift) and the gateway give the same score for the same row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drift.scoring import ServingModel, score_rows
from tests.unit.gateway.fakes import BASE_RATE, FEATURES, MEDIANS, MODEL, SERVICE, model_probability

pytestmark = pytest.mark.anyio

ROWS = [
    [1.0, 2.0, 3.0],
    [4.0, None, 0.5],
    [None, None, 7.0],
    [None, None, None],
    [-3.5, 0.25, None],
]


class _Session:
    """ONNX Runtime stand-in that computes what the fake Triton computes."""

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        p = np.array([model_probability("1", r) for r in feeds["features"]], dtype=np.float32)
        return [np.stack([1 - p, p], axis=1)]


@pytest.mark.parametrize("policy", [{}, {"f_b": "fallback"}])
async def test_batch_scores_equal_gateway_scores(make_gateway: Any, policy: dict[str, str]) -> None:
    instances = [{f: v for f, v in zip(FEATURES, row, strict=True) if v is not None} for row in ROWS]
    async with make_gateway(missing_policy=policy) as h:
        r = await h.client.post(f"/v1/models/{MODEL}/predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        gateway = [p["score"] for p in r.json()["predictions"]]
        gateway_fallback = [p["fallback"] for p in r.json()["predictions"]]
        serving = ServingModel(
            MODEL, "1", list(FEATURES), "binary", MEDIANS, BASE_RATE, SERVICE, ["customer_id"], _Session()
        )
        x = np.array([[np.nan if v is None else v for v in row] for row in ROWS], dtype=np.float64)
        batch, fallback = score_rows(serving, x, h.settings.gateway)
    assert batch.tolist() == gateway
    assert fallback.tolist() == gateway_fallback
    assert any(gateway_fallback) and not all(gateway_fallback)
