"""Score extrapolation: fill a score measured on a subset of rows into every other row.

Schmidt et al., "Effective Data Pruning through Score Extrapolation" (arXiv 2506.09010): train
the scoring run on a random subset only, then predict the score of the remaining rows from
their embeddings. Two extrapolators, both pure array code (numpy / faiss / torch in, arrays
out, deterministic under ``seed``):

- :func:`knn_extrapolate`: the (optionally exp(−distance)-weighted) mean score of the ``k``
  nearest measured rows; :func:`select_knn` picks ``k`` and the weighting on a held-out part of
  the measured rows.
- :func:`gnn_extrapolate`: a 3-layer graph convolutional network over the kNN graph of all rows,
  trained (MSE) on the measured rows and selected by Pearson correlation on held-out measured rows.

Never validated against full-data scores: the only targets are the measured values.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import InvalidParameterError, InvalidValuesError
from .validation import check_finite, check_fraction, check_positive_int

__all__ = [
    "knn_extrapolate", "select_knn", "gnn_extrapolate", "holdout_split", "ExtrapolationResult",
    "KNN_CANDIDATE_KS", "KNN_EXACT_MAX_ROWS",
]

logger = logging.getLogger(__name__)

#: Values of ``k`` tried by :func:`select_knn` (the paper sweeps 10–100; small ``k`` is added
#: because with 5% of a few thousand rows the measured set can be tiny).
KNN_CANDIDATE_KS: tuple[int, ...] = (5, 10, 20, 50, 100)

#: Measured rows up to which the kNN search is exact (faiss brute force); HNSW above.
#: Brute force costs O(unmeasured · measured · d): 20k × 50k × 384 is ~0.4 TFLOP, seconds.
KNN_EXACT_MAX_ROWS = 50_000

WEIGHTINGS = ("uniform", "exp")


@dataclass
class ExtrapolationResult:
    """Values for every row (measured rows unchanged) and what was chosen / measured on the way."""

    values: np.ndarray
    params: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- checks
def _check_inputs(embeddings, values, measured) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise InvalidValuesError(f"embeddings must be a 2-D array (rows, dimensions), got shape {x.shape}.")
    check_finite(x, "embeddings")
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(values, dtype=np.float64)
    mask = np.asarray(measured)
    if mask.dtype != bool:
        raise InvalidValuesError(f"measured must be a boolean mask, got dtype {mask.dtype}.")
    if not (len(x) == len(y) == len(mask)):
        raise InvalidValuesError(
            f"embeddings ({len(x)} rows), values ({len(y)}) and measured ({len(mask)}) must have one entry per row.")
    if not mask.any():
        raise InvalidValuesError("no measured rows: nothing to extrapolate from.")
    check_finite(y[mask], "values of the measured rows")
    return x, y, mask


def holdout_split(n_measured: int, fraction: float = 0.1, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the measured rows) of a seeded (train, validation) split; validation ≥ 1 row."""
    fraction = check_fraction(fraction, "holdout", low=0.0, high=1.0, low_inclusive=False)
    if n_measured < 2:
        raise InvalidParameterError(f"a hold-out split needs at least 2 measured rows, got {n_measured}.")
    n_val = min(max(1, int(round(fraction * n_measured))), n_measured - 1)
    order = np.random.default_rng(seed).permutation(n_measured)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    return _pearson(rankdata(a), rankdata(b))


# ------------------------------------------------------------------------------------------ kNN
def _nearest_measured(base: np.ndarray, queries: np.ndarray, k: int, *, index: str,
                      block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(ids into ``base``, Euclidean distances) of the ``k`` nearest base rows of every query."""
    import faiss

    kind = index
    if kind == "auto":
        kind = "exact" if len(base) <= KNN_EXACT_MAX_ROWS else "hnsw"
    if kind not in ("exact", "hnsw"):
        raise InvalidParameterError(f"index must be 'auto', 'exact' or 'hnsw', got {index!r}.")
    if kind == "hnsw":
        searcher = faiss.IndexHNSWFlat(base.shape[1], 32)
        searcher.hnsw.efConstruction = 80
        searcher.add(base)
        searcher.hnsw.efSearch = max(64, 2 * k)
    ids = np.empty((len(queries), k), dtype=np.int64)
    dist = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), block_size):
        block = queries[start:start + block_size]
        if kind == "exact":
            sq, found = faiss.knn(block, base, k)
        else:
            sq, found = searcher.search(block, k)
        ids[start:start + len(block)] = found
        dist[start:start + len(block)] = np.sqrt(np.maximum(sq, 0.0))
    if (ids < 0).any():  # HNSW found fewer than k: answer those rows exactly
        rows = np.flatnonzero((ids < 0).any(axis=1))
        sq, found = faiss.knn(queries[rows], base, k)
        ids[rows], dist[rows] = found, np.sqrt(np.maximum(sq, 0.0))
    return ids, dist


def _weighted_means(neighbour_values: np.ndarray, distances: np.ndarray, k: int, weighting: str) -> np.ndarray:
    """Mean over the first ``k`` columns: plain, or with weights exp(−distance)."""
    v, d = neighbour_values[:, :k], distances[:, :k]
    if weighting == "uniform":
        return v.mean(axis=1)
    # exp(−d) normalised per row equals exp(−(d − d_min)) normalised: shifting by the nearest
    # distance avoids underflow to 0/0 when distances are large (raw pixels: d ≈ 20–50).
    w = np.exp(-(d - d[:, :1]))
    return (w * v).sum(axis=1) / w.sum(axis=1)


def _check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise InvalidParameterError(f"weighting must be one of {', '.join(map(repr, WEIGHTINGS))}, got {weighting!r}.")
    return weighting


def knn_extrapolate(embeddings, values, measured, *, k: int = 10, weighting: str = "exp",
                    index: str = "auto") -> np.ndarray:
    """Fill every unmeasured row with the mean score of its ``k`` nearest measured rows.

    Args:
        embeddings: (n, d) vectors of every row.
        values: (n,) scores; only the measured entries are read (others may be NaN).
        measured: (n,) bool mask of the rows whose score was measured.
        k: neighbours averaged, ``1 <= k <= measured rows``.
        weighting: ``"uniform"`` (plain mean) or ``"exp"`` (weights exp(−Euclidean distance)).
        index: ``"exact"`` (faiss brute force), ``"hnsw"``, or ``"auto"`` (exact up to
            :data:`KNN_EXACT_MAX_ROWS` measured rows).

    Returns:
        float64 (n,) array: measured rows keep their value, the others get the prediction.

    Raises:
        InvalidValuesError: shapes disagree, NaN/inf in embeddings or measured values, no measured row.
        InvalidParameterError: ``k`` larger than the number of measured rows, unknown weighting/index.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0], [10.0], [0.4]], dtype=np.float32)
        >>> knn_extrapolate(x, [1.0, 3.0, 100.0, np.nan], np.array([True, True, True, False]),
        ...                 k=2, weighting="uniform").tolist()
        [1.0, 3.0, 100.0, 2.0]
    """
    x, y, mask = _check_inputs(embeddings, values, measured)
    k = check_positive_int(k, "k")
    _check_weighting(weighting)
    base_rows = np.flatnonzero(mask)
    if k > len(base_rows):
        raise InvalidParameterError(
            f"k={k} exceeds the {len(base_rows)} measured rows; use k <= {len(base_rows)} or measure more rows.")
    out = y.copy()
    queries = np.flatnonzero(~mask)
    if queries.size:
        ids, dist = _nearest_measured(x[base_rows], x[queries], k, index=index)
        out[queries] = _weighted_means(y[base_rows][ids], dist, k, weighting)
    return out


def select_knn(embeddings, values, measured, *, ks: Sequence[int] = KNN_CANDIDATE_KS,
               weightings: Sequence[str] = WEIGHTINGS, holdout: float = 0.1, index: str = "auto",
               seed: int = 0) -> tuple[int, str, dict]:
    """Choose ``k`` and the weighting by Spearman correlation on a held-out part of the measured rows.

    The measured rows are split (seeded) into ``1 − holdout`` reference rows and ``holdout``
    validation rows; each validation row is predicted from the reference rows alone, for every
    candidate, with one search of ``max(ks)`` neighbours. Candidates larger than the number of
    reference rows are skipped. Ties go to the smaller ``k``, then to ``weightings`` order.

    Returns:
        ``(k, weighting, table)`` where ``table`` maps ``"k=<k>,<weighting>"`` to the validation
        Spearman correlation.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(400, 2)).astype(np.float32)
        >>> k, w, table = select_knn(x, x[:, 0], np.ones(400, bool), ks=(5, 50))
        >>> k
        5
    """
    x, y, mask = _check_inputs(embeddings, values, measured)
    for w in weightings:
        _check_weighting(w)
    rows = np.flatnonzero(mask)
    train, val = holdout_split(len(rows), holdout, seed=seed)
    usable = sorted({check_positive_int(k, "k") for k in ks if k <= len(train)})
    if not usable:
        raise InvalidParameterError(
            f"k='auto' needs more measured rows: the smallest candidate k={min(ks)} exceeds the {len(train)} rows "
            f"left after holding out {len(val)}; pass an explicit smaller k or measure more rows.")
    base, targets = rows[train], y[rows[val]]
    ids, dist = _nearest_measured(x[base], x[rows[val]], usable[-1], index=index)
    neighbour_values = y[base][ids]
    table, best = {}, None
    for k in usable:
        for w in weightings:
            rho = _spearman(_weighted_means(neighbour_values, dist, k, w), targets) if len(val) > 1 else 0.0
            rho = 0.0 if not np.isfinite(rho) else rho
            table[f"k={k},{w}"] = round(rho, 4)
            if best is None or rho > best[0] + 1e-12:
                best = (rho, k, w)
    logger.info("kNN extrapolation: chose k=%d weighting=%s (held-out Spearman %.3f on %d rows)",
                best[1], best[2], best[0], len(val))
    return best[1], best[2], table


# ------------------------------------------------------------------------------------------ GNN
def _normalised_adjacency(indices: np.ndarray, distances: np.ndarray, n: int):
    """Symmetric GCN operator D^−½ (A + I) D^−½ with A_ij = exp(−d_ij / 2) on the symmetrised kNN graph."""
    import scipy.sparse as sp
    import torch

    k = indices.shape[1]
    w = np.exp(-distances.astype(np.float64).ravel() / 2.0)
    a = sp.csr_matrix((w, (np.repeat(np.arange(n), k), indices.ravel())), shape=(n, n))
    a = a.maximum(a.T) + sp.identity(n, format="csr")  # i~j if either lists the other
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = sp.diags(1.0 / np.sqrt(deg))
    a = (inv_sqrt @ a @ inv_sqrt).tocsr()
    a.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": only matmul is used, which is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(a.indptr.astype(np.int64)), torch.from_numpy(a.indices.astype(np.int64)),
            torch.from_numpy(a.data.astype(np.float32)), size=(n, n), check_invariants=False)


def _symmetric_propagation():
    """``propagate(A, H) = A @ H`` for a symmetric sparse ``A``, whose backward reuses ``A`` as its own
    transpose (torch's generic sparse-CSR backward transposes ``A`` on every call: 4× slower here)."""
    import torch

    class Propagate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, adjacency, h):
            ctx.adjacency = adjacency
            return adjacency @ h

        @staticmethod
        def backward(ctx, grad):
            return None, ctx.adjacency @ grad

    return Propagate.apply


def gnn_extrapolate(embeddings, values, measured, *, labels: Optional[np.ndarray] = None, k: int = 10,
                    hidden: tuple[int, int] = (512, 256), dropout: float = 0.5, lr: float = 1e-3,
                    weight_decay: float = 0.0, max_epochs: int = 100, patience: int = 20,
                    holdout: float = 0.1, index: str = "auto", seed: int = 0,
                    progress: bool = False) -> ExtrapolationResult:
    """Predict unmeasured scores with a graph convolutional network over the kNN graph of all rows.

    The architecture of Schmidt et al.: node features = embedding ⊕ one-hot label (when
    ``labels`` is given); kNN graph over all rows (``k`` neighbours, symmetrised, edge weight
    exp(−d/2), self-loops, symmetric normalisation as in Kipf & Welling's GCN); three graph
    convolutions → ``hidden[0]`` → ``hidden[1]`` → 1 with ReLU and dropout between them; MSE on
    the measured rows (targets standardised), Adam; full-batch on CPU. A seeded ``holdout``
    fraction of the measured rows is kept out of the loss: the epoch with the best Pearson
    correlation there is kept, and training stops after ``patience`` epochs without improvement.
    The first layer's propagation Â·X is computed once (dropout acts on hidden layers only, so
    the input stays fixed), which makes an epoch cost about one dense (n × d) · (d × 512) product.

    Args:
        embeddings: (n, d) vectors of every row.
        values: (n,) scores; only measured entries are read.
        measured: (n,) bool mask.
        labels: optional (n,) integer class ids, appended one-hot to the features.
        k: graph neighbours per row (the paper: 10–50).
        hidden: widths of the two hidden layers.
        dropout: dropout probability on hidden activations.
        lr, weight_decay: Adam settings.
        max_epochs, patience: training length and early-stopping patience (epochs).
        holdout: fraction of measured rows used for model selection.
        index: kNN index of :func:`hf_d2prune.graph.knn_graph`.
        seed: seeds the split, the weights and dropout (the caller's torch RNG is left untouched).
        progress: log the validation correlation every 10 epochs.

    Returns:
        :class:`ExtrapolationResult` with ``values`` (measured rows unchanged) and the held-out
        Pearson / Spearman of the selected epoch in ``validation``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(300, 4)).astype(np.float32)
        >>> res = gnn_extrapolate(x, x[:, 0], rng.random(300) < 0.3, k=10, hidden=(32, 16), max_epochs=50)
        >>> res.values.shape
        (300,)
    """
    import torch

    from .graph import knn_graph

    x, y, mask = _check_inputs(embeddings, values, measured)
    n = len(x)
    k = check_positive_int(k, "k")
    if k > n - 1:
        raise InvalidParameterError(f"k={k} graph neighbours need at least k + 1 rows, but there are {n}.")
    max_epochs = check_positive_int(max_epochs, "max_epochs")
    patience = check_positive_int(patience, "patience")
    h1, h2 = (check_positive_int(h, "hidden") for h in hidden)
    dropout = check_fraction(dropout, "dropout")
    lr = check_fraction(lr, "lr", low=0.0, high=float("inf"), low_inclusive=False)
    rows = np.flatnonzero(mask)
    train_pos, val_pos = holdout_split(len(rows), holdout, seed=seed)
    train_rows, val_rows = rows[train_pos], rows[val_pos]
    features = x
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu" or (labels < 0).any():
            raise InvalidValuesError("labels must be (n,) non-negative integer class ids.")
        features = np.concatenate([x, np.eye(int(labels.max()) + 1, dtype=np.float32)[labels]], axis=1)

    indices, distances = knn_graph(x, k, index=index, seed=seed)
    adjacency = _normalised_adjacency(indices, distances, n)
    propagate = _symmetric_propagation()
    mean, std = y[train_rows].mean(), y[train_rows].std()
    std = std if std > 0 else 1.0
    target = torch.from_numpy(((y[train_rows] - mean) / std).astype(np.float32))
    train_t, val_t = torch.from_numpy(train_rows), torch.from_numpy(val_rows)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        propagated = adjacency @ torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        layers = torch.nn.ModuleList([torch.nn.Linear(features.shape[1], h1), torch.nn.Linear(h1, h2),
                                      torch.nn.Linear(h2, 1)])
        optimiser = torch.optim.Adam(layers.parameters(), lr=lr, weight_decay=weight_decay)

        def forward(training: bool) -> torch.Tensor:
            h = torch.relu(layers[0](propagated))
            h = torch.nn.functional.dropout(h, dropout, training)
            h = torch.relu(propagate(adjacency, layers[1](h)))
            h = torch.nn.functional.dropout(h, dropout, training)
            return propagate(adjacency, layers[2](h)).squeeze(1)

        best = (-np.inf, 0, None)
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            layers.train()
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(forward(True)[train_t], target)
            loss.backward()
            optimiser.step()
            layers.eval()
            with torch.no_grad():
                prediction = forward(False)
            val_pred = prediction[val_t].numpy().astype(np.float64)
            r = _pearson(val_pred, y[val_rows]) if len(val_rows) > 1 else -loss.item()
            r = r if np.isfinite(r) else -np.inf
            if r > best[0]:
                best = (r, epoch, prediction.numpy().astype(np.float64))
            if progress and epoch % 10 == 0:
                logger.info("GNN epoch %d: loss %.4f, held-out Pearson %.4f (best %.4f at %d)",
                            epoch, loss.item(), r, best[0], best[1])
            if epoch - best[1] >= patience:
                break
    if best[2] is None:  # every epoch gave a non-finite correlation (constant predictions)
        best = (0.0, epoch, prediction.numpy().astype(np.float64))
    predicted = best[2] * std + mean
    out = y.copy()
    out[~mask] = predicted[~mask]
    validation = {"pearson": round(float(best[0]), 4),
                  "spearman": round(_spearman(predicted[val_rows], y[val_rows]), 4) if len(val_rows) > 1 else None,
                  "rows": int(len(val_rows)), "best_epoch": int(best[1]), "epochs_run": int(epoch)}
    logger.info("GNN extrapolation: best held-out Pearson %.3f at epoch %d of %d", best[0], best[1], epoch)
    params = {"k": k, "hidden": [h1, h2], "dropout": dropout, "lr": lr, "weight_decay": weight_decay,
              "max_epochs": max_epochs, "patience": patience, "holdout": holdout, "edge_weight": "exp(-d/2)",
              "label_features": labels is not None}
    return ExtrapolationResult(out, params, validation)
