"""Errors of the promotion sync.

TreeserveError
├── SyncBusyError (ServiceUnavailableError)   another sync holds the lock
├── TritonControlError (ServiceUnavailableError)  Triton's repository/inference API failed
├── CanaryMismatchError (ValidationFailedError)   Triton's answer differs from reference.npz
└── WebhookRejectedError                          a delivery failed signature/age checks (401)
"""

from __future__ import annotations

from treeserve.errors import ServiceUnavailableError, TreeserveError, ValidationFailedError


class SyncBusyError(ServiceUnavailableError):
    """Another sync process holds the lock."""


class TritonControlError(ServiceUnavailableError):
    """Triton could not be reached or refused a repository/inference call."""


class CanaryMismatchError(ValidationFailedError):
    """A freshly loaded version answered differently from its stored reference outputs."""


class WebhookRejectedError(TreeserveError):
    """A webhook delivery is unsigned, badly signed or stale; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
