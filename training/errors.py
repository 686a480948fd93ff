"""Errors of the training package (subclasses of the shared tree in ``treeserve.errors``)."""

from __future__ import annotations

from treeserve.errors import NotFoundError, ValidationFailedError


class DataNotFoundError(NotFoundError):
    """The data folder or one of its files is missing."""


class FeastNotAppliedError(NotFoundError):
    """The Feast project has no definitions yet."""


class ModelNotFoundError(NotFoundError):
    """A registered model, version or alias does not exist."""


class TrainingDataError(ValidationFailedError):
    """The training set is unusable (rows lost in the join, a single class, no rows)."""


class GateFailedError(ValidationFailedError):
    """A version failed the promotion gate; the alias was not moved."""
