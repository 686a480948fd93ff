"""Errors of the load tests.

TreeserveError
├── ConfigError
│   └── LoadtestConfigError    bad target, host, duration, entities file or mix
├── ValidationFailedError
│   └── SloMissedError         a run missed its p99 or error-rate objective
└── ServiceUnavailableError
    ├── LoadtestRunError       Locust could not run or wrote no report
    └── LoadtestTargetError    the target is down or does not serve the model (checked first)
"""

from __future__ import annotations

from treeserve.errors import ConfigError, ServiceUnavailableError, ValidationFailedError


class LoadtestConfigError(ConfigError):
    """The load test is misconfigured."""


class SloMissedError(ValidationFailedError):
    """A run missed a service-level objective."""


class LoadtestRunError(ServiceUnavailableError):
    """Locust failed to run or produced no report."""


class LoadtestTargetError(ServiceUnavailableError):
    """The target is not serving: nothing would be measured but errors."""
