"""In-memory stand-ins for the gateway's adapters (FeatureSource, InferenceClient) and a tiny repository."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from exporter.flavors import get_flavor
from gateway.errors import DeadlineExceededError, FeatureStoreUnavailableError, TritonUnavailableError
from treeserve.encoding import Vocabulary
from treeserve.features import FeatureRows
from treeserve.repository import TritonModelSpec, write_config, write_version_metadata

MODEL = "churn-prediction"
SERVICE = "churn_model"
FEATURES = ("f_a", "f_b", "f_c")
MEDIANS = {"f_a": 1.0, "f_b": 2.0, "f_c": 3.0}
WEIGHTS = {"1": np.array([0.3, -0.2, 0.1]), "2": np.array([-0.1, 0.4, 0.05])}
BASE_RATE = 0.17


def model_contributions(version: str, row: Sequence[float]) -> np.ndarray:
    """What the fake explainer answers: exact Shapley values of the fake's margin (zero baseline), bias last."""
    x = np.asarray(row, dtype=np.float32).astype(np.float64)
    return np.append(WEIGHTS[version] * x, -0.5)


def model_probability(version: str, row: Sequence[float]) -> float:
    """What the fake Triton answers: a logistic model per version."""
    z = float(np.dot(WEIGHTS[version], np.asarray(row, dtype=np.float32))) - 0.5
    return 1.0 / (1.0 + math.exp(-z))


class FakeFeatures:
    """A dict online store; None = null."""

    store_name = "fake"

    def __init__(
        self, rows: Mapping[str, Sequence[float | None]], features: Sequence[str] = FEATURES
    ) -> None:
        self.rows = dict(rows)
        self.features = list(features)
        self.calls: list[int] = []
        self.down = False

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        return list(self.features), ["customer_id"]

    def encodings(self, feature_service: str) -> dict[str, Vocabulary]:
        return {}

    async def read_rows(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> FeatureRows:
        return FeatureRows(await self.fetch(feature_service, keys), {})

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        if self.down:
            raise FeatureStoreUnavailableError("the fake online store is down")
        self.calls.append(len(keys))
        await asyncio.sleep(0)
        out = np.full((len(keys), len(self.features)), np.nan)
        for i, (cid,) in enumerate(keys):
            for j, v in enumerate(self.rows.get(cid, [None] * len(self.features))):
                out[i, j] = np.nan if v is None else v
        return out

    async def verify(self, feature_service: str) -> None:
        pass

    async def check(self, feature_service: str) -> None:
        if self.down:
            raise FeatureStoreUnavailableError("the fake online store is down")

    async def aclose(self) -> None:
        pass


class FakeTriton:
    """Scores with ``model_probability``; can be down or slow."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.explain_calls: list[tuple[str, int]] = []
        self.mode = "up"  # up | down | timeout

    async def infer(self, model: str, version: str, features: np.ndarray, *, output: str) -> np.ndarray:
        if self.mode == "down":
            raise TritonUnavailableError(f"Triton is unavailable (model {model!r} version {version})")
        if self.mode == "timeout":
            raise DeadlineExceededError(f"Triton did not answer within 0.5 s (model {model!r})")
        assert features.dtype == np.float32
        self.calls.append((version, len(features)))
        await asyncio.sleep(0)
        if output == "contributions":
            assert model.endswith("__explain")
            self.explain_calls.append((version, len(features)))
            return np.stack([model_contributions(version, r)[None, :] for r in features]).astype(np.float32)
        p = np.array([model_probability(version, r) for r in features], dtype=np.float32)
        return np.stack([1 - p, p], axis=1)

    async def server_ready(self) -> bool:
        return self.mode == "up"

    async def model_ready(self, model: str, version: str) -> bool:
        return self.mode == "up"

    def degraded(self) -> dict[str, str]:
        return {} if self.mode == "up" else {"fake:1": f"fake Triton is {self.mode}"}

    async def aclose(self) -> None:
        pass


def write_repository(
    repo: Path,
    routing: Mapping[str, str],
    *,
    version_features: Mapping[str, Sequence[str]] | None = None,
    explainers: Sequence[str] = ("1", "2"),
) -> None:
    """config.pbtxt + treeserve.json for versions 1 and 2 of the fake model (and their explainers)."""
    versions = sorted({int(v) for v in routing.values()} | {1, 2})
    spec = TritonModelSpec(
        name=MODEL,
        task="binary",
        features=FEATURES,
        versions=tuple(versions),
        routing=dict(routing),
        feature_service=SERVICE,
        entity_keys=("customer_id",),
    )
    write_config(repo, spec, get_flavor("python-ort"))
    for v in ("1", "2"):
        folder = repo / MODEL / v
        folder.mkdir(parents=True, exist_ok=True)
        feats = (version_features or {}).get(v, FEATURES)
        write_version_metadata(
            folder,
            {
                "model": MODEL,
                "version": v,
                "task": "binary",
                "n_classes": 2,
                "features": list(feats),
                "feature_service": SERVICE,
                "entity_keys": ["customer_id"],
                "medians": MEDIANS,
                "base_rate": BASE_RATE,
            },
        )
        if v in explainers:
            companion = repo / f"{MODEL}__explain" / v
            companion.mkdir(parents=True, exist_ok=True)
            write_version_metadata(companion, {"model": f"{MODEL}__explain", "version": v})
