"""k-nearest-neighbour graphs over embeddings, through faiss.

The graph is the input of D2 pruning and of kNN score extrapolation: for every row, the ids of
its ``k`` nearest other rows and the Euclidean distances to them, as two ``(n, k)`` arrays.
Memory is O(n·k + index): queries run in blocks of rows; the embeddings are read in place, as
one array or as the row blocks of a memory-mapped Arrow column (:class:`RowBlocks`), and the
exact path never copies them into an index (``faiss.knn`` reads the caller's array). Every
path re-ranks its candidates by their exact distance, so the distances returned are exact.

Indexes:

- ``"exact"``: brute force (``faiss.knn``), then the distances of the candidates are recomputed
  in float64 from the float32 vectors, so they equal a brute-force numpy computation to within
  float32 rounding of the result and ties are broken by the lowest id, deterministically.
- ``"hnsw"``: ``faiss.IndexHNSWSQ`` storing float16 vectors (graph index; fast, approximate;
  ``storage=`` picks float32, float16 or 8-bit vectors).
- ``"ivf"``: ``faiss.IndexIVFFlat`` (k-means cells; deterministic under ``seed``).
- ``"auto"``: exact up to :data:`EXACT_MAX_ROWS` rows, HNSW above (see the constant for the
  measurement behind the threshold and the recall figure).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import numpy as np

from .distributed import show_progress
from .errors import InvalidParameterError, InvalidValuesError
from .validation import check_finite, check_positive_int, describe_rows, nonfinite_rows

__all__ = ["knn_graph", "estimate_memory", "recall_at_k", "MemoryEstimate", "RowBlocks", "EXACT_MAX_ROWS"]

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
Storage = Literal["fp16", "flat", "sq8"]
_STORAGES = ("fp16", "flat", "sq8")


def _as_float32_matrix(embeddings, name: str = "embeddings", *, check: bool = True) -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 (n, d) array, copying at most once
    (``check``: also raise on NaN/inf)."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise InvalidValuesError(
            f"{name} must be a 2-D array (rows, dimensions), got shape {x.shape}; "
            f"stack the vectors into one matrix first."
        )
    if x.dtype.kind not in "fiu":
        raise InvalidValuesError(f"{name} must hold numbers, got dtype {x.dtype}.")
    if check:
        check_finite(x, name)
    return np.ascontiguousarray(x, dtype=np.float32)


class RowBlocks:
    """An ``(n, d)`` matrix held as consecutive row blocks, read in place.

    A memory-mapped Arrow embedding column is a list of record batches; viewing each as a 2-D
    array costs nothing, while concatenating them would copy the whole matrix. ``RowBlocks``
    answers the three reads the graph code needs — a range of rows, rows by id, all of it —
    returning float32 and copying only what is asked for. Blocks may be float16 (as written by
    ``embed(dtype="float16")``); they are converted block by block, never as a whole.

    Args:
        blocks: 2-D numeric arrays with the same number of columns.
        name: how error messages call the matrix.

    Example:
        >>> import numpy as np
        >>> rb = RowBlocks([np.zeros((2, 3), np.float32), np.ones((1, 3), np.float16)])
        >>> rb.shape, rb.take(np.array([2, 0]))[:, 0].tolist()
        ((3, 3), [1.0, 0.0])
    """

    def __init__(self, blocks, name: str = "embeddings"):
        parts = []
        for block in blocks:
            b = np.asarray(block)
            if b.ndim != 2:
                raise InvalidValuesError(f"{name}: every row block must be 2-D, got shape {b.shape}.")
            if b.dtype.kind not in "fiu":
                raise InvalidValuesError(f"{name} must hold numbers, got dtype {b.dtype}.")
            if b.dtype not in (np.float32, np.float16) or not b.flags.c_contiguous:
                b = np.ascontiguousarray(b, dtype=np.float32)
            if len(b):
                parts.append(b)
        if not parts:
            raise InvalidValuesError(f"{name} has no rows.")
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise InvalidValuesError(f"{name}: row blocks have different widths {sorted(dims)}; all rows must come from the same model.")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.name = name
        self.shape = (int(self.offsets[-1]), parts[0].shape[1])
        self._finite = False  # set by a passing check_finite(); the blocks are not written to

    @classmethod
    def of(cls, embeddings, name: str = "embeddings") -> "RowBlocks":
        """Wrap an array (one block), a sequence of blocks, or return a ``RowBlocks`` as is."""
        if isinstance(embeddings, RowBlocks):
            return embeddings
        if isinstance(embeddings, (list, tuple)) and embeddings and all(
            isinstance(b, np.ndarray) and b.ndim == 2 for b in embeddings
        ):
            return cls(embeddings, name)
        if not _is_float_matrix(embeddings):  # values are checked by check_finite(), once
            embeddings = _as_float32_matrix(embeddings, name, check=False)
        return cls([embeddings], name)

    def __len__(self) -> int:
        return self.shape[0]

    def check_finite(self) -> None:
        """Raise :class:`InvalidValuesError` naming the rows that hold NaN or inf (one pass over
        the data; later calls on the same object, or on its subsets, return at once)."""
        if self._finite:
            return
        bad = [nonfinite_rows(part) + offset for offset, part in zip(self.offsets, self.parts)]
        bad = [rows for rows in bad if rows.size]
        if bad:
            raise InvalidValuesError(
                f"{self.name} holds NaN or inf in {describe_rows(np.concatenate(bad))}; "
                f"drop or fix those rows first (e.g. ds.filter) or recompute them."
            )
        self._finite = True

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as float32: a view when they lie in one float32 block."""
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        lo = start - self.offsets[first]
        if stop <= self.offsets[first + 1]:
            out = self.parts[first][lo:lo + stop - start]
            return out if out.dtype == np.float32 else out.astype(np.float32)
        return self.take(np.arange(start, stop))

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows by id (any shape of ids) as float32, shape ``ids.shape + (d,)``."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.ravel()
        d = self.shape[1]
        if len(self.parts) == 1:
            out = self.parts[0][flat]
            return (out if out.dtype == np.float32 else out.astype(np.float32)).reshape(ids.shape + (d,))
        out = np.empty((flat.size, d), dtype=np.float32)
        block = np.searchsorted(self.offsets, flat, side="right") - 1
        order = np.argsort(block, kind="stable")
        bounds = np.searchsorted(block[order], np.arange(len(self.parts) + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            sel = order[bounds[b]:bounds[b + 1]]
            out[sel] = self.parts[b][flat[sel] - self.offsets[b]]
        return out.reshape(ids.shape + (d,))

    def dense(self) -> np.ndarray:
        """The whole matrix as one float32 array (a view if it is one float32 block)."""
        if len(self.parts) == 1 and self.parts[0].dtype == np.float32:
            return self.parts[0]
        out = np.empty(self.shape, dtype=np.float32)
        for offset, part in zip(self.offsets, self.parts):
            out[offset:offset + len(part)] = part
        return out

    def subset(self, rows: np.ndarray) -> "RowBlocks":
        """The given rows (sorted ids) as a new one-block ``RowBlocks`` (a copy of those rows only);
        all rows in order return ``self`` without copying."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == len(self) and (len(rows) == 0 or (rows[0] == 0 and rows[-1] == len(self) - 1)):
            return self
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        for lo in range(0, len(rows), 65536):
            out[lo:lo + 65536] = self.take(rows[lo:lo + 65536])
        subset = RowBlocks([out], self.name)
        subset._finite = self._finite
        return subset


def _is_float_matrix(x) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype in (np.float32, np.float16) and x.flags.c_contiguous


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
    storage: Storage = "fp16",
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` nearest other rows of every row.

    Args:
        embeddings: (n, d) array of vectors, or a sequence of (n_i, d) row blocks (e.g. the
            record batches of a memory-mapped Arrow column, see
            :func:`hf_d2prune.arrays.embedding_blocks`), or a :class:`RowBlocks`. float32 and
            float16 blocks are read in place; the approximate indexes never hold a float32
            copy of the whole matrix. The exact index needs one contiguous float32 matrix
            (a view when the input is one float32 array).
        k: neighbours per row, ``1 <= k <= n - 1``.
        metric: ``"l2"`` (Euclidean distance) or ``"cosine"``: the Euclidean distance between the
            L2-normalised vectors, ``sqrt(2 - 2·cos)`` — monotone in cosine similarity and a
            true metric, so D2's kernel ``exp(-γ·d)`` keeps its meaning.
        index: ``"exact"``, ``"hnsw"``, ``"ivf"`` or ``"auto"`` (exact up to
            :data:`EXACT_MAX_ROWS` rows, HNSW above).
        block_size: rows queried per faiss call; bounds the temporary memory.
        hnsw_m: HNSW links per node (memory ``n·hnsw_m·8`` bytes).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search beam width; default ``max(48, 2·(k+5))`` (recall@10 0.994 at 200k
            rows, where 32 gives 0.987 for 0.75x the search time; recall falls slowly with n:
            "HNSW storage and search width" and "Scale" in benchmarks/RESULTS.md).
        storage: how the HNSW index stores the vectors it walks on: ``"fp16"`` (default, half
            the memory of ``"flat"`` float32, same speed and recall within 0.001 in
            benchmarks/RESULTS.md), ``"flat"`` or ``"sq8"`` (8-bit scalar quantiser, a quarter).
            Whatever the storage, the candidates are re-ranked by their exact distance, so the
            distances returned are exact and only which neighbours are found can differ.
        nlist: IVF cells; default ``4·sqrt(n)``.
        nprobe: IVF cells visited per query; default ``max(16, nlist // 4)``.
        seed: seeds the IVF training sample and k-means. (HNSW construction with more than one
            faiss thread may differ between runs in a few neighbours; call
            ``faiss.omp_set_num_threads(1)`` for bit-identical approximate graphs.)
        progress: show a tqdm progress bar over query blocks (not while ``datasets``' progress bars
            are disabled).

    Returns:
        ``(indices, distances)``: int64 ``(n, k)`` neighbour ids, nearest first, never the row
        itself; float32 ``(n, k)`` Euclidean distances (not squared), ascending. Self is removed
        by id, not by position: with exact duplicates the row's own id may come second, and if
        it is not among the candidates at all the farthest candidate is dropped.

    Raises:
        InvalidParameterError: ``k`` outside ``[1, n - 1]``, unknown ``metric``/``index``/``storage``.
        InvalidValuesError: non-2-D input, NaN/inf (naming the rows), zero vectors with cosine.

    Example:
        >>> import numpy as np
        >>> from hf_d2prune.graph import knn_graph
        >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
        >>> idx, dist = knn_graph(x, k=1)
        >>> idx.ravel().tolist(), dist.ravel().tolist()
        ([1, 0, 0], [1.0, 1.0, 2.0])
    """
    if metric not in ("l2", "cosine"):
        raise InvalidParameterError(f"metric must be 'l2' or 'cosine', got {metric!r}.")
    if storage not in _STORAGES:
        raise InvalidParameterError(f"storage must be one of {', '.join(_STORAGES)}, got {storage!r}.")
    src = RowBlocks.of(embeddings)
    n, d = src.shape
    k = check_positive_int(k, "k")
    if k > n - 1:
        raise InvalidParameterError(
            f"k={k} needs at least k + 1 rows, but there are n={n}; use k <= {max(n - 1, 0)}."
        )
    block_size = check_positive_int(block_size, "block_size")
    kind = _resolve_index(index, n)
    src.check_finite()
    if metric == "cosine":
        src = _normalised(src)

    logger.info("kNN graph: n=%d d=%d k=%d metric=%s index=%s", n, d, k, metric, kind)
    t0 = time.perf_counter()
    candidates = min(k + 1 + _EXACT_MARGIN, n)
    if kind == "exact":
        search = _exact_searcher(src.dense(), candidates)
    else:
        search = _approximate_searcher(
            src, candidates, kind, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
            storage=storage, nlist=nlist, nprobe=nprobe, seed=seed,
        )

    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    t1 = time.perf_counter()
    starts = range(0, n, block_size)
    if show_progress(progress):
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"kNN graph ({kind}, k={k})", unit="block")
    for start in starts:
        stop = min(start + block_size, n)
        ids = search(start, stop)
        ids, dist = _rerank(src, ids, start)
        ids, dist = _drop_self(ids, dist, np.arange(start, stop), k)
        indices[start:stop] = ids
        distances[start:stop] = dist
    logger.info("kNN graph done: index build %.1f s, search + exact re-rank %.1f s", t1 - t0, time.perf_counter() - t1)
    return indices, distances


def _normalise_rows(x: np.ndarray, name: str, offset: int = 0) -> np.ndarray:
    """L2-normalised float32 copy of ``x``; zero vectors raise, named by row (+ ``offset``)."""
    block = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise InvalidValuesError(
            f"{name} has all-zero vectors in {describe_rows(zero + offset)}; cosine distance is "
            f"undefined for them: drop those rows or use metric='l2'."
        )
    return np.ascontiguousarray(block / norms, dtype=np.float32)


def _normalised(src: RowBlocks) -> RowBlocks:
    out = RowBlocks([_normalise_rows(part, src.name, offset) for offset, part in zip(src.offsets, src.parts)], src.name)
    out._finite = src._finite  # dividing finite rows by non-zero norms keeps them finite
    return out


def _rerank(src: RowBlocks, ids: np.ndarray, start: int):
    """Exact float64 distances of each query row to its candidates, sorted by (distance, id).

    faiss's float32 ``‖a‖²+‖b‖²−2a·b`` loses ~1e-7 absolute, enough to swap near-equal
    neighbours and to make duplicates non-zero; quantised HNSW storage loses more. Candidates
    the index could not fill (id -1) sort last at infinite distance.
    """
    dist = np.empty(ids.shape, dtype=np.float64)
    valid = ids >= 0
    neighbours = src.take(np.where(valid, ids, 0))  # one gather per query block (float32)
    queries = src.rows(start, start + ids.shape[0])
    for lo in range(0, ids.shape[0], 512):  # bounds the float64 (rows, candidates, d) temporary
        hi = min(lo + 512, ids.shape[0])
        diff = neighbours[lo:hi].astype(np.float64) - queries[lo:hi, None, :]
        dist[lo:hi] = np.sqrt(np.einsum("rcd,rcd->rc", diff, diff))
    dist[~valid] = np.inf
    order = np.lexsort((ids, dist), axis=-1)  # distance, then lowest id among ties
    return np.take_along_axis(ids, order, -1), np.take_along_axis(dist, order, -1)


def _exact_searcher(x: np.ndarray, candidates: int):
    import faiss

    def search(start: int, stop: int):
        return faiss.knn(x[start:stop], x, candidates)[1]

    return search


def _approximate_searcher(src: RowBlocks, candidates: int, kind, *, hnsw_m, ef_construction, ef_search,
                          storage, nlist, nprobe, seed):
    import faiss

    n, d = src.shape
    rng = np.random.default_rng(seed)
    if kind == "hnsw":
        m = check_positive_int(hnsw_m, "hnsw_m")
        if storage == "flat":
            idx = faiss.IndexHNSWFlat(d, m)
        else:
            qtype = faiss.ScalarQuantizer.QT_fp16 if storage == "fp16" else faiss.ScalarQuantizer.QT_8bit
            idx = faiss.IndexHNSWSQ(d, qtype, m)
        idx.hnsw.efConstruction = check_positive_int(ef_construction, "ef_construction")
        if storage == "sq8":  # the quantiser's value ranges, from a seeded sample
            train_rows = min(n, 65536)
            idx.train(src.take(np.sort(rng.choice(n, size=train_rows, replace=False))))
        ef = ef_search if ef_search is not None else max(48, 2 * candidates)
        idx.hnsw.efSearch = max(check_positive_int(ef, "ef_search"), candidates)
    else:
        cells = check_positive_int(nlist, "nlist") if nlist is not None else _default_nlist(n)
        quantizer = faiss.IndexFlatL2(d)
        idx = faiss.IndexIVFFlat(quantizer, d, cells)
        idx.cp.seed = int(seed)
        train_rows = min(n, max(cells * 64, 10_000))
        sample = src.take(np.sort(rng.choice(n, size=train_rows, replace=False))) if train_rows < n else src.dense()
        idx.train(sample)
        del sample
        probe = nprobe if nprobe is not None else max(16, cells // 4)
        idx.nprobe = min(check_positive_int(probe, "nprobe"), cells)
    for start in range(0, n, 65536):  # add in blocks: float16 inputs are converted a block at a time
        idx.add(src.rows(start, min(start + 65536, n)))

    def search(start: int, stop: int):
        ids = idx.search(src.rows(start, stop), candidates)[1]
        missing = (ids < 0).sum(axis=1) > _EXACT_MARGIN
        if missing.any():
            # The approximate index found fewer than k+1 results for some rows: answer those
            # rows by brute force rather than return holes.
            rows = np.flatnonzero(missing) + start
            ids[rows - start] = _brute_force(src, src.take(rows), candidates)
        return ids

    return search


def _brute_force(src: RowBlocks, queries: np.ndarray, candidates: int) -> np.ndarray:
    """Exact nearest ids of a few query rows, merging per-block results (no full copy)."""
    import faiss

    best_d = np.full((len(queries), candidates), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), candidates), -1, dtype=np.int64)
    for start in range(0, len(src), 65536):
        stop = min(start + 65536, len(src))
        dd, ii = faiss.knn(queries, src.rows(start, stop), min(candidates, stop - start))
        all_d = np.concatenate([best_d, dd], axis=1)
        all_i = np.concatenate([best_i, ii + start], axis=1)
        order = np.argsort(all_d, axis=1, kind="stable")[:, :candidates]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i


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
    blocks: int = 1,
    storage: Storage = "fp16",
    hnsw_m: int = 32,
    block_size: int = 4096,
) -> MemoryEstimate:
    """Estimate the memory :func:`knn_graph` will need, before starting it.

    Args:
        n: rows. d: dimensions. k: neighbours per row.
        index: as in :func:`knn_graph`.
        dtype: dtype of the embeddings the caller holds (float32 and float16 are read in
            place; anything else costs one float32 copy).
        blocks: how many row blocks the embeddings come in (an Arrow column's record batches);
            the exact index needs them as one matrix, which costs a copy when ``blocks > 1``.
        storage: as in :func:`knn_graph` (HNSW only).
        hnsw_m: as in :func:`knn_graph`.
        block_size: as in :func:`knn_graph`.

    Returns:
        A :class:`MemoryEstimate` (a dict of byte counts) with keys ``embeddings``,
        ``conversion``, ``index``, ``graph``, ``buffers`` and ``total``.

    Raises:
        InvalidParameterError: non-positive sizes or an unknown index or storage.

    Example:
        >>> est = estimate_memory(1_000_000, 384, k=10)
        >>> round(est["total"] / 2**30, 1)
        2.7
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    k = check_positive_int(k, "k")
    blocks = check_positive_int(blocks, "blocks")
    if storage not in _STORAGES:
        raise InvalidParameterError(f"storage must be one of {', '.join(_STORAGES)}, got {storage!r}.")
    kind = _resolve_index(index, n)
    dt = np.dtype(dtype)
    embeddings = n * d * dt.itemsize
    in_place = dt in (np.float32, np.float16)
    candidates = k + 1 + _EXACT_MARGIN
    # the re-rank gathers a query block's candidates in float32, then 512 rows at a time in float64
    rerank = block_size * candidates * d * 4 + 512 * candidates * d * 8
    if kind == "exact":
        conversion = 0 if (dt == np.float32 and blocks == 1) else n * d * 4
        idx = 0
        buffers = rerank + block_size * (candidates * 24 + 1024 * 4 * 2)
    else:
        conversion = 0 if in_place else n * d * 4
        bytes_per_value = {"flat": 4, "fp16": 2, "sq8": 1}[storage] if kind == "hnsw" else 4
        if kind == "hnsw":
            # vectors + level-0 links (2·M int32) + upper levels (~1/M of nodes)
            idx = n * d * bytes_per_value + int(n * hnsw_m * 2 * 4 * (1 + 1 / hnsw_m)) + n * 16
        else:
            idx = n * d * 4 + n * 8 + _default_nlist(n) * d * 4
        buffers = rerank + 65536 * d * 4 + block_size * candidates * 12
    graph = n * k * (8 + 4)
    total = embeddings + conversion + idx + graph + buffers
    return MemoryEstimate(
        embeddings=embeddings, conversion=conversion, index=idx, graph=graph, buffers=buffers, total=total
    )
