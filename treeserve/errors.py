"""The error tree shared by the CLI and the services.

    TreeserveError                 a problem a user can act on; the CLI prints its message, exit 1
    ├── ConfigError                malformed or inconsistent settings
    ├── NotFoundError              unknown model, version, alias, data directory
    ├── ValidationFailedError      a model version failed a check (gate, parity, skew guard)
    └── ServiceUnavailableError    a dependency (Triton, MLflow, online store) cannot be reached

Packages subclass these; third-party exceptions are mapped where they enter.
"""

from __future__ import annotations


class TreeserveError(Exception):
    """Base class: an error with a one-line message meant for a person."""

    exit_code = 1


class ConfigError(TreeserveError):
    """Settings are malformed or inconsistent."""


class NotFoundError(TreeserveError):
    """Something named by the user does not exist."""


class ValidationFailedError(TreeserveError):
    """A model version failed a check."""


class ServiceUnavailableError(TreeserveError):
    """A dependency cannot be reached."""
