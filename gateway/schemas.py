"""OpenAPI models of the HTTP API (documentation and response shapes).

The predict route parses its body itself (orjson, checks in the service) for speed; these models
describe the same shapes for the OpenAPI document and the clients generated from it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    """Exactly one of ``entities`` (ids resolved through the FeatureService) or ``instances``."""

    entities: list[dict[str, str]] | None = Field(
        default=None,
        description="Entity key objects, e.g. {'customer_id': 'cust-000123'}; key names come from the FeatureService.",
        examples=[[{"customer_id": "cust-000123"}]],
    )
    instances: list[dict[str, float | None]] | None = Field(
        default=None,
        description="Feature objects (feature -> number or null) for callers that already have features.",
    )


class PushRequest(BaseModel):
    """Rows for a Feast PushSource; each holds the join keys, ``event_timestamp`` and every feature."""

    push_source: str | None = Field(
        default=None,
        description="Feast PushSource; may be left out when one feeds the served model's FeatureService.",
        examples=["customer_activity_push"],
    )
    rows: list[dict[str, str | int | float | None]] = Field(
        description="1..max_entities rows; event_timestamp as ISO 8601 (naive = UTC) or epoch seconds.",
        examples=[
            [
                {
                    "customer_id": "cust-000042",
                    "event_timestamp": "2026-11-30T20:15:00Z",
                    "session_count_last_1h": 3,
                    "cart_value_usd": 129.5,
                    "last_page_viewed": "cart",
                }
            ]
        ],
    )


class PushResponse(BaseModel):
    """What a push wrote."""

    push_source: str
    rows: int = Field(description="Rows written.")
    feature_views: list[str] = Field(description="FeatureViews fed by the push source.")
    to: str = Field(description="online_and_offline: the online store and the source's offline copy.")


class EntityPrediction(BaseModel):
    """One scored entity or instance."""

    entity: dict[str, str] | None = Field(description="The entity keys (null for instances).")
    score: float = Field(
        description="Positive-class probability (binary), max probability (multiclass) or the prediction."
    )
    risk_tier: str | None = Field(description="Tier of the score (binary classifiers).")
    label: int | None = Field(default=None, description="Predicted class (multiclass).")
    model_version: str
    route: str = Field(description="champion or challenger.")
    imputed: bool = Field(description="Some features were missing and replaced by the training median.")
    imputed_features: list[str]
    fallback: bool = Field(description="The base rate was returned instead of a model score.")
    fallback_reason: str | None = Field(description="unknown_entity or missing_features:<names>.")


class PredictResponse(BaseModel):
    """Scores of a request, with the model version that made them."""

    request_id: str
    model: str
    model_version: str
    latency_ms: float
    predictions: list[EntityPrediction]


class VersionView(BaseModel):
    """A routed model version."""

    version: str
    aliases: list[str]
    task: str
    servable: bool
    problem: str | None


class ModelInfo(BaseModel):
    """A served model: routing, versions and feature contract."""

    name: str
    feature_service: str
    features: list[str]
    entity_keys: list[str]
    routing: dict[str, str]
    versions: list[VersionView]
    servable: bool
    problem: str | None


class ModelList(BaseModel):
    """The models this gateway serves."""

    models: list[ModelInfo]


class Health(BaseModel):
    """Liveness."""

    status: str


class Readiness(BaseModel):
    """Readiness: every check 'ok' or the reason it fails."""

    ready: bool
    checks: dict[str, str]
    degraded: dict[str, str] = {}
    """Triton servers that do not serve the routed version right now -> why (traffic avoids them)."""


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="Machine-readable kind, e.g. invalid_request, unknown_model.")
    message: str = Field(description="What is wrong, for a person.")
    request_id: str | None = None


class Reason(BaseModel):
    """A feature pushing the score up."""

    feature: str
    value: float = Field(description="The value the model saw (the training median when imputed).")
    imputed: bool = Field(description="The feature was missing and replaced by the training median.")
    contribution: float = Field(description="Its TreeSHAP contribution in the model's margin space.")


class EntityExplanation(EntityPrediction):
    """One explained entity or instance: its prediction, contributions, bias and top reasons."""

    contributions: dict[str, float] | list[dict[str, float]] | None = Field(
        description=(
            "feature -> TreeSHAP contribution in margin space (log-odds for a binary classifier); "
            "one object per class for multiclass; null when no model explanation exists."
        )
    )
    bias: float | list[float] | None = Field(
        description="The expected margin (per class for multiclass): bias + sum of contributions = margin."
    )
    reasons: list[Reason] = Field(description="The top k features pushing the score up, largest first.")
    no_explanation: str | None = Field(
        description="Why there is no model explanation (a fallback row answered by the base rate)."
    )


class ExplainResponse(BaseModel):
    """Explained scores of a request, with the model version that made them."""

    request_id: str
    model: str
    model_version: str
    latency_ms: float
    explanations: list[EntityExplanation]
