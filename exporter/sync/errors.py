"""Errors of the promotion sync.

TreeserveError
├── SyncBusyError (ServiceUnavailableError)   another sync holds the lock
└── WebhookRejectedError                      a delivery failed signature/age checks (401)

Triton and canary failures are ``exporter.errors.TritonControlError`` and ``CanaryError``.
"""

from __future__ import annotations

from treeserve.errors import ServiceUnavailableError, TreeserveError


class SyncBusyError(ServiceUnavailableError):
    """Another sync process holds the lock."""


class WebhookRejectedError(TreeserveError):
    """A webhook delivery is unsigned, badly signed or stale; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
