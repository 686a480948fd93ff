"""Explanations: why a row got its score, computed by Triton (no HTTP, no SDK in here).

The same request as predict (entities or instances) goes through the same steps as predict
(online features, the version's missing-value policy) for the champion version; the model rows
are then sent both to the version (scores) and to its explainer companion ``<model>__explain``
(TreeSHAP ``contributions`` in margin space, bias last), each through the service's coalesced
Triton call, so explain requests are batched like predictions. Per row the answer carries what
predict returns plus the contributions, the bias and the top ``k`` reasons (features pushing the
score up, with the value the model saw and whether it was imputed). Rows answered by the base
rate (fallback) carry no model explanation and say so. Explanations are not prediction-log rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.catalog import ModelView, VersionInfo
from gateway.errors import InvalidRequestError, ServiceDownError
from gateway.service import Prediction, PredictionService
from treeserve import contract, scoring
from treeserve.repository import explainer_name
from treeserve.scoring import Reason, reason_group, top_reasons

DEFAULT_REASONS = 3
MAX_REASONS = 100


class ExplainerUnavailableError(ServiceDownError):
    """The routed version has no explainer companion (503)."""

    kind = "explainer_unavailable"


@dataclass(frozen=True)
class Explanation:
    """One explained row: its prediction and why."""

    prediction: Prediction
    contributions: dict[str, float] | list[dict[str, float]] | None
    """feature -> contribution (per class for multiclass); None on fallback rows."""
    bias: float | list[float] | None
    reasons: list[Reason]
    no_explanation: str | None
    """Why there is no model explanation (the row was answered by the base rate), else None."""


@dataclass(frozen=True)
class ExplanationResult:
    """The answer to one explain request."""

    request_id: str
    model: str
    model_version: str
    explanations: list[Explanation]
    latency_ms: float
    contributions: np.ndarray
    """float32 [n, n_groups, n_features + 1] (bias last); NaN on rows without a model explanation."""


def check_k(k: int) -> int:
    """The number of reasons asked for, or InvalidRequestError."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_REASONS:
        raise InvalidRequestError(f"k must be an integer from 1 to {MAX_REASONS} (got {k!r})")
    return k


class ExplanationService:
    """Explains predictions with the prediction service's own steps and Triton's explainer companion."""

    def __init__(self, predictions: PredictionService) -> None:
        self._predictions = predictions

    async def explain_entities(
        self, model: str, entities: Sequence[Any], *, k: int = DEFAULT_REASONS, request_id: str | None = None
    ) -> ExplanationResult:
        """Explain entities by id (features from the online store)."""
        t0 = time.perf_counter()
        check_k(k)
        svc = self._predictions
        view = svc.model(model)
        champion = svc.champion(view)
        keys = svc.entity_keys_of(entities, view)
        x = await svc.fetch_features(view, keys)
        return await self._explain(view, champion, x, k, request_id, t0)

    async def explain_instances(
        self, model: str, instances: Sequence[Any], *, k: int = DEFAULT_REASONS, request_id: str | None = None
    ) -> ExplanationResult:
        """Explain rows whose features the caller already has."""
        t0 = time.perf_counter()
        check_k(k)
        svc = self._predictions
        view = svc.model(model)
        champion = svc.champion(view)
        x = svc.instance_matrix(instances, view)
        return await self._explain(view, champion, x, k, request_id, t0)

    def _require_explainer(self, view: ModelView, info: VersionInfo) -> None:
        if not info.explainer:
            raise ExplainerUnavailableError(
                f"model {view.name!r} version {info.version} has no explainer (it was installed before "
                "explanations existed); promote a version exported by this treeserve to explain it"
            )

    async def _explain(
        self, view: ModelView, info: VersionInfo, x: np.ndarray, k: int, request_id: str | None, t0: float
    ) -> ExplanationResult:
        svc = self._predictions
        self._require_explainer(view, info)
        prepared = svc.prepare(view, info, x)
        output = phi = None
        if len(prepared.inputs):
            output, raw = await asyncio.gather(
                svc.infer(view.name, info.version, prepared.inputs, output=scoring.output_name(info.task)),
                svc.infer(
                    explainer_name(view.name),
                    info.version,
                    prepared.inputs,
                    output=contract.OUTPUT_CONTRIBUTIONS,
                ),
            )
            phi = np.asarray(raw, dtype=np.float64).reshape(len(prepared.inputs), -1, len(view.features) + 1)
        scores = scoring.finish(prepared, output, info.task)
        groups = info.n_classes if info.task == "multiclass" else 1
        table = np.full((len(x), groups, len(view.features) + 1), np.nan, dtype=np.float32)
        model_row = (
            {int(i): r for r, i in enumerate(prepared.model_rows)}
            if prepared.model_rows is not None
            else {i: i for i in range(len(x))}
        )
        explanations = []
        for i in range(len(x)):
            label = int(scores.labels[i]) if scores.labels is not None else None
            prediction = Prediction(
                score=float(scores.scores[i]),
                risk_tier=svc.tier(float(scores.scores[i]), info.task),
                model_version=info.version,
                route=contract.ALIAS_CHAMPION,
                imputed=scores.imputed[i],
                fallback=scores.fallback[i],
                label=label,
            )
            r = model_row.get(i)
            if r is None or phi is None:
                explanations.append(
                    Explanation(
                        prediction=prediction,
                        contributions=None,
                        bias=None,
                        reasons=[],
                        no_explanation=(
                            f"no model explanation: the base rate answered this row ({scores.fallback[i]})"
                        ),
                    )
                )
                continue
            explanations.append(self._row(view, info, prediction, phi[r], prepared.inputs[r], k))
            table[i] = phi[r]
        return ExplanationResult(
            request_id=request_id or uuid.uuid4().hex,
            model=view.name,
            model_version=info.version,
            explanations=explanations,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            contributions=table,
        )

    @staticmethod
    def _row(
        view: ModelView, info: VersionInfo, prediction: Prediction, phi: np.ndarray, seen: np.ndarray, k: int
    ) -> Explanation:
        features = view.features
        n = len(features)
        per_group = [{f: float(v) for f, v in zip(features, g[:n], strict=True)} for g in phi]
        group = reason_group(info.task, prediction.label)
        reasons = top_reasons(phi[group, :n], seen, features, prediction.imputed, k)
        if info.task == "multiclass":
            return Explanation(prediction, per_group, [float(g[n]) for g in phi], reasons, None)
        return Explanation(prediction, per_group[0], float(phi[0, n]), reasons, None)
