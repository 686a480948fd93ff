"""Errors of the on-disk model repository.

TreeserveError
├── ConfigError
│   └── RepositoryError             the repository is missing, unreadable, not writable or malformed
└── NotFoundError
    └── ModelNotInRepositoryError   no config.pbtxt / version directory for that model
"""

from __future__ import annotations

from treeserve.errors import ConfigError, NotFoundError


class RepositoryError(ConfigError):
    """The model repository cannot be used."""


class ModelNotInRepositoryError(NotFoundError):
    """The repository holds no such model or version."""
