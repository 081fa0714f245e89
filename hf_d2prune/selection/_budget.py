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

__all__ = [
    "equal_allocation",
    "interleave_by_allocation",
    "visiting_order",
    "proportional_sequence",
    "proportional_allocation",
    "interleave_proportional",
    "score_strata",
    "split_rows",
]


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


def score_strata(values: np.ndarray, n_strata: int) -> np.ndarray:
    """Equal-width strata of ``values`` between their min and max (CCS's bins).

    The maximum falls in the last stratum: the CCS authors stretch the top edge by 1.0001 for the
    same purpose, which moves every edge by 0.01%; we close the last stratum instead. Constant
    values all fall in stratum 0.

    Args:
        values: ``(m,)`` finite scores.
        n_strata: number of strata, ``>= 1``.

    Returns:
        int64 ``(m,)`` stratum of each value, in ``[0, n_strata)``.

    Example:
        >>> score_strata(np.array([0.0, 0.2, 0.5, 1.0]), 2).tolist()
        [0, 0, 1, 1]
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = values.min(), values.max()
    if not high > low:
        return np.zeros(len(values), dtype=np.int64)
    return np.minimum(((values - low) / (high - low) * n_strata).astype(np.int64), n_strata - 1)


def split_rows(rows: np.ndarray, groups: np.ndarray, n_groups: int) -> list:
    """``rows`` split by ``groups`` (ids in ``[0, n_groups)``), each part in its order in ``rows``.

    One stable sort, O(m log m), instead of one pass over ``rows`` per group.

    Example:
        >>> [part.tolist() for part in split_rows(np.array([10, 11, 12, 13]), np.array([1, 0, 1, 1]), 3)]
        [[11], [10, 12, 13], []]
    """
    rows = np.asarray(rows)
    by_group = rows[np.argsort(groups, kind="stable")]
    return np.split(by_group, np.cumsum(np.bincount(groups, minlength=n_groups))[:-1])


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


# ---------------------------------------------------------------- proportional budgets
#
# Partitioned D2 splits a budget ``N`` over partitions in proportion to their sizes. Hamilton's
# largest-remainder rule gives each group ``floor(N·s/n)`` or ``ceil(N·s/n)`` rows, but it is not
# monotone in ``N`` (the Alabama paradox: one more row overall can take a row away from a group),
# so no single order can have all its prefixes equal to it. We keep the quota property — every
# group holds ``floor(N·s_g/n)`` or ``ceil(N·s_g/n)`` rows at *every* budget ``N`` — and make
# the allocation grow one row at a time, so one order serves every budget.
#
# Group g's j-th row may be handed out at the earliest at budget ``R = floor((j-1)·n/s_g) + 1``
# (before that it would exceed the upper quota) and at the latest at ``D = ceil(j·n/s_g)``
# (after that the group would fall below its lower quota). Each (g, j) is a unit job with a
# release time and a deadline; house-monotone allocations within quota exist for any sizes
# (Balinski & Young's quota method), and earliest-deadline-first is optimal for unit jobs with
# integer release times and deadlines, so scheduling budget slots 1, 2, ... by EDF (ties: lowest
# group id) meets every deadline. Since R and D both grow with j, each group's rows come out in
# its own order. The tests check the quota bounds at every budget on many random size vectors.
# (EDF hands a row out as late as its quota allows, so at a given budget the larger groups tend
# to hold the ceiling of their share and the smaller ones the floor, like Jefferson/D'Hondt
# rounding restricted to the quota.)


def _heap_push(heap, size, key):
    p = size
    heap[p] = key
    while p > 0:
        parent = (p - 1) >> 1
        if heap[parent] <= key:
            break
        heap[p] = heap[parent]
        p = parent
    heap[p] = key
    return size + 1


def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    if size > 0:
        last = heap[size]
        p = 0
        while True:
            child = 2 * p + 1
            if child >= size:
                break
            if child + 1 < size and heap[child + 1] < heap[child]:
                child += 1
            if heap[child] >= last:
                break
            heap[p] = heap[child]
            p = child
        heap[p] = last
    return top, size


def _proportional_sequence_impl(sizes, length):
    n_groups = sizes.shape[0]
    total = np.int64(0)
    for g in range(n_groups):
        total += sizes[g]
    out = np.empty(length, dtype=np.int64)
    taken = np.zeros(n_groups, dtype=np.int64)
    released = np.empty(n_groups, dtype=np.int64)  # keys deadline * G + g
    pending = np.empty(n_groups, dtype=np.int64)   # keys release * G + g
    n_released = 0
    n_pending = 0
    G = np.int64(n_groups)
    for g in range(n_groups):
        if sizes[g] > 0:
            n_pending = _heap_push(pending, n_pending, np.int64(1) * G + g)  # first rows: release 1
    for t in range(1, length + 1):
        while n_pending > 0 and pending[0] // G <= t:
            key, n_pending = _heap_pop(pending, n_pending)
            g = key % G
            j = taken[g] + 1
            deadline = (j * total + sizes[g] - 1) // sizes[g]
            n_released = _heap_push(released, n_released, deadline * G + g)
        if n_released == 0:
            return out, False
        key, n_released = _heap_pop(released, n_released)
        g = key % G
        if key // G < t:
            return out, False
        out[t - 1] = g
        taken[g] += 1
        if taken[g] < sizes[g]:
            release = (taken[g] * total) // sizes[g] + 1
            n_pending = _heap_push(pending, n_pending, release * G + g)
    return out, True


try:
    from ._greedy import HAVE_NUMBA, numba

    if HAVE_NUMBA:
        _heap_push = numba.njit(cache=True, nogil=True)(_heap_push)
        _heap_pop = numba.njit(cache=True, nogil=True)(_heap_pop)
        _proportional_sequence_fast = numba.njit(cache=True, nogil=True)(_proportional_sequence_impl)
    else:  # pragma: no cover - exercised where numba is absent
        _proportional_sequence_fast = _proportional_sequence_impl
except ImportError:  # pragma: no cover
    _proportional_sequence_fast = _proportional_sequence_impl


def _check_sizes(sizes) -> np.ndarray:
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or (sizes.size and sizes.dtype.kind not in "iu"):
        raise InvalidParameterError(
            f"sizes must be a 1-D array of integers, got shape {sizes.shape}, dtype {sizes.dtype}.")
    sizes = sizes.astype(np.int64)
    if (sizes < 0).any():
        raise InvalidParameterError("sizes must be >= 0.")
    return sizes


def proportional_sequence(sizes: Sequence[int], length: int | None = None) -> np.ndarray:
    """The group that receives each successive row when budgets grow in proportion to size.

    ``np.bincount(seq[:N], minlength=len(sizes))`` is :func:`proportional_allocation` at budget
    ``N``, for every ``N``: each group holds ``floor(N·s/n)`` or ``ceil(N·s/n)`` rows.

    Args:
        sizes: rows in each group (``n = sum(sizes)``).
        length: how many slots to produce, ``0 <= length <= n`` (default ``n``).

    Returns:
        int64 ``(length,)`` group ids.

    Raises:
        InvalidParameterError: negative sizes, ``length`` outside ``[0, n]``.

    Example:
        >>> proportional_sequence([1, 3]).tolist()
        [1, 1, 0, 1]
    """
    sizes = _check_sizes(sizes)
    total = int(sizes.sum())
    length = total if length is None else int(length)
    if not 0 <= length <= total:
        raise InvalidParameterError(f"budget must lie in [0, {total}] (the rows available), got {length}.")
    if length == 0:
        return np.zeros(0, dtype=np.int64)
    seq, ok = _proportional_sequence_fast(sizes, np.int64(length))
    if not ok:  # cannot happen for valid sizes (module comment); guard against silent errors
        raise RuntimeError(f"proportional_sequence missed a quota deadline for sizes {sizes.tolist()}")
    return np.asarray(seq, dtype=np.int64)


def proportional_allocation(sizes: Sequence[int], budget: int) -> np.ndarray:
    """Split ``budget`` over groups in proportion to their sizes, monotone in ``budget``.

    Every group gets ``floor(budget·s/n)`` or ``ceil(budget·s/n)`` rows (the quota property of
    largest-remainder rounding), and raising the budget by one raises exactly one group's share
    by one, so one interleaved order (:func:`interleave_proportional`) serves every budget.

    Args:
        sizes: rows in each group.
        budget: rows to select in total, ``0 <= budget <= sum(sizes)``.

    Returns:
        int64 array, rows allotted per group (same order as ``sizes``); sums to ``budget``.

    Raises:
        InvalidParameterError: budget outside ``[0, sum(sizes)]``.

    Example:
        >>> proportional_allocation([10, 30, 60], 10).tolist()
        [1, 3, 6]
    """
    sizes = _check_sizes(sizes)
    return np.bincount(proportional_sequence(sizes, budget), minlength=len(sizes)).astype(np.int64)


def interleave_proportional(per_group_orders: Sequence[np.ndarray], group_sizes: Sequence[int]) -> np.ndarray:
    """Merge per-group orders so every prefix of length N is the proportional allocation at N.

    Args:
        per_group_orders: for each group, its row ids in that group's own selection order.
            An order may be shorter than its group (e.g. truncated at the group's share of a
            budget): the merge then stops at the first slot whose group has no row left, so
            every prefix of the result is exact.
        group_sizes: the full size of each group (decides the shares).

    Returns:
        int64 array of row ids: the merged order.

    Example:
        >>> interleave_proportional([np.array([10]), np.array([20, 21, 22])], [1, 3]).tolist()
        [20, 21, 10, 22]
    """
    sizes = _check_sizes(group_sizes)
    if len(per_group_orders) != len(sizes):
        raise InvalidParameterError(
            f"per_group_orders has {len(per_group_orders)} groups but group_sizes has {len(sizes)}.")
    lengths = np.array([len(o) for o in per_group_orders], dtype=np.int64)
    if (lengths > sizes).any():
        raise InvalidParameterError("a group's order is longer than the group's size.")
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seq = proportional_sequence(sizes, total)
    # Slot of each entry inside its group; stop at the first slot the group cannot fill.
    per_group = np.bincount(seq, minlength=len(sizes))
    slot = np.empty(total, dtype=np.int64)
    slot[np.argsort(seq, kind="stable")] = np.arange(total) - np.repeat(np.cumsum(per_group) - per_group, per_group)
    short = np.flatnonzero(slot >= lengths[seq])
    stop = int(short[0]) if short.size else total
    seq, slot = seq[:stop], slot[:stop]
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    rows = np.concatenate([np.asarray(o, dtype=np.int64) for o in per_group_orders])
    return rows[offsets[seq] + slot]
