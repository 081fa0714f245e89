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

__all__ = ["column_array", "embedding_blocks", "embedding_matrix", "missing_rows", "require_columns"]


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


def missing_rows(ds: "datasets.Dataset", column: str) -> np.ndarray:
    """Positions of the rows of ``ds`` whose ``column`` is missing (None), without reading the column
    when it has no nulls (the table's null count); a selection or shuffle of the table is followed
    through its indices mapping, so even an image column is not copied."""
    values = ds.data.column(column)  # every row of the table under ds
    if not values.null_count:
        return np.zeros(0, dtype=np.int64)
    null = np.asarray(pc.is_null(values))
    if ds._indices is not None:
        null = null[np.asarray(ds._indices.column(0))]
    return np.flatnonzero(null)


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


def _embedding_column(ds: "datasets.Dataset", column: str) -> tuple[pa.ChunkedArray, int]:
    """Validate an embedding column; return its Arrow data and the vector length."""
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
    return arr, d


def _chunk_views(arr: pa.ChunkedArray, d: int) -> list[np.ndarray]:
    # `flatten` respects chunk offsets (sliced arrays); `to_numpy` is zero-copy for null-free numerics.
    return [chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, d) for chunk in arr.chunks if len(chunk)]


def embedding_blocks(ds: "datasets.Dataset", column: str = "embedding") -> list[np.ndarray]:
    """Return an embedding column as a list of ``(n_i, d)`` row blocks, without copying.

    One block per Arrow record batch: for a dataset memory-mapped from disk (after
    ``embed``, ``load_from_disk`` or the ``datasets`` cache) each block is a read-only view of
    the file, so reading a million-row column costs no memory until its pages are touched.
    float32 and float16 columns are returned as stored; other numeric types are converted to
    float32 block by block. Rows are in dataset order (an indices mapping from
    ``select``/``shuffle``/``filter`` is applied, which copies the selected rows once).
    :func:`hf_d2prune.graph.knn_graph` and D2 take the list as it is. Values are not checked
    for NaN/inf here (the graph does it block by block).

    Raises:
        The same errors as :func:`embedding_matrix`, before anything is read.

    Example:
        >>> blocks = embedding_blocks(ds)          # doctest: +SKIP
        >>> sum(len(b) for b in blocks) == len(ds) # doctest: +SKIP
        True
    """
    arr, d = _embedding_column(ds, column)
    blocks = _chunk_views(arr, d)
    return [b if b.dtype in (np.float32, np.float16) else b.astype(np.float32) for b in blocks]


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
    otherwise exactly one contiguous copy is made (see :func:`embedding_blocks` for a reader
    that never copies). No Python-level loop over rows.

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
    arr, d = _embedding_column(ds, column)
    parts = _chunk_views(arr, d)
    if len(parts) == 1:
        matrix = parts[0]
        if matrix.dtype != np.dtype(dtype) or not matrix.flags.c_contiguous:
            matrix = np.ascontiguousarray(matrix, dtype=dtype)
    else:
        matrix = np.empty((len(ds), d), dtype=dtype)  # one copy, converted block by block
        offset = 0
        for part in parts:
            matrix[offset:offset + len(part)] = part
            offset += len(part)
    if check_values:
        check_finite(matrix, f"column '{column}'")
    return matrix
