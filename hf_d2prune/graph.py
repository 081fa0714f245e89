"""k-nearest-neighbour graphs over embeddings, through faiss.

The graph is the input of D2 pruning and of kNN score extrapolation: for every row, the ids of
its ``k`` nearest other rows and the Euclidean distances to them, as two ``(n, k)`` arrays.
Memory is O(n·k + index): queries run in blocks of rows, and the exact path never copies the
embeddings into an index (``faiss.knn`` reads the caller's array in place).

Indexes:

- ``"exact"``: brute force (``faiss.knn``), then the distances of the candidates are recomputed
  in float64 from the float32 vectors, so they equal a brute-force numpy computation to within
  float32 rounding of the result and ties are broken by the lowest id, deterministically.
- ``"hnsw"``: ``faiss.IndexHNSWFlat`` (graph index; fast, approximate).
- ``"ivf"``: ``faiss.IndexIVFFlat`` (k-means cells; deterministic under ``seed``).
- ``"auto"``: exact up to :data:`EXACT_MAX_ROWS` rows, HNSW above (see the constant for the
  measurement behind the threshold and the recall figure).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np

from .errors import InvalidParameterError, InvalidValuesError
from .validation import check_finite, check_positive_int, describe_rows

__all__ = ["knn_graph", "estimate_memory", "recall_at_k", "MemoryEstimate", "EXACT_MAX_ROWS"]

logger = logging.getLogger(__name__)

#: ``index="auto"`` searches exactly up to this many rows and with HNSW above. Measured on the
#: 2-core benchmark machine (benchmarks/RESULTS_selection.md, d=384, k=10): exact brute force
#: is O(n²·d) — 0.5 s at 10k rows, 11.5 s at 50k — while HNSW took 5.2 s at 50k; exact is kept
#: up to 50k because it is exact (and reproduces the reference) at a cost still in seconds.
EXACT_MAX_ROWS = 50_000

#: Extra candidates fetched by the exact path, so that re-ranking by the float64 distance can
#: repair neighbours whose order the float32 brute force got wrong at the k-th place.
_EXACT_MARGIN = 4

Metric = Literal["l2", "cosine"]
IndexKind = Literal["auto", "exact", "hnsw", "ivf"]


def _as_float32_matrix(embeddings, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 (n, d) array, copying at most once."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise InvalidValuesError(
            f"{name} must be a 2-D array (rows, dimensions), got shape {x.shape}; "
            f"stack the vectors into one matrix first."
        )
    if x.dtype.kind not in "fiu":
        raise InvalidValuesError(f"{name} must hold numbers, got dtype {x.dtype}.")
    check_finite(x, name)
    return np.ascontiguousarray(x, dtype=np.float32)


def _normalise_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise InvalidValuesError(
            f"{name} has all-zero vectors in {describe_rows(zero)}; cosine distance is undefined "
            f"for them: drop those rows or use metric='l2'."
        )
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _resolve_index(index: str, n: int) -> str:
    if index not in ("auto", "exact", "hnsw", "ivf"):
        raise InvalidParameterError(f"index must be 'auto', 'exact', 'hnsw' or 'ivf', got {index!r}.")
    if index == "auto":
        return "exact" if n <= EXACT_MAX_ROWS else "hnsw"
    return index


def _default_nlist(n: int) -> int:
    # ~4·sqrt(n) cells is faiss's usual advice; at least one cell per 39 training points.
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def knn_graph(
    embeddings,
    k: int,
    *,
    metric: Metric = "l2",
    index: IndexKind = "auto",
    block_size: int = 4096,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` nearest other rows of every row.

    Args:
        embeddings: (n, d) array of vectors. float32 C-contiguous arrays are used in place;
            other dtypes/layouts are converted with one copy.
        k: neighbours per row, ``1 <= k <= n - 1``.
        metric: ``"l2"`` (Euclidean distance) or ``"cosine"``: the Euclidean distance between the
            L2-normalised vectors, ``sqrt(2 - 2·cos)`` — monotone in cosine similarity and a
            true metric, so D2's kernel ``exp(-γ·d)`` keeps its meaning.
        index: ``"exact"``, ``"hnsw"``, ``"ivf"`` or ``"auto"`` (exact up to
            :data:`EXACT_MAX_ROWS` rows, HNSW above).
        block_size: rows queried per faiss call; bounds the temporary memory.
        hnsw_m: HNSW links per node (memory ``n·hnsw_m·8`` bytes).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search beam width; default ``max(64, 2·(k+1))``.
        nlist: IVF cells; default ``4·sqrt(n)``.
        nprobe: IVF cells visited per query; default ``max(16, nlist // 4)``.
        seed: seeds the IVF training sample and k-means. (HNSW construction with more than one
            faiss thread may differ between runs in a few neighbours; call
            ``faiss.omp_set_num_threads(1)`` for bit-identical approximate graphs.)
        progress: show a tqdm progress bar over query blocks.

    Returns:
        ``(indices, distances)``: int64 ``(n, k)`` neighbour ids, nearest first, never the row
        itself; float32 ``(n, k)`` Euclidean distances (not squared), ascending. Self is removed
        by id, not by position: with exact duplicates the row's own id may come second, and if
        it is not among the ``k + 1`` candidates at all the farthest candidate is dropped.

    Raises:
        InvalidParameterError: ``k`` outside ``[1, n - 1]``, unknown ``metric``/``index``.
        InvalidValuesError: non-2-D input, NaN/inf (naming the rows), zero vectors with cosine.

    Example:
        >>> import numpy as np
        >>> from hf_d2prune.graph import knn_graph
        >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
        >>> idx, dist = knn_graph(x, k=1)
        >>> idx.ravel().tolist(), dist.ravel().tolist()
        ([1, 0, 0], [1.0, 1.0, 2.0])
    """
    import faiss

    if metric not in ("l2", "cosine"):
        raise InvalidParameterError(f"metric must be 'l2' or 'cosine', got {metric!r}.")
    x = _as_float32_matrix(embeddings)
    n, d = x.shape
    k = check_positive_int(k, "k")
    if k > n - 1:
        raise InvalidParameterError(
            f"k={k} needs at least k + 1 rows, but there are n={n}; use k <= {max(n - 1, 0)}."
        )
    block_size = check_positive_int(block_size, "block_size")
    kind = _resolve_index(index, n)
    if metric == "cosine":
        x = _normalise_rows(x, "embeddings")

    logger.info("kNN graph: n=%d d=%d k=%d metric=%s index=%s", n, d, k, metric, kind)
    if kind == "exact":
        search = _exact_searcher(x, k)
    else:
        search = _approximate_searcher(
            x, k, kind, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
            nlist=nlist, nprobe=nprobe, seed=seed,
        )

    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    starts = range(0, n, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"kNN graph ({kind}, k={k})", unit="block")
    for start in starts:
        stop = min(start + block_size, n)
        ids, dist = search(start, stop)
        ids, dist = _drop_self(ids, dist, np.arange(start, stop), k)
        indices[start:stop] = ids
        distances[start:stop] = dist
    return indices, distances


def _exact_searcher(x: np.ndarray, k: int):
    import faiss

    n = x.shape[0]
    candidates = min(k + 1 + _EXACT_MARGIN, n)

    def search(start: int, stop: int):
        _, ids = faiss.knn(x[start:stop], x, candidates)
        # Re-rank the candidates by float64 distance: faiss's float32 ‖a‖²+‖b‖²−2a·b loses
        # ~1e-7 absolute, enough to swap near-equal neighbours and to make duplicates non-zero.
        dist = np.empty(ids.shape, dtype=np.float64)
        for lo in range(0, stop - start, 512):  # bounds the (rows, candidates, d) gather
            hi = min(lo + 512, stop - start)
            diff = x[ids[lo:hi]].astype(np.float64) - x[start + lo:start + hi, None, :]
            dist[lo:hi] = np.sqrt(np.einsum("rcd,rcd->rc", diff, diff))
        order = np.lexsort((ids, dist), axis=-1)  # distance, then lowest id among ties
        return np.take_along_axis(ids, order, -1), np.take_along_axis(dist, order, -1)

    return search


def _approximate_searcher(x, k, kind, *, hnsw_m, ef_construction, ef_search, nlist, nprobe, seed):
    import faiss

    n, d = x.shape
    if kind == "hnsw":
        idx = faiss.IndexHNSWFlat(d, check_positive_int(hnsw_m, "hnsw_m"))
        idx.hnsw.efConstruction = check_positive_int(ef_construction, "ef_construction")
        idx.add(x)
        ef = ef_search if ef_search is not None else max(64, 2 * (k + 1))
        idx.hnsw.efSearch = max(check_positive_int(ef, "ef_search"), k + 1)
    else:
        cells = check_positive_int(nlist, "nlist") if nlist is not None else _default_nlist(n)
        quantizer = faiss.IndexFlatL2(d)
        idx = faiss.IndexIVFFlat(quantizer, d, cells)
        idx.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        train_rows = min(n, max(cells * 64, 10_000))
        sample = x[np.sort(rng.choice(n, size=train_rows, replace=False))] if train_rows < n else x
        idx.train(sample)
        idx.add(x)
        probe = nprobe if nprobe is not None else max(16, cells // 4)
        idx.nprobe = min(check_positive_int(probe, "nprobe"), cells)

    def search(start: int, stop: int):
        sq, ids = idx.search(x[start:stop], k + 1)
        missing = ids < 0
        if missing.any():
            # The approximate index found fewer than k+1 results for some rows: answer those
            # rows by brute force rather than return holes.
            rows = np.flatnonzero(missing.any(axis=1))
            sq_fix, ids_fix = faiss.knn(x[start:stop][rows], x, k + 1)
            sq[rows], ids[rows] = sq_fix, ids_fix
        return ids, np.sqrt(np.maximum(sq, 0.0))

    return search


def _drop_self(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray, k: int):
    """Keep the first ``k`` candidates of each row that are not the row itself."""
    keep = ids != rows[:, None]
    no_self = keep.all(axis=1)
    # Rows whose own id was crowded out (many duplicates at distance 0): drop the farthest.
    keep[no_self, -1] = False
    keep &= np.cumsum(keep, axis=1) <= k
    out_ids = ids[keep].reshape(len(rows), k)
    out_dist = dist[keep].reshape(len(rows), k).astype(np.float32)
    return out_ids.astype(np.int64, copy=False), out_dist


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Mean fraction of each row's exact ``k`` neighbours that the approximate graph found.

    Args:
        approx_indices: (m, k) neighbour ids from an approximate search.
        exact_indices: (m, k) neighbour ids of the same rows from an exact search.

    Returns:
        recall@k in [0, 1].

    Raises:
        InvalidValuesError: the two arrays have different shapes.

    Example:
        >>> import numpy as np
        >>> recall_at_k(np.array([[1, 2], [0, 3]]), np.array([[2, 1], [0, 2]]))
        0.75
    """
    a, e = np.asarray(approx_indices), np.asarray(exact_indices)
    if a.shape != e.shape or a.ndim != 2:
        raise InvalidValuesError(
            f"approx_indices {a.shape} and exact_indices {e.shape} must be (rows, k) of equal shape."
        )
    hits = 0
    for start in range(0, a.shape[0], 4096):
        blk_a, blk_e = a[start:start + 4096], e[start:start + 4096]
        hits += int((blk_a[:, :, None] == blk_e[:, None, :]).any(axis=2).sum())
    return hits / a.size if a.size else 1.0


class MemoryEstimate(dict):
    """Byte counts of a kNN-graph run (keys: embeddings, conversion, index, graph, buffers,
    total); ``str()`` gives a readable summary."""

    def __str__(self) -> str:
        parts = ", ".join(f"{key} {_human(value)}" for key, value in self.items() if key != "total")
        return f"~{_human(self['total'])} peak ({parts})"


def _human(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"  # pragma: no cover


def estimate_memory(
    n: int,
    d: int,
    k: int = 10,
    *,
    index: IndexKind = "auto",
    dtype: str = "float32",
    hnsw_m: int = 32,
    block_size: int = 4096,
) -> MemoryEstimate:
    """Estimate the memory :func:`knn_graph` will need, before starting it.

    Args:
        n: rows. d: dimensions. k: neighbours per row.
        index: as in :func:`knn_graph`.
        dtype: dtype of the embeddings the caller holds; anything but float32 costs one
            float32 copy.
        hnsw_m: as in :func:`knn_graph`.
        block_size: as in :func:`knn_graph`.

    Returns:
        A :class:`MemoryEstimate` (a dict of byte counts) with keys ``embeddings``,
        ``conversion``, ``index``, ``graph``, ``buffers`` and ``total``.

    Raises:
        InvalidParameterError: non-positive sizes or an unknown index.

    Example:
        >>> est = estimate_memory(1_000_000, 384, k=10)
        >>> round(est["total"] / 2**30, 1)
        3.2
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    k = check_positive_int(k, "k")
    kind = _resolve_index(index, n)
    itemsize = np.dtype(dtype).itemsize
    embeddings = n * d * itemsize
    conversion = 0 if np.dtype(dtype) == np.float32 else n * d * 4
    if kind == "exact":
        idx = 0
        candidates = k + 1 + _EXACT_MARGIN
        # candidate gather in float32 + float64, faiss's block of query×base distances
        buffers = 512 * candidates * d * (4 + 8) + block_size * (candidates * 24 + 1024 * 4 * 2)
    elif kind == "hnsw":
        # float32 copy of the vectors + level-0 links (2·M int32) + upper levels (~1/M of nodes)
        idx = n * d * 4 + int(n * hnsw_m * 2 * 4 * (1 + 1 / hnsw_m)) + n * 16
        buffers = block_size * (k + 1) * 12
    else:
        idx = n * d * 4 + n * 8 + _default_nlist(n) * d * 4
        buffers = block_size * (k + 1) * 12
    graph = n * k * (8 + 4)
    total = embeddings + conversion + idx + graph + buffers
    return MemoryEstimate(
        embeddings=embeddings, conversion=conversion, index=idx, graph=graph, buffers=buffers, total=total
    )
