"""Errors of the gateway; each carries the HTTP status it is answered with.

    GatewayError (TreeserveError)           status_code 500
    ├── InvalidRequestError                 422  malformed body, unknown feature, bad entity id
    ├── PayloadTooLargeError                413
    ├── UnauthorizedError                   401
    ├── UnknownModelError                   404  (also a NotFoundError)
    ├── UnknownPushSourceError              404  no such Feast PushSource
    ├── ServiceDownError                    503 + Retry-After  (also a ServiceUnavailableError)
    │   ├── FeatureStoreUnavailableError        the online store cannot be read
    │   ├── TritonUnavailableError              Triton unreachable / model version not ready
    │   ├── CircuitOpenError                    the breaker is open: Triton failed repeatedly
    │   ├── ModelNotServableError               skew guard or missing routing: version refused
    │   └── PredictionLogUnavailableError       the answer's rows cannot be written to the log
    └── DeadlineExceededError               504  the Triton deadline passed
    TritonCallError (Exception)             one failed call to one Triton server, either transport;
                                            gateway.triton maps it to the errors above

Third-party exceptions are mapped where they enter (features.py, triton.py); routes have one handler.
"""

from __future__ import annotations

from treeserve.errors import NotFoundError, ServiceUnavailableError, TreeserveError


class GatewayError(TreeserveError):
    """Base: a message for the caller and the HTTP status it maps to."""

    status_code = 500
    kind = "internal_error"


class InvalidRequestError(GatewayError):
    """The request body does not match the model's contract."""

    status_code = 422
    kind = "invalid_request"


class PayloadTooLargeError(GatewayError):
    """The body is larger than ``gateway.max_body_bytes``."""

    status_code = 413
    kind = "payload_too_large"


class UnauthorizedError(GatewayError):
    """Missing or wrong API key."""

    status_code = 401
    kind = "unauthorized"


class UnknownModelError(GatewayError, NotFoundError):
    """The model is not served by this gateway."""

    status_code = 404
    kind = "unknown_model"

    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} is not served here")


class UnknownPushSourceError(GatewayError, NotFoundError):
    """The push names a PushSource the Feast registry does not have."""

    status_code = 404
    kind = "unknown_push_source"


class ServiceDownError(GatewayError, ServiceUnavailableError):
    """A dependency is down; the caller should retry later."""

    status_code = 503
    kind = "unavailable"


class FeatureStoreUnavailableError(ServiceDownError):
    """The online store could not be read."""

    kind = "feature_store_unavailable"


class TritonUnavailableError(ServiceDownError):
    """Triton could not be reached or the model version is not ready."""

    kind = "triton_unavailable"


class CircuitOpenError(TritonUnavailableError):
    """The circuit breaker towards Triton is open."""

    kind = "circuit_open"


class ModelNotServableError(ServiceDownError):
    """The routed version is refused (skew guard) or no version is routed."""

    kind = "model_not_servable"


class DeadlineExceededError(GatewayError):
    """Triton did not answer within the deadline."""

    status_code = 504
    kind = "deadline_exceeded"


class PredictionLogUnavailableError(ServiceDownError):
    """The prediction log cannot record the answer (disk full, permission): no answer without a record."""

    kind = "predlog_unavailable"


class TritonCallError(Exception):
    """One failed call to one Triton server, from either transport (never answered to a caller).

    ``code`` is the gRPC status name Triton's gRPC endpoint gives for the failure (UNAVAILABLE,
    NOT_FOUND, DEADLINE_EXCEEDED, INVALID_ARGUMENT, INTERNAL, ...): the HTTP channel translates its
    answers into the same names, so ``gateway.triton`` decides retries and breakers once for both.
    """

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"[{code}] {details}")
        self.code = code
        self.details = details
