"""CCS "hard cutoff": drop the fraction β of rows most likely to be mislabelled before selecting."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_finite, check_fraction

__all__ = ["hard_cutoff_rows"]


def hard_cutoff_rows(n: int, hard_cutoff: float, cutoff_scores=None, scores=None) -> np.ndarray:
    """Return the sorted ids of the ``int(hard_cutoff · n)`` rows to drop (Zheng et al., 2023).

    The dropped rows are those with the lowest ``cutoff_scores`` (AUM-like: low = likely
    mislabelled), ties by lowest row id. Without ``cutoff_scores`` the hardest rows by
    ``scores`` (the highest, in the "higher = harder / keep" convention) are dropped, as CCS does
    when its cutoff score is the selection score. ``int()`` floors, as in the CCS code.

    Raises:
        InvalidParameterError: ``hard_cutoff`` outside ``[0, 1)``, or no scores to cut by.
    """
    beta = check_fraction(hard_cutoff, "hard_cutoff")
    n_cut = int(beta * n)
    if n_cut == 0:
        return np.zeros(0, dtype=np.int64)
    if cutoff_scores is not None:
        key = np.asarray(cutoff_scores, dtype=np.float64)
        name = "cutoff_scores"
    elif scores is not None:
        key = -np.asarray(scores, dtype=np.float64)
        name = "scores"
    else:
        raise InvalidParameterError("hard_cutoff > 0 needs cutoff_scores (e.g. AUM) to rank rows by.")
    if key.shape != (n,):
        raise InvalidParameterError(f"{name} must have shape ({n},), got {key.shape}.")
    check_finite(key, name)
    return np.sort(np.argsort(key, kind="stable")[:n_cut])
