"""D2 Pruning: message passing over a kNN graph, then a diversity-aware greedy.

Maharana, Yadav & Bansal, "D2 Pruning: Message Passing for Balancing Diversity and Difficulty
in Data Pruning", ICLR 2024. Semantics follow the authors' published code
(adymaharana/d2pruning, ``GraphDensitySampler``), reproduced on their outputs in
``tests/data/d2_reference``:

1. Graph: the ``k`` nearest other rows of each row, Euclidean distance ``d`` (not squared).
   ``graph="symmetric"``: i~j when either is among the other's ``k`` nearest (each undirected
   edge once); ``graph="directed"``: each row's out-neighbours only.
2. Forward: ``s'_i = s_i + Σ_{j~i} exp(-γ_f·d_ij)·max(s_j, 1e-7)`` (symmetric; directed uses
   ``s_j`` unclamped). A row's own score is never clamped, so negative scores lower their own
   row but cannot push a neighbour below ``1e-7``-weight support in the symmetric graph.
3. Reverse: repeatedly take the unselected row with the largest ``s'`` (lowest id among ties),
   then ``s'_j -= exp(-γ_r·d_ij)·s'_pick`` for its neighbours (symmetric: every adjacent row;
   directed: the pick's out-neighbours, as the reference's large-scale path does).

``labels`` runs D2 inside each class with equal budgets; ``strata`` inside equal-width score strata with
CCS's equal budgets (the authors' experiments run D2 so, after CCS's hard cutoff).

``squared=True`` uses ``d²`` in both kernels (the paper's RBF kernel). Kernel weights and
messages are float32 and running scores float64, as in the reference; the reverse step is an
exact heap greedy (:mod:`._greedy`), O(n·k·log n).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import check_finite, check_positive_int
from ._budget import equal_allocation, interleave_by_allocation, score_strata, split_rows
from ._csr import csr_adjacency as _csr
from ._cutoff import hard_cutoff_rows
from ._greedy import reverse_greedy
from ._result import Selection, ranks_from_order

__all__ = ["D2Result", "d2_forward", "d2_reverse_order", "d2_order", "d2_adjacency"]

logger = logging.getLogger(__name__)

#: Floor on a neighbour's score in the symmetric forward pass (the reference's ``epsilon``).
SCORE_FLOOR = 1e-7

GraphKind = Literal["symmetric", "directed"]


@dataclass(frozen=True)
class D2Result(Selection):
    """Output of :func:`d2_order`.

    Attributes:
        order: int64 selection order (see :class:`Selection`); hard-cut rows and rows beyond
            ``budget`` are absent.
        ranks: int64 ``(n,)``, 0 = first pick, -1 = never picked.
        forward_scores: float32 ``(n,)`` scores after forward message passing; NaN for hard-cut
            rows (they are not in any graph). In class-wise or stratified mode each row's value
            comes from its own group's graph (its class's, or its stratum's).
    """

    forward_scores: np.ndarray = None  # type: ignore[assignment]


def _check_graph_kind(graph: str) -> str:
    if graph not in ("symmetric", "directed"):
        raise InvalidParameterError(f"graph must be 'symmetric' or 'directed', got {graph!r}.")
    return graph


def _check_gamma(gamma: float, name: str) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) \
            or not np.isfinite(gamma) or gamma < 0:
        raise InvalidParameterError(f"{name} must be a finite number >= 0, got {gamma!r}.")
    return float(gamma)


def _check_neighbours(indices, distances, n: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices)
    distances = np.asarray(distances)
    if indices.ndim != 2 or distances.shape != indices.shape or indices.shape[0] != n:
        raise InvalidValuesError(
            f"neighbors must be (indices, distances) of equal shape ({n}, k); got "
            f"{indices.shape} and {distances.shape}. Build them with hf_d2prune.graph.knn_graph."
        )
    if indices.dtype.kind not in "iu":
        raise InvalidValuesError(f"neighbor indices must be integers, got dtype {indices.dtype}.")
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise InvalidValuesError(f"neighbor indices must lie in [0, {n}); found {indices.min()}..{indices.max()}.")
    if (indices == np.arange(n)[:, None]).any():
        raise InvalidValuesError("neighbor indices contain a row's own id; exclude self (knn_graph does).")
    check_finite(distances, "neighbor distances")
    if (distances < 0).any():
        raise InvalidValuesError("neighbor distances must be >= 0 (Euclidean, not squared similarities).")
    return indices.astype(np.int64, copy=False), distances


def _edges(indices: np.ndarray, distances: np.ndarray):
    """kNN matrices -> flat (source, target, distance) edge arrays."""
    n, k = indices.shape
    return np.repeat(np.arange(n, dtype=np.int64), k), indices.ravel(), distances.ravel().astype(np.float32)


def d2_adjacency(indices, distances, *, graph: GraphKind = "symmetric"):
    """Return the CSR adjacency ``(indptr, neighbours, distances)`` D2 walks on.

    Args:
        indices, distances: ``(n, k)`` kNN graph (self excluded), e.g. from ``knn_graph``.
        graph: ``"symmetric"`` (union of both directions) or ``"directed"`` (out-neighbours).

    Returns:
        int64 ``indptr`` (n+1,), int64 neighbour ids, float32 distances; row ``i``'s neighbours
        are ``neighbours[indptr[i]:indptr[i+1]]``, in ascending id order.
    """
    _check_graph_kind(graph)
    indices, distances = _check_neighbours(indices, distances, np.asarray(indices).shape[0])
    return _csr(indices.shape[0], *_edges(indices, distances), graph)


def _kernel(dist: np.ndarray, gamma: float, squared: bool) -> np.ndarray:
    # Kernel weights and messages are float32, sums and running scores float64: the authors'
    # code mixes the two exactly this way, and on real embeddings near-equal scores are common
    # enough that only this reproduces their selection order (tests/data/d2_reference).
    d = dist.astype(np.float32)
    return np.exp(-np.float32(gamma) * (d * d if squared else d))


def _forward_csr(scores: np.ndarray, indptr, neighbours, dist, gamma, graph, squared) -> np.ndarray:
    s32 = scores.astype(np.float32)
    support = np.maximum(s32, np.float32(SCORE_FLOOR)) if graph == "symmetric" else s32
    contribution = _kernel(dist, gamma, squared) * support[neighbours]
    rows = np.repeat(np.arange(len(scores)), np.diff(indptr))
    return scores + np.bincount(rows, weights=contribution.astype(np.float64), minlength=len(scores))


def _check_scores(scores, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise InvalidValuesError(f"{name} must be 1-D (one number per row), got shape {s.shape}.")
    if s.dtype.kind not in "fiub":
        raise InvalidValuesError(f"{name} must be numbers, got dtype {s.dtype}.")
    check_finite(s, name)
    return s.astype(np.float64)


def d2_forward(scores, indices, distances, *, gamma: float = 1.0, graph: GraphKind = "symmetric",
               squared: bool = False) -> np.ndarray:
    """Forward message passing: each row gains its neighbours' kernel-weighted scores.

    Args:
        scores: ``(n,)`` importance scores, higher = keep.
        indices, distances: ``(n, k)`` kNN graph (self excluded), e.g. from ``knn_graph``.
        gamma: γ_f in ``exp(-γ_f·d)``.
        graph: ``"symmetric"`` or ``"directed"`` (module docstring).
        squared: use ``d²`` in the kernel.

    Returns:
        float64 ``(n,)`` forward scores ``s'``.

    Raises:
        InvalidParameterError: bad ``gamma``/``graph``. InvalidValuesError: bad shapes, NaN.

    Example:
        >>> import numpy as np
        >>> d2_forward(np.array([1.0, 2.0]), np.array([[1], [0]]), np.array([[0.0], [0.0]])).tolist()
        [3.0, 3.0]
    """
    s = _check_scores(scores)
    _check_graph_kind(graph)
    gamma = _check_gamma(gamma, "gamma")
    indices, distances = _check_neighbours(indices, distances, len(s))
    return _forward_csr(s, *_csr(len(s), *_edges(indices, distances), graph), gamma, graph, squared)


def d2_reverse_order(forward_scores, indices, distances, *, gamma: float = 1.0,
                     graph: GraphKind = "symmetric", squared: bool = False,
                     budget: int | None = None) -> np.ndarray:
    """Reverse message passing: the D2 greedy selection order.

    Args:
        forward_scores: ``(n,)`` output of :func:`d2_forward`.
        indices, distances: the same ``(n, k)`` kNN graph.
        gamma: γ_r in ``exp(-γ_r·d)``.
        graph: ``"symmetric"`` (update every adjacent row) or ``"directed"`` (out-neighbours).
        squared: use ``d²`` in the kernel.
        budget: stop after this many picks; ``None`` = order all ``n`` rows.

    Returns:
        int64 row ids in pick order.

    Example:
        >>> import numpy as np
        >>> d2_reverse_order(np.array([3.0, 2.9, 1.0]), np.array([[1], [0], [0]]),
        ...                  np.array([[0.0], [0.0], [5.0]])).tolist()
        [0, 2, 1]
    """
    s = _check_scores(forward_scores, "forward_scores")
    _check_graph_kind(graph)
    gamma = _check_gamma(gamma, "gamma")
    indices, distances = _check_neighbours(indices, distances, len(s))
    budget = _check_budget(budget, len(s))
    indptr, neighbours, dist = _csr(len(s), *_edges(indices, distances), graph)
    return reverse_greedy(s, indptr, neighbours, _kernel(dist, gamma, squared), budget)


def _check_budget(budget, available: int) -> int:
    if budget is None:
        return available
    budget = check_positive_int(budget, "budget", minimum=0)
    if budget > available:
        raise InvalidParameterError(
            f"budget={budget} exceeds the {available} rows that can be selected "
            f"(after any hard cutoff); lower budget or hard_cutoff."
        )
    return budget


def _d2_block(scores, rows, embeddings, neighbours, *, k, gamma_forward, gamma_reverse, graph, squared,
              budget, index, seed):
    """D2 on the subset ``rows``; returns (order in original ids, forward scores of ``rows``)."""
    m = len(rows)
    s = scores[rows]
    if m == 1:  # no neighbours to pass messages to: the row is taken as it is
        return rows[:budget], s
    if neighbours is not None:
        indices, distances = neighbours
        # Keep only edges inside ``rows`` and renumber them (hard cutoff removed the others).
        local = np.full(indices.shape[0], -1, dtype=np.int64)
        local[rows] = np.arange(m)
        sub_idx, sub_dist = indices[rows], distances[rows]
        target = local[sub_idx.ravel()]
        source = np.repeat(np.arange(m, dtype=np.int64), sub_idx.shape[1])
        keep = target >= 0
        edges = source[keep], target[keep], sub_dist.ravel()[keep].astype(np.float32)
    else:
        from ..graph import knn_graph

        k_eff = min(k, m - 1)
        if k_eff < k:
            logger.info("D2: k=%d clamped to %d for a group of %d rows", k, k_eff, m)
        indices, distances = knn_graph(embeddings.subset(rows), k_eff, index=index, seed=seed)
        edges = _edges(indices, distances)
        del indices, distances
    t0 = time.perf_counter()
    indptr, nbrs, dist = _csr(m, *edges, graph)
    del edges
    forward = _forward_csr(s, indptr, nbrs, dist, gamma_forward, graph, squared)
    t1 = time.perf_counter()
    picks = reverse_greedy(forward, indptr, nbrs, _kernel(dist, gamma_reverse, squared), budget)
    logger.info("D2 on %d rows: forward %.2f s (with the adjacency), reverse %.2f s, %d picks",
                m, t1 - t0, time.perf_counter() - t1, len(picks))
    return rows[picks], forward


def _equal_groups(members: list, budget: int, select) -> np.ndarray:
    """Split ``budget`` equally over the groups ``members`` (:func:`equal_allocation`), fill each
    with ``select(rows, quota)`` and merge so that every prefix is the allocation at its budget.
    Empty groups are skipped."""
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    quota = equal_allocation(sizes, budget)
    orders = [select(m, int(q)) if len(m) else m for m, q in zip(members, quota)]
    return interleave_by_allocation(orders, sizes)[:budget]


def d2_order(
    scores,
    embeddings=None,
    *,
    neighbors: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 10,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 1.0,
    graph: GraphKind = "symmetric",
    squared: bool = False,
    labels=None,
    strata: int | None = None,
    hard_cutoff: float = 0.0,
    cutoff_scores=None,
    budget: int | None = None,
    index: str = "exact",
    seed: int = 0,
) -> D2Result:
    """Rank rows by D2 pruning: graph, forward and reverse message passing, in one call.

    Args:
        scores: ``(n,)`` importance scores, higher = keep (flip harder/easier before calling).
            Constant scores give pure diversity (coverage) selection.
        embeddings: ``(n, d)`` vectors the kNN graph is built on (exact search by default, so
            results match the reference), as one array or a list of row blocks read in place
            (see :class:`hf_d2prune.graph.RowBlocks`). Not needed when ``neighbors`` is given.
        neighbors: precomputed ``(indices, distances)`` ``(n, k')`` graph over all ``n`` rows
            (self excluded); used as is (``k`` is ignored). Not combinable with ``labels``.
        k: neighbours per row; clamped to ``group size - 1`` for small groups.
        gamma_forward, gamma_reverse: kernel widths γ_f, γ_r in ``exp(-γ·d)``.
        graph: ``"symmetric"`` (default, the reference's dense path) or ``"directed"``.
        squared: use ``d²`` in the kernels (the paper's formula); default ``False`` (the code's).
        labels: ``(n,)`` class labels for class-wise D2: the budget is split equally over the
            classes (smallest first, ``min(size, remaining // classes_left)``) and D2 runs inside
            each class on that class's own kNN graph; a one-row class is taken whole. The
            returned order is prefix-consistent: ``order[:N]`` is the class-wise selection at
            budget ``N`` for every ``N`` (see :mod:`._budget`).
        strata: stratified D2, as in the authors' experiments (their ``stratified`` mode with
            graph sampling): split the rows (inside each class, with ``labels``) into this many
            equal-width strata of ``scores`` (CCS's bins, after the hard cutoff), give the strata
            equal budgets the CCS way, and run D2 inside each stratum on its own kNN graph. Every
            difficulty level keeps a share of the coreset and D2 spreads it out within the level.
            ``None`` (default): one graph over all rows (per class).
        hard_cutoff: fraction β of rows dropped first (CCS): ``int(β·n)`` rows with the lowest
            ``cutoff_scores`` (ties: lowest id), or, without ``cutoff_scores``, the highest
            ``scores``. They get rank -1 and the graph is built on the remaining rows.
        cutoff_scores: ``(n,)`` score for the cutoff, low = drop (e.g. AUM).
        budget: stop after this many picks (``None`` = rank every remaining row). Ranks stay
            prefix-consistent up to ``budget``.
        index: kNN index for :func:`hf_d2prune.graph.knn_graph` (``"exact"`` by default).
        seed: passed to the kNN index (approximate indexes only; D2 itself is deterministic).

    Returns:
        :class:`D2Result` with ``order``, ``ranks`` and ``forward_scores``.

    Raises:
        InvalidParameterError: bad ``k``, γ, ``graph``, ``budget``, ``hard_cutoff``, ``strata``,
            or ``neighbors`` with ``labels`` or ``strata``.
        InvalidValuesError: NaN/inf, mismatched lengths, malformed ``neighbors``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
        >>> d2_order(np.array([1.0, 0.9, 0.5, 0.4]), x, k=1).order.tolist()
        [0, 2, 1, 3]
    """
    s = _check_scores(scores)
    n = len(s)
    if n == 0:
        raise InvalidValuesError("scores is empty; D2 needs at least one row.")
    _check_graph_kind(graph)
    gamma_forward = _check_gamma(gamma_forward, "gamma_forward")
    gamma_reverse = _check_gamma(gamma_reverse, "gamma_reverse")
    if strata is not None:
        strata = check_positive_int(strata, "strata")
    if neighbors is None:
        k = check_positive_int(k, "k")
        if embeddings is None:
            raise InvalidParameterError("d2_order needs embeddings= (to build the kNN graph) or neighbors=.")
        from ..graph import RowBlocks

        embeddings = RowBlocks.of(embeddings)
        if len(embeddings) != n:
            raise InvalidValuesError(f"embeddings has {len(embeddings)} rows but scores has {n}.")
        embeddings.check_finite()
    else:
        if labels is not None or strata is not None:
            raise InvalidParameterError(
                "neighbors= cannot be combined with labels= or strata=: class-wise and stratified D2 "
                "build one graph per group; pass embeddings= instead."
            )
        neighbors = _check_neighbours(neighbors[0], neighbors[1], n)

    cut = hard_cutoff_rows(n, hard_cutoff, cutoff_scores, scores=s)
    alive = np.ones(n, dtype=bool)
    alive[cut] = False
    rows = np.flatnonzero(alive)
    budget = _check_budget(budget, len(rows))
    forward = np.full(n, np.nan, dtype=np.float64)
    common = dict(k=k, gamma_forward=gamma_forward, gamma_reverse=gamma_reverse, graph=graph,
                  squared=squared, index=index, seed=seed)

    def d2_in(group: np.ndarray, quota: int, graph_of_all=None) -> np.ndarray:
        order_g, forward[group] = _d2_block(s, group, embeddings, graph_of_all, budget=quota, **common)
        return order_g

    def stratified(group: np.ndarray, quota: int) -> np.ndarray:
        """D2 inside ``group``: on one graph, or on one graph per score stratum with equal budgets."""
        if strata is None:
            return d2_in(group, quota, neighbors)
        return _equal_groups(split_rows(group, score_strata(s[group], strata), strata), quota, d2_in)

    if labels is None:
        order = stratified(rows, budget)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise InvalidValuesError(f"labels must have shape ({n},), got {labels.shape}.")
        classes, inverse = np.unique(labels[rows], return_inverse=True)
        order = _equal_groups(split_rows(rows, inverse, len(classes)), budget, stratified)
    order = np.asarray(order, dtype=np.int64)
    return D2Result(order=order, ranks=ranks_from_order(order, n), forward_scores=forward.astype(np.float32))
