"""hf_d2prune: smaller training sets for Hugging Face ``datasets`` without worse models.

Importing the package registers the ``d2`` namespace on ``datasets.Dataset`` and
``datasets.DatasetDict``::

    import datasets, hf_d2prune
    ds = ds.d2.embed("text")

Heavy dependencies (torch, faiss, transformers) are imported only by the steps that need them.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ColumnNotFoundError,
    ColumnTypeError,
    D2PruneError,
    InvalidParameterError,
    InvalidValuesError,
    ModelNotFoundError,
    NamespaceConflictError,
)
from .namespace import ACCESSOR_ENV, D2Accessor, D2DictAccessor, register_accessor  # noqa: E402
from .arrays import embedding_matrix  # noqa: E402

register_accessor(os.environ.get(ACCESSOR_ENV) or "d2")

__all__ = [
    "__version__",
    "D2Accessor",
    "D2DictAccessor",
    "register_accessor",
    "embedding_matrix",
    "D2PruneError",
    "ColumnNotFoundError",
    "ColumnTypeError",
    "InvalidParameterError",
    "InvalidValuesError",
    "ModelNotFoundError",
    "NamespaceConflictError",
]
