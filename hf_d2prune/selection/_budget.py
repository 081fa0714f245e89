"""Equal budget per group, and a selection order that is consistent at every budget.

Class-wise D2 and CCS both split a budget ``N`` over groups (classes, score bins) the same way:
visit the groups from the smallest to the largest, and give each ``min(size, remaining //
groups_left)`` (the CCS paper's ``bin_allocate``; D2 reuses it per class). Each group is then
filled from its own greedy order.

To keep "rank, not mask" we need one global order whose every prefix of length ``N`` is that
selection at budget ``N``. This works because the allocation is monotone: going from ``N`` to
``N + 1`` raises exactly one group's share by one. Which group? The allocation is water-filling
— unsaturated groups hold ``q`` or ``q + 1`` and the ``+1``s sit on the largest groups — so the
increments come in rounds: round ``q`` hands every group of size ``>= q`` its ``q``-th slot, the
largest group first (ties in size: the group visited last first). So the merged order is a
sort of (slot, reverse visiting position), with no loop over budgets
(``tests/test_selection_d2.py`` checks it against :func:`equal_allocation` at every budget).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidParameterError

__all__ = ["equal_allocation", "interleave_by_allocation", "visiting_order"]


def visiting_order(sizes: np.ndarray) -> np.ndarray:
    """Groups from the smallest to the largest; equal sizes in group-id order."""
    return np.argsort(np.asarray(sizes), kind="stable")


def equal_allocation(sizes: Sequence[int], budget: int) -> np.ndarray:
    """Split ``budget`` over groups: smallest group first, each ``min(size, remaining // left)``.

    Args:
        sizes: rows in each group.
        budget: rows to select in total, ``0 <= budget <= sum(sizes)``.

    Returns:
        int64 array, rows allotted per group (same order as ``sizes``); sums to ``budget``.

    Raises:
        InvalidParameterError: budget outside ``[0, sum(sizes)]``.

    Example:
        >>> equal_allocation([5, 100, 100], 30).tolist()
        [5, 12, 13]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise InvalidParameterError(f"budget must lie in [0, {total}] (the rows available), got {budget}.")
    out = np.zeros(len(sizes), dtype=np.int64)
    remaining = int(budget)
    visit = [g for g in visiting_order(sizes) if sizes[g] > 0]
    for position, g in enumerate(visit):
        take = min(int(sizes[g]), remaining // (len(visit) - position))
        out[g] = take
        remaining -= take
    return out


def interleave_by_allocation(per_group_orders: Sequence[np.ndarray], group_sizes: Sequence[int]) -> np.ndarray:
    """Merge per-group orders so every prefix of length N is the equal allocation at budget N.

    Args:
        per_group_orders: for each group, its row ids in that group's own selection order
            (may be shorter than the group, e.g. truncated at a budget: prefixes stay exact
            up to the budget the truncation was made for).
        group_sizes: the full size of each group (decides the visiting order and the rounds).

    Returns:
        int64 array of row ids: the merged order.

    Example:
        >>> interleave_by_allocation([np.array([10]), np.array([20, 21, 22])], [1, 3]).tolist()
        [20, 10, 21, 22]
    """
    sizes = np.asarray(group_sizes, dtype=np.int64)
    n_groups = len(sizes)
    visit_position = np.empty(n_groups, dtype=np.int64)
    visit_position[visiting_order(sizes)] = np.arange(n_groups)
    lengths = np.array([len(o) for o in per_group_orders], dtype=np.int64)
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate([np.asarray(o, dtype=np.int64) for o in per_group_orders])
    group = np.repeat(np.arange(n_groups), lengths)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    # Round first, then the group visited last (the largest) first within a round.
    key = slot * n_groups + (n_groups - 1 - visit_position[group])
    return rows[np.argsort(key, kind="stable")]
