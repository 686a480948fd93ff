"""Errors of the drift package.

TreeserveError
├── ConfigError
│   └── WindowSpecError          --since/--last malformed
├── NotFoundError
│   ├── UnknownVersionError      the version is not in the registry
│   └── ReferenceMissingError    the version's run has no reference sample
└── ValidationFailedError
    ├── WindowTooSmallError      too few prediction-log rows for a verdict
    ├── LogSchemaError           log columns do not match the version's features
    └── PipelineStepError        a pipeline step failed (the run stops)
"""

from __future__ import annotations

from treeserve.errors import ConfigError, NotFoundError, ValidationFailedError


class WindowSpecError(ConfigError):
    """A window specification that cannot be parsed."""


class UnknownVersionError(NotFoundError):
    """A model version that the registry does not know."""

    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model {model!r} has no version {version!r} in the registry")


class ReferenceMissingError(NotFoundError):
    """The version's training run has no reference sample."""


class WindowTooSmallError(ValidationFailedError):
    """The prediction-log window holds too few rows for a meaningful comparison."""


class LogSchemaError(ValidationFailedError):
    """The prediction log does not carry the version's feature columns."""


class PipelineStepError(ValidationFailedError):
    """A pipeline step failed; the run stops and the serving version is left unchanged."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"pipeline step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason
