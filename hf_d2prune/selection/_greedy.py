"""D2's reverse message passing as an exact heap greedy over a CSR graph.

The greedy repeatedly takes the unselected row with the largest score (lowest id among equal
scores) and lowers each neighbour's score by ``weight · score_of_pick``. Only the neighbours of
the pick change, so a max-heap keyed on (score, -id) gives the same sequence as a full argmax per
step in O(n·deg·log n) instead of O(N·n).

Two implementations of the same algorithm:

- numba (used when ``numba`` is installed): an indexed binary heap updated in place.
- pure Python (fallback): ``heapq`` with lazy deletion — every change pushes a fresh entry and
  stale entries are skipped when popped (an entry is current iff its row is unselected and its
  stored score equals the row's score now).

Both perform the same float64 operations in the same order, so they return identical orders
(tests check this on random graphs with ties).
"""

from __future__ import annotations

import heapq
import logging

import numpy as np

__all__ = ["reverse_greedy", "HAVE_NUMBA"]

logger = logging.getLogger(__name__)

try:  # numba is optional: it turns ~1M-row greedy runs from tens of seconds into ~1 s.
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None
    HAVE_NUMBA = False


def _greedy_python(values, indptr, neighbours, weights, budget):
    values = values.tolist()
    indptr = indptr.tolist()
    neighbours_l = neighbours.tolist()
    weights_l = weights.tolist()
    n = len(values)
    selected = bytearray(n)
    heap = [(-v, i) for i, v in enumerate(values)]
    heapq.heapify(heap)
    order = []
    push, pop = heapq.heappush, heapq.heappop
    while len(order) < budget:
        neg, i = pop(heap)
        if selected[i] or -neg != values[i]:
            continue  # stale entry: the row was picked or its score changed since
        selected[i] = 1
        order.append(i)
        v = values[i]
        for e in range(indptr[i], indptr[i + 1]):
            j = neighbours_l[e]
            if selected[j]:
                continue
            new = values[j] - weights_l[e] * v
            if new != values[j]:
                values[j] = new
                push(heap, (-new, j))
    return np.asarray(order, dtype=np.int64)


if HAVE_NUMBA:

    @numba.njit(cache=True, nogil=True)
    def _before(values, a, b):
        # Heap order: larger score first, lower id first among equal scores.
        va = values[a]
        vb = values[b]
        return va > vb or (va == vb and a < b)

    @numba.njit(cache=True, nogil=True)
    def _sift_up(heap, pos, values, p):
        node = heap[p]
        while p > 0:
            parent = (p - 1) >> 1
            other = heap[parent]
            if _before(values, node, other):
                heap[p] = other
                pos[other] = p
                p = parent
            else:
                break
        heap[p] = node
        pos[node] = p

    @numba.njit(cache=True, nogil=True)
    def _sift_down(heap, pos, values, p, size):
        node = heap[p]
        while True:
            child = 2 * p + 1
            if child >= size:
                break
            right = child + 1
            if right < size and _before(values, heap[right], heap[child]):
                child = right
            other = heap[child]
            if _before(values, other, node):
                heap[p] = other
                pos[other] = p
                p = child
            else:
                break
        heap[p] = node
        pos[node] = p

    @numba.njit(cache=True, nogil=True)
    def _greedy_numba(values, indptr, neighbours, weights, budget):
        n = values.shape[0]
        heap = np.arange(n)
        pos = np.arange(n)
        for p in range(n // 2 - 1, -1, -1):
            _sift_down(heap, pos, values, p, n)
        selected = np.zeros(n, dtype=np.bool_)
        order = np.empty(budget, dtype=np.int64)
        size = n
        for t in range(budget):
            i = heap[0]
            size -= 1
            if size > 0:
                heap[0] = heap[size]
                pos[heap[0]] = 0
                _sift_down(heap, pos, values, 0, size)
            selected[i] = True
            order[t] = i
            v = values[i]
            for e in range(indptr[i], indptr[i + 1]):
                j = neighbours[e]
                if selected[j]:
                    continue
                old = values[j]
                new = old - weights[e] * v
                values[j] = new
                if new > old:
                    _sift_up(heap, pos, values, pos[j])
                elif new < old:
                    _sift_down(heap, pos, values, pos[j], size)
        return order


def reverse_greedy(values, indptr, neighbours, weights, budget: int, *, backend: str = "auto") -> np.ndarray:
    """Run the reverse greedy; return the first ``budget`` picks (int64).

    Args:
        values: float64 ``(n,)`` starting scores (the forward scores); not modified.
        indptr, neighbours, weights: CSR graph; ``weights[e]`` multiplies the pick's score.
        budget: number of picks, ``0 <= budget <= n``.
        backend: ``"auto"`` (numba if installed), ``"numba"`` or ``"python"``.
    """
    values = np.array(values, dtype=np.float64)  # a copy: the greedy writes into it
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    neighbours = np.ascontiguousarray(neighbours, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    use_numba = HAVE_NUMBA if backend == "auto" else backend == "numba"
    if use_numba:
        if not HAVE_NUMBA:
            raise ImportError("backend='numba' needs numba: pip install numba")
        return _greedy_numba(values, indptr, neighbours, weights, int(budget))
    if len(values) > 200_000:
        logger.info("numba is not installed: the pure-Python D2 greedy over %d rows will take a while "
                    "(pip install numba makes it ~20x faster)", len(values))
    return _greedy_python(values, indptr, neighbours, weights, int(budget))
