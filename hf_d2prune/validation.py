"""Input checks shared by every step: run them before any expensive work."""

from __future__ import annotations

import numpy as np

from .errors import InvalidParameterError, InvalidValuesError

__all__ = ["check_finite", "check_positive_int", "check_fraction", "describe_rows", "nonfinite_rows"]


def describe_rows(indices: np.ndarray, limit: int = 5) -> str:
    """Return ``"3 rows (first: 4, 17, 90)"`` for an index array, for error messages."""
    indices = np.asarray(indices).ravel()
    first = ", ".join(str(int(i)) for i in indices[:limit])
    more = ", ..." if indices.size > limit else ""
    return f"{indices.size} row{'s' if indices.size != 1 else ''} (first: {first}{more})"


def nonfinite_rows(values: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """Indices of the rows (first axis) of ``values`` that hold NaN or ±inf.

    Works block by block with a cheap sum test first, so checking a large matrix needs no
    temporary of its size.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fc":
        return np.empty(0, dtype=np.int64)
    if values.ndim == 0:
        return np.array([0]) if not np.isfinite(values) else np.empty(0, dtype=np.int64)
    rows = values.reshape(values.shape[0], -1)
    bad = []
    for lo in range(0, rows.shape[0], block_rows):
        block = rows[lo:lo + block_rows]
        with np.errstate(invalid="ignore", over="ignore"):  # inf − inf is the case looked for, not a warning
            total = block.sum()  # in the values' own precision: twice as fast for float32 as a float64 sum
        if np.isfinite(total):
            continue  # a sum of finite values can overflow (then the rows are checked), never the other way round
        bad.append(np.flatnonzero(~np.isfinite(block).all(axis=1)) + lo)
    return np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)


def check_finite(values: np.ndarray, name: str) -> None:
    """Raise :class:`InvalidValuesError` if ``values`` holds NaN or ±inf.

    The message gives how many rows are affected and the first few row indices.
    """
    bad_rows = nonfinite_rows(values)
    if bad_rows.size:
        raise InvalidValuesError(
            f"{name} holds NaN or inf in {describe_rows(bad_rows)}; "
            f"drop or fix those rows first (e.g. ds.filter) or recompute them."
        )


def check_positive_int(value: int, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer ≥ ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_fraction(value: float, name: str, *, low: float = 0.0, high: float = 1.0,
                   low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """Return ``value`` as float if it lies in the given interval, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high) or not np.isfinite(value):
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise InvalidParameterError(f"{name} must lie in {interval}, got {value}.")
    return value
