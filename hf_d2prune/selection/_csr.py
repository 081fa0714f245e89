"""The adjacency D2 walks on, as CSR arrays built from a kNN edge list.

Directed rows keep the kNN order (nearest first). Symmetric rows are the union of both
directions — i~j when either lists the other — each undirected edge once, neighbours in
ascending id (the order the reference's dense row sums use). When both i->j and j->i exist
their distances agree up to float rounding; the smaller is kept, deterministically.

With numba the symmetric build is a counting sort plus a tiny sort per row, O(n·k); without
it, two numpy sorts of the edge keys (several seconds at 10M edges).
"""

from __future__ import annotations

import numpy as np

from ._greedy import HAVE_NUMBA, numba

__all__ = ["csr_adjacency"]


def _symmetric_numpy(n, source, target, dist):
    lo, hi = np.minimum(source, target), np.maximum(source, target)
    key = lo * np.int64(n) + hi
    order = np.argsort(key)  # equal keys are the same edge: their order does not matter
    key, dist = key[order], dist[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    dist = np.minimum.reduceat(dist, starts)
    lo, hi = np.divmod(key[starts], np.int64(n))
    source = np.concatenate([lo, hi])
    target = np.concatenate([hi, lo])
    dist = np.concatenate([dist, dist])
    order = np.argsort(source * np.int64(n) + target)  # unique keys: deterministic
    source, target, dist = source[order], target[order], dist[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(source, minlength=n), out=indptr[1:])
    return indptr, target, dist


if HAVE_NUMBA:

    @numba.njit(cache=True, nogil=True)
    def _symmetric_numba(n, source, target, dist):
        m = source.shape[0]
        start = np.zeros(n + 1, dtype=np.int64)
        for e in range(m):
            start[source[e] + 1] += 1
            start[target[e] + 1] += 1
        for i in range(n):
            start[i + 1] += start[i]
        fill = start[:-1].copy()
        nbr = np.empty(2 * m, dtype=np.int64)
        dd = np.empty(2 * m, dtype=np.float32)
        for e in range(m):
            a = source[e]
            b = target[e]
            nbr[fill[a]] = b
            dd[fill[a]] = dist[e]
            fill[a] += 1
            nbr[fill[b]] = a
            dd[fill[b]] = dist[e]
            fill[b] += 1
        indptr = np.zeros(n + 1, dtype=np.int64)
        out = 0
        for i in range(n):
            lo = start[i]
            hi = start[i + 1]
            # insertion sort by (neighbour, distance): rows hold ~2k entries
            for p in range(lo + 1, hi):
                vn = nbr[p]
                vd = dd[p]
                q = p - 1
                while q >= lo and (nbr[q] > vn or (nbr[q] == vn and dd[q] > vd)):
                    nbr[q + 1] = nbr[q]
                    dd[q + 1] = dd[q]
                    q -= 1
                nbr[q + 1] = vn
                dd[q + 1] = vd
            # keep the first (smallest distance) of each neighbour, compacting in place
            for p in range(lo, hi):
                if p == lo or nbr[p] != nbr[p - 1]:
                    nbr[out] = nbr[p]
                    dd[out] = dd[p]
                    out += 1
            indptr[i + 1] = out
        return indptr, nbr[:out], dd[:out]


def csr_adjacency(n: int, source, target, dist, graph: str):
    """Return ``(indptr, neighbours, distances)``; ``source`` must be sorted ascending.

    Distances are float32. The symmetric arrays are views of the build buffers (sized for both
    directions of every edge), which avoids a second copy at the peak.
    """
    source = np.ascontiguousarray(source, dtype=np.int64)
    target = np.ascontiguousarray(target, dtype=np.int64)
    # float32: the distances come from float32 vectors and feed float32 kernels; min() of two
    # directions commutes with the cast, so nothing is lost against float64.
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    if graph == "symmetric":
        if HAVE_NUMBA:
            return _symmetric_numba(n, source, target, dist)
        return _symmetric_numpy(n, source, target, dist)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(source, minlength=n), out=indptr[1:])
    return indptr, target, dist
