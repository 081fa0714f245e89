"""Exceptions raised by hf_d2prune.

Every error subclasses :class:`D2PruneError` and one of the built-in ``ValueError`` /
``TypeError`` / ``OSError``, so callers can catch either the library's family or the
built-in kind they already expect. Messages name the culprit (column, parameter, rows)
and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "D2PruneError",
    "ColumnNotFoundError",
    "ColumnTypeError",
    "InvalidParameterError",
    "InvalidValuesError",
    "ModelNotFoundError",
    "NamespaceConflictError",
    "OutputExistsError",
]


class D2PruneError(Exception):
    """Base class of every error raised by hf_d2prune."""


class ColumnNotFoundError(D2PruneError, ValueError):
    """A column the step needs is not in the dataset (the message lists the available ones)."""


class ColumnTypeError(D2PruneError, TypeError):
    """A column holds values of the wrong type for the step (e.g. numbers where text is expected)."""


class InvalidParameterError(D2PruneError, ValueError):
    """A parameter is out of range or inconsistent with the data (e.g. ``k >= n``, ``keep <= 0``)."""


class InvalidValuesError(D2PruneError, ValueError):
    """An array or column holds values the step cannot use: NaN/inf, ragged lengths, empty input."""


class ModelNotFoundError(D2PruneError, OSError):
    """A model could not be resolved locally or from the Hugging Face Hub."""


class NamespaceConflictError(D2PruneError, AttributeError):
    """Another package already registered an attribute under the accessor's name."""


class OutputExistsError(D2PruneError, FileExistsError):
    """The output folder exists and is not empty, and ``overwrite=True`` was not given."""
