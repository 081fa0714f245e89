"""Partitioned D2: split the rows into k-means cells, run D2 in each, merge one global order.

D2 over ``n`` rows needs one kNN graph over all of them. When that graph outgrows a machine
(or an exact graph is wanted at a size where brute force over ``n`` is too slow), the rows can be
split into ``P`` partitions that are each ranked on their own and merged:

1. **Partition** (:func:`partition_rows`, :func:`plan_partitions`): ``faiss.Kmeans`` with ``P``
   centroids from seeded k-means++ seeds, trained on a seeded sample of at most ``256·P`` rows;
   every row then goes to its nearest centroid (an IVF coarse quantizer: ``IndexFlatL2`` over
   the centroids). Neighbouring rows mostly share a cell, so most kNN edges stay inside one.
2. **Rank each partition** (:func:`run_partition`): D2 on the partition's rows with a budget
   proportional to its size. Three ways to give it neighbours (``neighbours=``):

   - ``"local"``: a kNN graph over the partition's own rows only — exactly ``d2_order`` on
     that subset. Edges that cross a cell boundary are lost; rows near a boundary find their
     ``k`` neighbours inside their own cell, a little farther away.
   - ``"halo"``: the partition's graph also holds *halo rows*: rows of other partitions whose
     second-nearest centroid is this partition's, the ones closest to the boundary first (by
     their distance to the bisecting hyperplane of the two centroids), at most
     ``ceil(halo·size)`` of them. The kNN graph is built over own and halo rows together, and
     D2 runs on all of them with one difference: halo rows are never selected. In forward
     passing they send (and receive) messages like any row; in reverse passing own picks lower
     them, and a halo row that comes out on top of the greedy is skipped — not selected, not
     counted in the budget — but still lowers its neighbours, standing in for its own partition
     picking it. That carries D2's diversity term across the boundary, the part of global D2
     that partitioning loses most (``benchmarks/RESULTS.md``, "Partitioned D2", measures it).
     Cost: up to ``(1 + halo)`` times the rows per partition.
   - ``"global"``: neighbours come from one kNN graph over all rows (``global_graph=``, or
     built with ``knn_graph``); forward passing uses every edge of an own row, including the
     edges to and from other partitions (so forward scores equal those of global D2, bit for
     bit), and reverse passing uses the edges inside the partition. The graph is the costly
     part of D2, so this mode pays for it once globally; it isolates what partitioning the
     greedy itself costs.

3. **Merge** (:func:`merge_partitions`): partition ``g`` holding ``s_g`` of ``n`` rows gets
   ``floor(N·s_g/n)`` or ``ceil(N·s_g/n)`` of a budget ``N``, and the allocation grows one row
   at a time (:func:`hf_d2prune.selection._budget.proportional_allocation`). The per-partition
   orders are interleaved so that ``order[:N]`` is the partitioned selection at budget ``N`` —
   each partition's first ``a_g(N)`` picks — for every ``N`` up to the length of the merged
   order (prefix-consistent, like ``d2_order``).

What is *not* reproduced: global D2 lets a pick lower its neighbours in other partitions (the
halo mode approximates this near boundaries), and lets the budget flow to wherever scores are
highest, while partitioned D2 fixes each partition's share by size.
``benchmarks/bench_partitioned.py`` measures how much of the global selection survives.

**Parallel and distributed runs.** Each partition is an independent unit of work: its row ids
(plus halo rows), the shared score and embedding arrays, and a budget. ``num_proc > 1`` runs
partitions in a process pool (``spawn`` start method by default, safe with OpenMP; the arrays
are shared through memory-mapped temporary files, workers receive only row ids, and each
worker's faiss uses ``cpu_count // num_proc`` threads). Across machines or Accelerate ranks,
rank ``r`` of ``world_size`` handles the partitions ``p`` with ``p % world_size == r``
(:func:`run_partitions_for_rank`), then the results are gathered and merged::

    from accelerate import Accelerator
    from accelerate.utils import gather_object

    acc = Accelerator()
    plan = plan_partitions(X, 16, seed=0)          # deterministic: every rank gets the same plan
    mine = run_partitions_for_rank(plan, scores, X, rank=acc.process_index,
                                   world_size=acc.num_processes, k=10)
    everyone = gather_object(mine)                  # PartitionResult objects of every rank
    result = merge_partitions(everyone, n=len(scores))  # a D2Result, on every rank

(Or compute the plan once, save ``plan.labels`` and pass them as ``partitions=``.) A script that
uses ``num_proc > 1`` must guard its entry point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import check_finite, check_positive_int
from ._budget import interleave_proportional, proportional_allocation
from ._csr import csr_adjacency
from ._greedy import reverse_greedy
from ._result import ranks_from_order
from .d2 import D2Result, _check_budget, _check_gamma, _check_graph_kind, _check_scores, _forward_csr, _kernel, d2_order

__all__ = [
    "PartitionPlan",
    "PartitionResult",
    "partition_rows",
    "plan_partitions",
    "run_partition",
    "merge_partitions",
    "partitions_for_rank",
    "run_partitions_for_rank",
    "d2_partitioned_order",
]

logger = logging.getLogger(__name__)

NeighbourMode = Literal["local", "halo", "global"]
NEIGHBOUR_MODES = ("local", "halo", "global")

#: k-means iterations of :func:`partition_rows`.
KMEANS_ITERATIONS = 20
#: Default training sample of the k-means: this many rows per centroid at most.
SAMPLE_PER_PARTITION = 256
_BLOCK = 65_536


# ---------------------------------------------------------------- validation

def _check_embeddings(embeddings, n: int | None = None, *, finite: bool = True):
    """Check shape and dtype (and NaN/inf when ``finite``); return the array as given, so a
    memory-mapped array stays on disk."""
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if x.ndim != 2:
        raise InvalidValuesError(f"embeddings must be a 2-D array (rows, dimensions), got shape {x.shape}.")
    if x.dtype.kind not in "fiu":
        raise InvalidValuesError(f"embeddings must hold numbers, got dtype {x.dtype}.")
    if n is not None and x.shape[0] != n:
        raise InvalidValuesError(f"embeddings has {x.shape[0]} rows but scores has {n}.")
    if finite:
        check_finite(x, "embeddings")  # block by block: a memmap is not loaded whole
    return x


def _rows_f32(x, rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[rows], dtype=np.float32)


def _check_mode(neighbours) -> str:
    if neighbours not in NEIGHBOUR_MODES:
        raise InvalidParameterError(
            f"neighbours must be one of {', '.join(repr(m) for m in NEIGHBOUR_MODES)}, got {neighbours!r}.")
    return neighbours


def _check_index(index) -> str:
    if index not in ("auto", "exact", "hnsw", "ivf"):
        raise InvalidParameterError(f"index must be 'auto', 'exact', 'hnsw' or 'ivf', got {index!r}.")
    return index


def _check_d2_params(neighbours, graph, k, gamma_forward, gamma_reverse, index) -> tuple:
    """The D2 parameters a partitioned run shares, checked (same order back)."""
    return (_check_mode(neighbours), _check_graph_kind(graph), check_positive_int(k, "k"),
            _check_gamma(gamma_forward, "gamma_forward"), _check_gamma(gamma_reverse, "gamma_reverse"),
            _check_index(index))


def _check_halo(halo) -> float:
    if isinstance(halo, bool) or not isinstance(halo, (int, float, np.integer, np.floating)) \
            or not np.isfinite(halo) or halo < 0:
        raise InvalidParameterError(f"halo must be a finite number >= 0 (extra rows per own row), got {halo!r}.")
    return float(halo)


def _check_n_partitions(n_partitions, n: int) -> int:
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)):
        raise InvalidParameterError(f"n_partitions must be an integer in [1, {n}], got {n_partitions!r}.")
    if not 1 <= n_partitions <= n:
        raise InvalidParameterError(
            f"n_partitions must lie in [1, n] = [1, {n}] (at most one partition per row), got {n_partitions}.")
    return int(n_partitions)


def _check_rows(rows, n: int, name: str = "rows") -> np.ndarray:
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
        raise InvalidValuesError(f"{name} must be a 1-D array of row ids, got shape {r.shape}, dtype {r.dtype}.")
    r = r.astype(np.int64)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise InvalidValuesError(f"{name} must lie in [0, {n}); found {r.min()}..{r.max()}.")
    u = np.unique(r)
    if len(u) != len(r):
        raise InvalidValuesError(f"{name} holds {len(r) - len(u)} repeated row ids; each row belongs once.")
    return u


def _check_global_graph(global_graph, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(global_graph, (tuple, list)) or len(global_graph) != 2:
        raise InvalidParameterError("global_graph must be (indices, distances), e.g. from hf_d2prune.graph.knn_graph.")
    indices, distances = global_graph
    indices = indices if isinstance(indices, np.ndarray) else np.asarray(indices)
    distances = distances if isinstance(distances, np.ndarray) else np.asarray(distances)
    if indices.ndim != 2 or indices.shape != distances.shape or indices.shape[0] != n:
        raise InvalidValuesError(
            f"global_graph must be (indices, distances) of equal shape ({n}, k); got "
            f"{indices.shape} and {distances.shape}.")
    if indices.dtype.kind not in "iu":
        raise InvalidValuesError(f"global_graph indices must be integers, got dtype {indices.dtype}.")
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise InvalidValuesError(f"global_graph indices must lie in [0, {n}).")
    if (indices == np.arange(n)[:, None]).any():
        raise InvalidValuesError("global_graph lists a row as its own neighbour; exclude self (knn_graph does).")
    check_finite(distances, "global_graph distances")
    if (distances < 0).any():
        raise InvalidValuesError("global_graph distances must be >= 0 (Euclidean distances).")
    return indices, distances


# ---------------------------------------------------------------- partitioning

def _kmeanspp_seeds(sample: np.ndarray, n_centroids: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each next seed drawn with probability
    proportional to its squared distance to the nearest seed so far. O(sample·P·d)."""
    m = len(sample)
    chosen = [int(rng.integers(m))]
    nearest = ((sample - sample[chosen[0]]) ** 2).sum(1, dtype=np.float64)
    for _ in range(1, n_centroids):
        total = float(nearest.sum())
        if total > 0:
            pick = int(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"))
            pick = min(pick, m - 1)
        else:  # fewer distinct points than centroids: any unused row
            pick = int(rng.choice(np.setdiff1d(np.arange(m), chosen)))
        chosen.append(pick)
        np.minimum(nearest, ((sample - sample[pick]) ** 2).sum(1, dtype=np.float64), out=nearest)
    return np.ascontiguousarray(sample[chosen], dtype=np.float32)


def _kmeans_centroids(x, n_partitions: int, seed: int, sample_size: int | None) -> np.ndarray:
    import faiss

    n, d = x.shape
    size = min(n, sample_size if sample_size is not None else SAMPLE_PER_PARTITION * n_partitions)
    size = max(size, n_partitions)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
    train = _rows_f32(x, sample)
    kmeans = faiss.Kmeans(d, n_partitions, niter=KMEANS_ITERATIONS, seed=int(seed), verbose=False,
                          min_points_per_centroid=1,
                          max_points_per_centroid=max(SAMPLE_PER_PARTITION, math.ceil(size / n_partitions)))
    # faiss seeds with P random rows; k-means++ seeds avoid two centroids in one dense cluster.
    seeds = _kmeanspp_seeds(train, n_partitions, rng)
    threads = faiss.omp_get_max_threads()
    # The training set is small (<= 256·P rows): one thread is as fast, and OpenMP barriers on a
    # busy machine made the multi-threaded training 20x slower in our measurements.
    faiss.omp_set_num_threads(1)
    try:
        kmeans.train(train, init_centroids=seeds)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _nearest_centroids(x, centroids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and ids of the ``k`` nearest centroids of every row (blockwise)."""
    import faiss

    quantizer = faiss.IndexFlatL2(centroids.shape[1])
    quantizer.add(centroids)
    n = x.shape[0]
    ids = np.empty((n, k), dtype=np.int64)
    sq = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        sq[lo:hi], ids[lo:hi] = quantizer.search(np.ascontiguousarray(x[lo:hi], dtype=np.float32), k)
    return sq, ids


def _partition(x, n_partitions: int, seed: int, sample_size: int | None):
    """Labels, centroids and the two nearest centroids of every row (``None`` for one partition)."""
    n = x.shape[0]
    if n_partitions == 1:
        return np.zeros(n, dtype=np.int64), None, None
    t = time.perf_counter()
    centroids = _kmeans_centroids(x, n_partitions, seed, sample_size)
    nearest = _nearest_centroids(x, centroids, 2)
    logger.info("partitions: k-means with %d centroids over %d rows in %.1f s", n_partitions, n,
                time.perf_counter() - t)
    return nearest[1][:, 0].copy(), centroids, nearest


def partition_rows(embeddings, n_partitions: int, *, seed: int = 0, sample_size: int | None = None) -> np.ndarray:
    """Assign every row to one of ``n_partitions`` k-means cells.

    ``faiss.Kmeans`` (:data:`KMEANS_ITERATIONS` iterations from seeded k-means++ seeds) is trained
    on a seeded sample of at most ``256·n_partitions`` rows, then every row goes to its nearest
    centroid (a flat coarse quantizer over the centroids, as in IVF). The same inputs and
    ``seed`` give the same labels.

    Args:
        embeddings: ``(n, d)`` vectors (a memory-mapped array is read block by block).
        n_partitions: number of cells, ``1 <= n_partitions <= n``. A cell can end up empty.
        seed: seeds the training sample and the k-means initialisation.
        sample_size: k-means training rows (default ``min(n, 256·n_partitions)``).

    Returns:
        int64 ``(n,)`` partition labels in ``[0, n_partitions)``.

    Raises:
        InvalidParameterError: ``n_partitions`` outside ``[1, n]``. InvalidValuesError: bad
            embeddings (not 2-D, NaN/inf).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], dtype=np.float32)
        >>> partition_rows(x, 2, seed=0).tolist()
        [1, 1, 1, 0, 0, 0]
    """
    x = _check_embeddings(embeddings)
    n_partitions = _check_n_partitions(n_partitions, x.shape[0])
    seed = check_positive_int(seed, "seed", minimum=0)
    if sample_size is not None:
        sample_size = check_positive_int(sample_size, "sample_size")
    return _partition(x, n_partitions, seed, sample_size)[0]


def _halo_rows(x, labels: np.ndarray, centroids: np.ndarray, sizes: np.ndarray, halo: float,
               nearest=None) -> tuple:
    """Per partition, the rows of other partitions closest to its boundary (sorted ids).

    ``nearest``: the (squared distances, ids) of every row's two nearest centroids, if known.
    """
    n_partitions = len(sizes)
    live = np.flatnonzero(sizes > 0)
    empty = tuple(np.zeros(0, dtype=np.int64) for _ in range(n_partitions))
    if halo == 0 or len(live) < 2:
        return empty
    if nearest is None or len(live) < n_partitions:  # empty cells must not be anyone's neighbour
        sq, ids = _nearest_centroids(x, centroids[live], 2)
        ids = live[ids]
    else:
        sq, ids = nearest
    own = labels
    first_is_own = ids[:, 0] == own
    other = np.where(first_is_own, ids[:, 1], ids[:, 0])
    sq_other = np.where(first_is_own, sq[:, 1], sq[:, 0]).astype(np.float64)
    sq_own = np.where(first_is_own, sq[:, 0], np.nan).astype(np.float64)
    missing = np.flatnonzero(~first_is_own)  # given labels: the own centroid may not be nearest
    for lo in range(0, len(missing), _BLOCK):
        rows = missing[lo:lo + _BLOCK]
        diff = _rows_f32(x, rows).astype(np.float64) - centroids[own[rows]]
        sq_own[rows] = np.einsum("rd,rd->r", diff, diff)
    c = centroids.astype(np.float64)
    gaps = np.sqrt(np.maximum(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1), 0.0))  # (P, P), P small
    gap = gaps[own, other]
    # Distance from the row to the hyperplane halfway between its centroid and the other one.
    boundary = np.where(gap > 0, (sq_other - sq_own) / (2 * np.maximum(gap, 1e-30)), 0.0)
    out = []
    for p in range(n_partitions):
        candidates = np.flatnonzero(other == p)
        quota = min(len(candidates), math.ceil(halo * sizes[p])) if sizes[p] else 0
        if quota < len(candidates):
            nearest = np.lexsort((candidates, boundary[candidates]))[:quota]
            candidates = np.sort(candidates[nearest])
        out.append(candidates.astype(np.int64))
    return tuple(out)


@dataclass(frozen=True)
class PartitionPlan:
    """Which rows each partition ranks (and, for ``neighbours="halo"``, its halo rows).

    Attributes:
        labels: int64 ``(n,)`` partition of every row.
        members: per partition, its row ids in ascending order.
        centroids: float32 ``(P, d)`` cell centres (k-means centroids, or the mean of each
            given partition); ``None`` for a single partition without halo.
        halos: per partition, the sorted ids of its halo rows (empty arrays when ``halo=0``).
    """

    labels: np.ndarray
    members: tuple
    centroids: np.ndarray | None
    halos: tuple

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_partitions(self) -> int:
        return len(self.members)

    @property
    def sizes(self) -> np.ndarray:
        """int64 ``(P,)`` rows per partition."""
        return np.array([len(m) for m in self.members], dtype=np.int64)

    def budgets(self, budget: int | None = None) -> np.ndarray:
        """Rows each partition selects at a total ``budget`` (default: all rows)."""
        return proportional_allocation(self.sizes, _check_budget(budget, self.n))


def plan_partitions(embeddings, n_partitions: int | None = None, *, partitions=None, halo: float = 0.0,
                    seed: int = 0, sample_size: int | None = None) -> PartitionPlan:
    """Partition the rows (k-means, or given labels) and find each partition's halo rows.

    Args:
        embeddings: ``(n, d)`` vectors.
        n_partitions: number of k-means cells, ``1 <= n_partitions <= n``. With ``partitions``
            given it may be left out (then ``max(partitions) + 1``).
        partitions: ``(n,)`` non-negative integer labels to use instead of k-means (e.g. a
            saved ``plan.labels``, or a field of the data); their cell centres are the means.
        halo: extra rows per own row for ``neighbours="halo"``: partition ``p`` gets at most
            ``ceil(halo·|p|)`` rows of other partitions whose second-nearest centre is ``p``,
            nearest to the boundary first. ``0`` = none.
        seed: k-means seed (:func:`partition_rows`).
        sample_size: k-means training rows.

    Returns:
        A :class:`PartitionPlan`.

    Raises:
        InvalidParameterError: ``n_partitions`` outside ``[1, n]``, negative ``halo``,
            ``partitions`` labels outside ``[0, n_partitions)``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], dtype=np.float32)
        >>> plan = plan_partitions(x, 2, seed=0)
        >>> plan.sizes.tolist(), plan.members[1].tolist()
        ([3, 3], [0, 1, 2])
    """
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    if n == 0:
        raise InvalidValuesError("embeddings is empty: there is nothing to partition.")
    halo = _check_halo(halo)
    seed = check_positive_int(seed, "seed", minimum=0)
    if sample_size is not None:
        sample_size = check_positive_int(sample_size, "sample_size")
    if partitions is None:
        if n_partitions is None:
            raise InvalidParameterError("n_partitions is required (or pass partitions= labels).")
        n_partitions = _check_n_partitions(n_partitions, n)
        labels, centroids, nearest = _partition(x, n_partitions, seed, sample_size)
    else:
        labels = np.asarray(partitions)
        if labels.shape != (n,) or (labels.size and labels.dtype.kind not in "iu"):
            raise InvalidParameterError(
                f"partitions must be ({n},) integer labels, got shape {labels.shape}, dtype {labels.dtype}.")
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise InvalidParameterError("partitions labels must be >= 0.")
        if n_partitions is None:
            n_partitions = int(labels.max()) + 1
        n_partitions = _check_n_partitions(n_partitions, n)
        if labels.max() >= n_partitions:
            raise InvalidParameterError(
                f"partitions holds label {labels.max()} but n_partitions={n_partitions}; labels must lie in "
                f"[0, n_partitions).")
        centroids = nearest = None
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=n_partitions).astype(np.int64)
    members = tuple(np.split(order, np.cumsum(sizes)[:-1]))
    halos = tuple(np.zeros(0, dtype=np.int64) for _ in range(n_partitions))
    if halo > 0 and n_partitions > 1:
        if centroids is None:
            centroids = np.zeros((n_partitions, x.shape[1]), dtype=np.float32)
            for p, rows in enumerate(members):
                for lo in range(0, len(rows), _BLOCK):
                    centroids[p] += _rows_f32(x, rows[lo:lo + _BLOCK]).sum(0, dtype=np.float64) / len(rows)
        halos = _halo_rows(x, labels, centroids, sizes, halo, nearest)
        logger.info("partitions: halo=%.3g adds %d rows in all (%.1f%% of n)", halo,
                    sum(len(h) for h in halos), 100 * sum(len(h) for h in halos) / n)
    return PartitionPlan(labels=labels, members=members, centroids=centroids, halos=halos)


# ---------------------------------------------------------------- one partition

@dataclass(frozen=True)
class PartitionResult:
    """One partition's D2 output, ready for :func:`merge_partitions`.

    Attributes:
        partition: the partition id (merging breaks ties in the budget split by it).
        rows: int64 sorted ids of the partition's own rows.
        order: int64 ids (global) of its picks, in pick order, as many as its budget.
        forward_scores: float32 ``(len(rows),)`` forward scores of ``rows``.
    """

    partition: int
    rows: np.ndarray
    order: np.ndarray
    forward_scores: np.ndarray


def _d2_with_context(node_scores, own_mask, source, target, dist, *, gamma_forward, gamma_reverse,
                     graph, squared, budget, context_competes):
    """D2 on a graph whose nodes are own rows and context rows that are never selected.

    Forward passing runs over every edge. Reverse passing: with ``context_competes`` (halo
    mode) the greedy runs over all nodes — a context row that comes out on top is not selected
    but lowers its neighbours, standing in for its own partition picking it, and own picks lower
    context rows — and the first ``budget`` own picks are kept; without it (global mode) the
    greedy runs on the edges among own rows only.

    Nodes are numbered in ascending global id, so CSR rows list neighbours in the same order as
    a graph over all rows would, and forward sums are computed in the same order.
    Returns (picks as indices into the own nodes, float64 forward scores of the own nodes).
    """
    n_nodes = len(node_scores)
    order = np.argsort(source, kind="stable")
    indptr, nbrs, dd = csr_adjacency(n_nodes, source[order], target[order], dist[order], graph)
    forward_all = _forward_csr(node_scores, indptr, nbrs, dd, gamma_forward, graph, squared)
    own = np.flatnonzero(own_mask)
    forward = forward_all[own]
    if context_competes:
        own_id = np.cumsum(own_mask) - 1
        if own_mask.all():
            picks = reverse_greedy(forward_all, indptr, nbrs, _kernel(dd, gamma_reverse, squared), budget)
        else:  # the greedy is O(M·k·log M), cheap next to the graph: run it to the end, keep own picks
            picks = reverse_greedy(forward_all, indptr, nbrs, _kernel(dd, gamma_reverse, squared), n_nodes)
            picks = picks[own_mask[picks]][:budget]
        return own_id[picks], forward
    own_id = np.full(n_nodes, -1, dtype=np.int64)
    own_id[own] = np.arange(len(own))
    row_of = np.repeat(np.arange(n_nodes), np.diff(indptr))
    keep = own_mask[row_of] & own_mask[nbrs]
    r_rows, r_nbrs, r_dist = own_id[row_of[keep]], own_id[nbrs[keep]], dd[keep]
    r_indptr = np.zeros(len(own) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r_rows, minlength=len(own)), out=r_indptr[1:])
    picks = reverse_greedy(forward, r_indptr, r_nbrs, _kernel(r_dist, gamma_reverse, squared), budget)
    return picks, forward


def _run_halo(s, x, rows, halo_rows, *, k, index, seed, **d2):
    from ..graph import knn_graph

    nodes = np.union1d(rows, halo_rows)
    own_mask = np.zeros(len(nodes), dtype=bool)
    own_mask[np.searchsorted(nodes, rows)] = True
    k_eff = min(k, len(nodes) - 1)
    indices, distances = knn_graph(_rows_f32(x, nodes), k_eff, index=index, seed=seed)
    source = np.repeat(np.arange(len(nodes), dtype=np.int64), k_eff)
    return _d2_with_context(s[nodes], own_mask, source, indices.ravel(), distances.ravel(),
                            context_competes=True, **d2)


def _run_global(s, rows, indices, distances, *, graph, **d2):
    n = len(s)
    member = np.zeros(n, dtype=bool)
    member[rows] = True
    kg = indices.shape[1]
    out_target = np.asarray(indices[rows], dtype=np.int64).ravel()
    out_dist = np.asarray(distances[rows], dtype=np.float64).ravel()
    out_source = np.repeat(rows, kg)
    sources, targets, dists = [out_source], [out_target], [out_dist]
    if graph == "symmetric":  # edges other partitions' rows draw to ours count as well
        for lo in range(0, n, _BLOCK):
            block = np.asarray(indices[lo:lo + _BLOCK], dtype=np.int64)
            hit = member[block] & ~member[lo:lo + _BLOCK, None]
            a, c = np.nonzero(hit)
            sources.append(a + lo)
            targets.append(block[a, c])
            dists.append(np.asarray(distances[lo:lo + _BLOCK], dtype=np.float64)[a, c])
    source, target, dist = np.concatenate(sources), np.concatenate(targets), np.concatenate(dists)
    nodes = np.union1d(rows, np.union1d(source, target))
    own_mask = member[nodes]
    source_l, target_l = np.searchsorted(nodes, source), np.searchsorted(nodes, target)
    return _d2_with_context(s[nodes], own_mask, source_l, target_l, dist, graph=graph, context_competes=False, **d2)


def run_partition(
    scores,
    embeddings,
    rows,
    *,
    neighbours: NeighbourMode = "local",
    halo_rows=None,
    global_graph: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 10,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 1.0,
    graph: str = "symmetric",
    squared: bool = False,
    budget: int | None = None,
    index: str = "auto",
    seed: int = 0,
    partition: int = 0,
) -> PartitionResult:
    """Rank one partition with D2; an independent unit of work for a process, rank or machine.

    Args:
        scores: ``(n,)`` scores of *all* rows (the worker reads its rows, and in ``"halo"`` and
            ``"global"`` modes its context rows).
        embeddings: ``(n, d)`` vectors of all rows (``np.memmap`` welcome: only the rows needed
            are read). Not used in ``"global"`` mode (may be ``None``).
        rows: the partition's own row ids (global).
        neighbours: ``"local"``, ``"halo"`` or ``"global"`` (module docstring).
        halo_rows: ``"halo"`` mode: ids of rows of other partitions that take part in the
            graph and the greedy but are never selected (``PartitionPlan.halos[p]``).
        global_graph: ``"global"`` mode: ``(indices, distances)``, the ``(n, k')`` kNN graph
            over all rows.
        k, gamma_forward, gamma_reverse, graph, squared, index, seed: as in
            :func:`hf_d2prune.selection.d2.d2_order`.
        budget: picks to make (the partition's share, ``PartitionPlan.budgets(N)[p]``);
            ``None`` = rank every own row.
        partition: this partition's id, stored in the result for :func:`merge_partitions`.

    Returns:
        :class:`PartitionResult`. With ``neighbours="local"`` the picks are exactly
        ``d2_order(scores[rows], embeddings[rows], ...)`` mapped to global ids.

    Raises:
        InvalidParameterError: unknown mode, missing ``halo_rows``/``global_graph``, bad D2
            parameters or budget. InvalidValuesError: bad ids, NaN, mismatched shapes.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
        >>> s = np.array([1.0, 0.9, 0.5, 0.4])
        >>> run_partition(s, x, [2, 3], k=1).order.tolist()
        [2, 3]
    """
    s = _check_scores(scores)
    n = len(s)
    neighbours, graph, k, gamma_forward, gamma_reverse, index = _check_d2_params(
        neighbours, graph, k, gamma_forward, gamma_reverse, index)
    rows = _check_rows(rows, n)
    m = len(rows)
    budget = _check_budget(budget, m)
    if neighbours == "global":
        if global_graph is None:
            raise InvalidParameterError("neighbours='global' needs global_graph=(indices, distances) over all rows.")
        indices, distances = _check_global_graph(global_graph, n)
    else:
        if embeddings is None:
            raise InvalidParameterError(f"neighbours={neighbours!r} needs embeddings=.")
        # Shape only: the rows read are checked for NaN/inf by d2_order / knn_graph.
        x = _check_embeddings(embeddings, n, finite=False)
    if neighbours == "halo":
        if halo_rows is None:
            raise InvalidParameterError("neighbours='halo' needs halo_rows= (PartitionPlan.halos[p]).")
        halo_rows = _check_rows(halo_rows, n, "halo_rows")
        if np.intersect1d(rows, halo_rows).size:
            raise InvalidValuesError("halo_rows overlaps rows: halo rows must belong to other partitions.")

    return _run_partition(s, None if neighbours == "global" else x, rows, neighbours=neighbours,
                          halo_rows=halo_rows, global_graph=(indices, distances) if neighbours == "global" else None,
                          k=k, gamma_forward=gamma_forward, gamma_reverse=gamma_reverse, graph=graph,
                          squared=squared, budget=budget, index=index, seed=seed, partition=partition)


def _run_partition(s, x, rows, *, neighbours, halo_rows, global_graph, k, gamma_forward, gamma_reverse, graph,
                   squared, budget, index, seed, partition) -> PartitionResult:
    """:func:`run_partition` on validated inputs (``d2_partitioned_order`` validates once for all
    partitions)."""
    m = len(rows)
    t = time.perf_counter()
    forward = np.zeros(0, dtype=np.float64)
    picks = np.zeros(0, dtype=np.int64)
    d2 = dict(gamma_forward=gamma_forward, gamma_reverse=gamma_reverse, squared=squared, budget=budget)
    if m == 0:
        pass
    elif neighbours == "local" or (neighbours == "halo" and len(halo_rows) == 0):  # same graph
        result = d2_order(s[rows], _rows_f32(x, rows), k=k, graph=graph, index=index, seed=seed, **d2)
        picks, forward = result.order, result.forward_scores
    elif neighbours == "halo":
        picks, forward = _run_halo(s, x, rows, halo_rows, k=k, index=index, seed=seed, graph=graph, **d2)
    else:
        picks, forward = _run_global(s, rows, *global_graph, graph=graph, **d2)
    logger.info("partition %d: %d rows%s, %d picks in %.2f s", partition, m,
                f" + {len(halo_rows)} halo" if neighbours == "halo" else "", len(picks), time.perf_counter() - t)
    return PartitionResult(partition=int(partition), rows=rows, order=rows[np.asarray(picks, dtype=np.int64)],
                           forward_scores=np.asarray(forward, dtype=np.float32))


# ---------------------------------------------------------------- merging and ranks

def merge_partitions(results: Sequence[PartitionResult], n: int) -> D2Result:
    """Merge per-partition results into one prefix-consistent D2 order over ``n`` rows.

    Partition ``g`` with ``s_g`` rows holds ``floor(N·s_g/n)`` or ``ceil(N·s_g/n)`` of the first
    ``N`` rows of the merged order, for every ``N`` up to its length, and those are its own
    first picks: ``order[:N]`` is the partitioned selection at budget ``N``. If every partition
    ran with ``PartitionPlan.budgets(B)``, the merged order has exactly ``B`` rows; if some
    order is shorter than its share, the merge stops at the first budget it cannot serve.

    Args:
        results: one :class:`PartitionResult` per non-empty partition, in any order (e.g.
            gathered from every rank); their ``rows`` must cover ``0..n-1`` exactly once.
        n: total number of rows.

    Returns:
        :class:`hf_d2prune.selection.d2.D2Result` over all ``n`` rows (rank ``-1`` = not
        picked within the budget).

    Raises:
        InvalidValuesError: repeated partitions, overlapping or missing rows.

    Example:
        >>> import numpy as np
        >>> a = PartitionResult(0, np.array([0, 1]), np.array([1, 0]), np.zeros(2, np.float32))
        >>> b = PartitionResult(1, np.array([2]), np.array([2]), np.zeros(1, np.float32))
        >>> merge_partitions([b, a], 3).order.tolist()
        [1, 0, 2]
    """
    n = check_positive_int(n, "n", minimum=0)
    results = sorted(results, key=lambda r: r.partition)
    ids = [r.partition for r in results]
    if len(set(ids)) != len(ids):
        raise InvalidValuesError("results holds the same partition twice; gather each partition once.")
    covered = np.zeros(n, dtype=np.int64)
    forward = np.full(n, np.nan, dtype=np.float32)
    for r in results:
        if len(r.rows) and (r.rows.min() < 0 or r.rows.max() >= n):
            raise InvalidValuesError(f"partition {r.partition} has row ids outside [0, {n}).")
        if len(r.forward_scores) != len(r.rows):
            raise InvalidValuesError(f"partition {r.partition}: forward_scores and rows differ in length.")
        covered[r.rows] += 1
        forward[r.rows] = r.forward_scores
    if (covered != 1).any():
        missing, twice = int((covered == 0).sum()), int((covered > 1).sum())
        raise InvalidValuesError(
            f"the partitions must cover every row once: {missing} rows are in no result and {twice} "
            f"in more than one. Gather the results of every partition (every rank).")
    order = interleave_proportional([r.order for r in results], [len(r.rows) for r in results])
    return D2Result(order=order, ranks=ranks_from_order(order, n), forward_scores=forward)


def partitions_for_rank(n_partitions: int, rank: int, world_size: int) -> list[int]:
    """Partitions handled by ``rank`` of ``world_size``: ``p`` with ``p % world_size == rank``.

    Example:
        >>> partitions_for_rank(5, 1, 2)
        [1, 3]
    """
    n_partitions = check_positive_int(n_partitions, "n_partitions")
    world_size = check_positive_int(world_size, "world_size")
    rank = check_positive_int(rank, "rank", minimum=0)
    if rank >= world_size:
        raise InvalidParameterError(f"rank must lie in [0, world_size) = [0, {world_size}), got {rank}.")
    return list(range(rank, n_partitions, world_size))


def run_partitions_for_rank(plan: PartitionPlan, scores, embeddings, *, rank: int, world_size: int,
                            neighbours: NeighbourMode = "local", global_graph=None, budget: int | None = None,
                            **d2_kwargs) -> list[PartitionResult]:
    """Run this rank's share of the partitions (``p % world_size == rank``), one after another.

    Gather the lists of every rank (e.g. ``accelerate.utils.gather_object``) and pass them to
    :func:`merge_partitions` (module docstring has the whole recipe).

    Args:
        plan: the same :class:`PartitionPlan` on every rank.
        scores, embeddings, neighbours, global_graph: as in :func:`run_partition`.
        rank, world_size: this process's rank and the number of processes.
        budget: total budget over all rows (``None`` = rank everything); each partition gets
            its proportional share.
        **d2_kwargs: ``k``, ``gamma_forward``, ``gamma_reverse``, ``graph``, ``squared``,
            ``index``, ``seed`` for :func:`run_partition`.

    Returns:
        The :class:`PartitionResult` of each non-empty partition of this rank.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
        >>> plan = plan_partitions(x, partitions=np.array([0, 0, 1, 1]))
        >>> s = np.array([1.0, 0.9, 0.5, 0.4])
        >>> parts = [r for rank in (0, 1) for r in run_partitions_for_rank(plan, s, x, rank=rank, world_size=2, k=1)]
        >>> merge_partitions(parts, n=4).order.tolist()
        [0, 2, 1, 3]
    """
    budgets = plan.budgets(budget)
    out = []
    for p in partitions_for_rank(plan.n_partitions, rank, world_size):
        if len(plan.members[p]) == 0:
            continue
        out.append(run_partition(scores, embeddings, plan.members[p], neighbours=neighbours,
                                 halo_rows=plan.halos[p] if neighbours == "halo" else None,
                                 global_graph=global_graph, budget=int(budgets[p]), partition=p, **d2_kwargs))
    return out


# ---------------------------------------------------------------- process pool

_WORKER: dict = {}


def _shared_folder(n_bytes: int) -> str:
    """A temporary folder for the shared arrays: RAM-backed /dev/shm when it has room."""
    shm = "/dev/shm"
    try:
        if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * n_bytes:
            return tempfile.mkdtemp(prefix="hf_d2prune_", dir=shm)
    except OSError:  # pragma: no cover
        pass
    return tempfile.mkdtemp(prefix="hf_d2prune_")


def _dump(array, folder: str, name: str) -> str:
    path = os.path.join(folder, f"{name}.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    for lo in range(0, array.shape[0], _BLOCK):
        out[lo:lo + _BLOCK] = array[lo:lo + _BLOCK]
    out.flush()
    del out
    return path


def _init_worker(paths: dict, scores: np.ndarray, threads: int) -> None:
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _WORKER.clear()
    _WORKER["scores"] = scores
    for name, path in paths.items():
        _WORKER[name] = np.load(path, mmap_mode="r")


def _worker_task(partition: int, rows: np.ndarray, halo_rows, budget: int, neighbours: str, params: dict):
    graph = (_WORKER["graph_indices"], _WORKER["graph_distances"]) if neighbours == "global" else None
    return _run_partition(_WORKER["scores"], _WORKER.get("embeddings"), rows, neighbours=neighbours,
                          halo_rows=halo_rows, global_graph=graph, budget=budget, partition=partition, **params)


def _run_pool(tasks, scores, x, global_graph, neighbours, params, num_proc, start_method):
    arrays = {}
    if neighbours == "global":
        arrays["graph_indices"], arrays["graph_distances"] = global_graph
    else:
        arrays["embeddings"] = x
    n_bytes = sum(a.nbytes for a in arrays.values())
    folder = _shared_folder(n_bytes)
    try:
        t = time.perf_counter()
        paths = {name: _dump(a, folder, name) for name, a in arrays.items()}
        logger.info("partitions: %.0f MiB shared through %s in %.1f s", n_bytes / 2**20, folder,
                    time.perf_counter() - t)
        threads = max(1, (os.cpu_count() or 1) // num_proc)
        context = multiprocessing.get_context(start_method)
        with ProcessPoolExecutor(max_workers=num_proc, mp_context=context, initializer=_init_worker,
                                 initargs=(paths, scores, threads)) as pool:
            futures = [pool.submit(_worker_task, p, rows, halo, budget, neighbours, params)
                       for p, rows, halo, budget in tasks]
            return [f.result() for f in futures]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- all in one call

def d2_partitioned_order(
    scores,
    embeddings,
    *,
    n_partitions: int | None = None,
    k: int = 10,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 1.0,
    graph: str = "symmetric",
    squared: bool = False,
    neighbours: NeighbourMode = "local",
    halo: float = 0.25,
    global_graph: tuple[np.ndarray, np.ndarray] | None = None,
    budget: int | None = None,
    index: str = "auto",
    seed: int = 0,
    num_proc: int = 1,
    partitions=None,
    sample_size: int | None = None,
    start_method: str = "spawn",
) -> D2Result:
    """Rank rows by D2 run inside k-means partitions, merged into one prefix-consistent order.

    Partition (:func:`plan_partitions`), run D2 in every partition with a budget proportional
    to its size (:func:`run_partition`, in ``num_proc`` processes), and merge
    (:func:`merge_partitions`). With ``n_partitions=1`` and ``neighbours="local"`` the result is
    exactly ``d2_order(scores, embeddings, ...)``.

    Args:
        scores: ``(n,)`` importance scores, higher = keep (as for ``d2_order``; scale them first
            if they can be negative).
        embeddings: ``(n, d)`` vectors (an ``np.memmap`` is read block by block).
        n_partitions: number of k-means cells, ``1 <= n_partitions <= n`` (may be left out when
            ``partitions`` is given).
        k, gamma_forward, gamma_reverse, graph, squared: D2 parameters, as in ``d2_order``.
        neighbours: ``"local"`` (graph inside each partition), ``"halo"`` (plus boundary rows of
            neighbouring partitions, which take part in both passes but are never selected) or
            ``"global"`` (one graph over all rows; cross-partition edges in forward passing
            only). Module docstring has details.
        halo: ``"halo"`` mode: at most ``ceil(halo·size)`` halo rows per partition.
        global_graph: ``"global"`` mode: a precomputed ``(indices, distances)`` graph over all
            rows; default: built with ``knn_graph(embeddings, k, index=index)``.
        budget: total picks (``None`` = rank every row); split over partitions in proportion
            to size. ``order`` is then exactly the first ``budget`` rows of the full order.
        index: kNN index for each partition's graph (``"auto"``: exact up to 50,000 rows).
        seed: k-means and kNN-index seed.
        num_proc: partitions run in this many processes (``1`` = in this process).
        partitions: ``(n,)`` integer labels to use instead of k-means.
        sample_size: k-means training rows (default ``256·n_partitions``).
        start_method: multiprocessing start method for ``num_proc > 1`` (``"spawn"`` or
            ``"forkserver"``; ``"fork"`` is unsafe once OpenMP threads have started).

    Returns:
        :class:`hf_d2prune.selection.d2.D2Result` over all ``n`` rows. The same inputs give the
        same order for any ``num_proc`` when the partitions' graphs are exact (``index="exact"``,
        or ``"auto"`` up to 50,000 rows per graph); an HNSW graph depends on the number of faiss
        threads that built it (``cpu_count // num_proc`` per worker).

    Raises:
        InvalidParameterError: ``n_partitions`` outside ``[1, n]``, unknown ``neighbours``,
            bad D2 parameters, budget, ``num_proc`` or ``halo``.
        InvalidValuesError: NaN/inf, mismatched lengths.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
        >>> d2_partitioned_order(np.array([1.0, 0.9, 0.5, 0.4]), x, n_partitions=2, k=1).order.tolist()
        [2, 0, 3, 1]
    """
    s = _check_scores(scores)
    n = len(s)
    if n == 0:
        raise InvalidValuesError("scores is empty; D2 needs at least one row.")
    x = _check_embeddings(embeddings, n)
    neighbours, graph, k, gamma_forward, gamma_reverse, index = _check_d2_params(
        neighbours, graph, k, gamma_forward, gamma_reverse, index)
    halo = _check_halo(halo)
    num_proc = check_positive_int(num_proc, "num_proc")
    seed = check_positive_int(seed, "seed", minimum=0)
    budget = _check_budget(budget, n)
    if partitions is None and n_partitions is None:
        raise InvalidParameterError("n_partitions is required (or pass partitions= labels).")
    if n_partitions is not None:
        n_partitions = _check_n_partitions(n_partitions, n)
    if start_method not in multiprocessing.get_all_start_methods():
        raise InvalidParameterError(
            f"start_method must be one of {multiprocessing.get_all_start_methods()}, got {start_method!r}.")
    if global_graph is not None:
        if neighbours != "global":
            raise InvalidParameterError("global_graph= is only used with neighbours='global'.")
        global_graph = _check_global_graph(global_graph, n)

    t0 = time.perf_counter()
    plan = plan_partitions(x, n_partitions, partitions=partitions, halo=halo if neighbours == "halo" else 0.0,
                           seed=seed, sample_size=sample_size)
    if neighbours == "global" and global_graph is None:
        from ..graph import knn_graph

        if n < 2:
            raise InvalidParameterError("neighbours='global' needs at least 2 rows for a kNN graph.")
        global_graph = knn_graph(np.asarray(x), min(k, n - 1), index=index, seed=seed)
    budgets = plan.budgets(budget)
    tasks = [(p, plan.members[p], plan.halos[p] if neighbours == "halo" else None, int(budgets[p]))
             for p in np.argsort(-plan.sizes, kind="stable") if len(plan.members[p])]  # largest first
    params = dict(k=k, gamma_forward=gamma_forward, gamma_reverse=gamma_reverse, graph=graph, squared=squared,
                  index=index, seed=seed)
    logger.info("partitioned D2: n=%d, %d partitions (sizes %d..%d), neighbours=%s, num_proc=%d", n,
                plan.n_partitions, plan.sizes.min(), plan.sizes.max(), neighbours, num_proc)
    workers = min(num_proc, len(tasks))
    if workers <= 1:
        results = [_run_partition(s, None if neighbours == "global" else x, rows, neighbours=neighbours,
                                  halo_rows=halo, global_graph=global_graph, budget=b, partition=int(p), **params)
                   for p, rows, halo, b in tasks]
    else:
        results = _run_pool([(int(p), rows, halo, b) for p, rows, halo, b in tasks], s, x, global_graph,
                            neighbours, params, workers, start_method)
    merged = merge_partitions(results, n)
    logger.info("partitioned D2: %d picks in %.1f s", len(merged.order), time.perf_counter() - t0)
    return merged
