"""Errors of the exporter package.

TreeserveError
├── ConfigError
│   └── RepositoryError             the model repository is missing, unreadable or not writable
├── NotFoundError
│   └── ModelNotInRepositoryError   no config.pbtxt / version directory for that model
├── ValidationFailedError
│   ├── UnsupportedModelError       categorical splits, an objective ONNX cannot express, ...
│   ├── ParityError                 ONNX output differs from XGBoost beyond tolerance
│   └── CanaryError                 Triton's answer differs from the stored reference
└── ServiceUnavailableError
    ├── TritonNotRunningError       nothing answers on the configured ports
    ├── TritonStartError            the server could not be started (port taken, venv missing)
    └── ModelLoadError              Triton refused to load a model / version
"""

from __future__ import annotations

from treeserve.errors import ConfigError, NotFoundError, ServiceUnavailableError, ValidationFailedError


class RepositoryError(ConfigError):
    """The model repository cannot be used."""


class ModelNotInRepositoryError(NotFoundError):
    """The repository holds no such model or version."""


class UnsupportedModelError(ValidationFailedError):
    """The model uses something the ONNX conversion cannot express."""


class ParityError(ValidationFailedError):
    """The converted model does not reproduce XGBoost's outputs."""


class CanaryError(ValidationFailedError):
    """Triton's answer for the reference inputs differs from the stored outputs."""


class TritonNotRunningError(ServiceUnavailableError):
    """Triton does not answer."""


class TritonStartError(ServiceUnavailableError):
    """Triton could not be started."""


class ModelLoadError(ServiceUnavailableError):
    """Triton could not load a model or version."""
