"""Columns of a :class:`datasets.Dataset` as numpy arrays, without a Python loop over rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ColumnNotFoundError, ColumnTypeError, InvalidParameterError, InvalidValuesError
from .validation import check_finite, describe_rows

if TYPE_CHECKING:
    import datasets

__all__ = ["column_array", "embedding_matrix", "require_columns"]


def require_columns(ds: "datasets.Dataset", *columns: str) -> None:
    """Raise :class:`ColumnNotFoundError` naming the first missing column and the available ones."""
    for column in columns:
        if not isinstance(column, str):
            raise InvalidParameterError(
                f"a column name must be a string, got {column!r} ({type(column).__name__}); "
                f"available: {', '.join(ds.column_names) or '(none)'}."
            )
        if column not in ds.column_names:
            available = ", ".join(ds.column_names) or "(none)"
            hint = ""
            close = [c for c in ds.column_names if c.lower() == column.lower()]
            if close:
                hint = f" Did you mean '{close[0]}'?"
            raise ColumnNotFoundError(f"column '{column}' not found; available: {available}.{hint}")


def _arrow_column(ds: "datasets.Dataset", column: str) -> pa.ChunkedArray:
    # `with_format("arrow")` applies any indices mapping (select/filter/shuffle) with one
    # vectorised `take`, so row i of the result is row i of the dataset.
    return ds.with_format("arrow", columns=[column])[:][column]


def column_array(ds: "datasets.Dataset", column: str, *, dtype: "np.dtype | str | None" = None) -> np.ndarray:
    """Return a scalar column (numbers or booleans) as a 1-D numpy array.

    Args:
        ds: the dataset.
        column: name of a column of numbers or booleans.
        dtype: cast to this dtype (default: keep Arrow's).

    Raises:
        ColumnNotFoundError: ``column`` is missing.
        ColumnTypeError: the column is not numeric.
        InvalidValuesError: the column has missing (null) values.
    """
    require_columns(ds, column)
    arr = _arrow_column(ds, column)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
        raise ColumnTypeError(f"column '{column}' holds {arr.type} values; a numeric column is needed here.")
    if arr.null_count:
        nulls = np.flatnonzero(np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False)))
        raise InvalidValuesError(f"column '{column}' has missing values in {describe_rows(nulls)}; fill or drop them first.")
    out = arr.to_numpy()
    return out.astype(dtype, copy=False) if dtype is not None else out


def embedding_matrix(
    ds: "datasets.Dataset",
    column: str = "embedding",
    *,
    dtype: "np.dtype | str" = np.float32,
    check_values: bool = True,
) -> np.ndarray:
    """Return an embedding column as one C-contiguous ``(n, d)`` array.

    The values are taken from Arrow buffers in bulk: a single-chunk fixed-size column of the
    requested dtype is returned as a zero-copy, read-only view of the (memory-mapped) data;
    otherwise exactly one contiguous copy is made. No Python-level loop over rows.

    Args:
        ds: the dataset.
        column: a column of equal-length numeric vectors (``Sequence(Value("float32"), length=d)``
            as written by ``ds.d2.embed``, or any list-of-numbers column).
        dtype: dtype of the result (default float32).
        check_values: raise on NaN/inf.

    Returns:
        ``np.ndarray`` of shape ``(len(ds), d)``.

    Raises:
        ColumnNotFoundError: ``column`` is missing.
        ColumnTypeError: the column does not hold numeric vectors.
        InvalidValuesError: empty dataset, missing rows, vectors of unequal length, NaN/inf.

    Example:
        >>> X = ds.d2.embeddings()          # doctest: +SKIP
        >>> X.shape, X.dtype                # doctest: +SKIP
        ((5574, 384), dtype('float32'))
    """
    require_columns(ds, column)
    if len(ds) == 0:
        raise InvalidValuesError(f"the dataset is empty: column '{column}' has no rows.")
    arr = _arrow_column(ds, column)
    kind = arr.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ColumnTypeError(
            f"column '{column}' holds {kind} values; embeddings must be lists of numbers "
            f"(create them with ds.d2.embed(...))."
        )
    value_type = kind.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise ColumnTypeError(f"column '{column}' holds lists of {value_type}; embeddings must be numeric.")
    if arr.null_count:
        nulls = np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))
        raise InvalidValuesError(f"column '{column}' has missing embeddings in {describe_rows(nulls)}; recompute or drop them.")

    if pa.types.is_fixed_size_list(kind):
        d = kind.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        d = int(lengths[0])
        ragged = np.flatnonzero(lengths != d)
        if ragged.size:
            raise InvalidValuesError(
                f"column '{column}' has embeddings of unequal length: row 0 has {d} values but "
                f"{describe_rows(ragged)} differ (e.g. row {ragged[0]} has {int(lengths[ragged[0]])}); "
                f"all rows must come from the same model."
            )
    if d == 0:
        raise InvalidValuesError(f"column '{column}' holds empty vectors.")

    # `flatten` respects chunk offsets (sliced arrays); `to_numpy` is zero-copy for null-free numerics.
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in arr.chunks]
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    matrix = flat.reshape(len(ds), d)
    if matrix.dtype != np.dtype(dtype) or not matrix.flags.c_contiguous:
        matrix = np.ascontiguousarray(matrix, dtype=dtype)
    if check_values:
        check_finite(matrix, f"column '{column}'")
    return matrix
