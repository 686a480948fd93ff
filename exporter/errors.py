"""Errors of the exporter package.

TreeserveError
├── ConfigError
│   └── RepositoryError             (treeserve.repository) the repository cannot be used
│       └── ServedVersionError      the command would modify a served version in place (refused first)
├── NotFoundError
│   └── ModelNotInRepositoryError   (treeserve.repository) no config.pbtxt / version directory
├── ValidationFailedError
│   ├── UnsupportedModelError       categorical splits, an objective ONNX cannot express, ...
│   ├── ParityError                 ONNX output differs from XGBoost beyond tolerance
│   └── CanaryError                 Triton's answer differs from the stored reference
└── ServiceUnavailableError
    ├── TritonControlError          Triton refused a repository/inference call (triton_admin.py)
    │   ├── TritonNotRunningError   nothing answers on the configured ports
    │   └── ModelLoadError          Triton refused to load a model / version
    └── TritonStartError            the server could not be started (port taken, venv missing)
"""

from __future__ import annotations

from treeserve.errors import ServiceUnavailableError, ValidationFailedError
from treeserve.repository.errors import ModelNotInRepositoryError, RepositoryError

__all__ = [
    "CanaryError",
    "ModelLoadError",
    "ModelNotInRepositoryError",
    "ParityError",
    "RepositoryError",
    "ServedVersionError",
    "TritonControlError",
    "TritonNotRunningError",
    "TritonStartError",
    "UnsupportedModelError",
]


class UnsupportedModelError(ValidationFailedError):
    """The model uses something the ONNX conversion cannot express."""


class ParityError(ValidationFailedError):
    """The converted model does not reproduce XGBoost's outputs."""


class CanaryError(ValidationFailedError):
    """Triton's answer for the reference inputs differs from the stored outputs."""


class TritonControlError(ServiceUnavailableError):
    """Triton could not be reached or refused a repository/inference call."""


class TritonNotRunningError(TritonControlError):
    """Triton does not answer."""


class TritonStartError(ServiceUnavailableError):
    """Triton could not be started."""


class ModelLoadError(TritonControlError):
    """Triton could not load a model or version."""


class ServedVersionError(RepositoryError):
    """The command would modify a served version (routed or kept for rollback) in place."""
