"""Glue between ``ds.d2.coreset`` and the selection kernels: columns in, rank columns out.

All validation happens here, before a graph is built; the kernels in :mod:`hf_d2prune.selection`
know nothing of ``datasets``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from .arrays import column_array, embedding_blocks, embedding_matrix, require_columns
from .errors import InvalidParameterError
from .validation import check_finite, check_fraction, check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "run_selection"]

#: method -> (needs a score column, needs embeddings)
METHODS = {
    "d2": (True, True),
    "random": (False, False),
    "topk": (True, False),
    "easiest": (True, False),
    "ccs": (True, False),
    "moderate": (False, True),
    "kcenter": (False, True),
}


def _scores(ds: Any, column: str, higher_is_harder: bool, what: str) -> np.ndarray:
    values = column_array(ds, column, dtype=np.float64)
    check_finite(values, f"{what} column '{column}'")
    return values if higher_is_harder else -values


def _minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] preserving order; constant scores become all ones (pure diversity)."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.ones_like(values)
    return (values - low) / (high - low)


def run_selection(
    ds: Any,
    *,
    score: Optional[str],
    method: str,
    embedding: str,
    k: int,
    gamma_forward: float,
    gamma_reverse: float,
    graph: str,
    squared: bool,
    index: str,
    by: Optional[str],
    label: Optional[str],
    hard_cutoff: float,
    cutoff_score: Optional[str],
    higher_is_harder: bool,
    scale_scores: bool,
    n_bins: int,
    budget: Optional[int],
    seed: int,
    partitions: Optional[int] = None,
    partition_neighbours: str = "halo",
    num_proc: int = 1,
    strata: Optional[int] = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Validate, read columns, run one selection method; return new columns and extra provenance."""
    from .namespace import _label_array
    from .selection.d2 import d2_order

    if not isinstance(method, str) or method not in METHODS:
        raise InvalidParameterError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}.")
    needs_score, needs_embedding = METHODS[method]
    n = len(ds)
    if n == 0:
        raise InvalidParameterError("the dataset is empty: there is nothing to select.")
    if needs_score and score is None:
        raise InvalidParameterError(
            f"method '{method}' needs score=<column> (higher = harder), e.g. score='aum' from "
            f"ds.d2.train_dynamics or score='prototype_distance' from ds.d2.score()."
        )
    if graph not in ("symmetric", "directed"):
        raise InvalidParameterError(f"graph must be 'symmetric' or 'directed', got {graph!r}.")
    if index not in ("auto", "exact", "hnsw", "ivf"):
        raise InvalidParameterError(f"index must be one of auto, exact, hnsw, ivf; got {index!r}.")
    hard_cutoff = check_fraction(hard_cutoff, "hard_cutoff", low=0.0, high=1.0)
    if hard_cutoff > 0 and method not in ("d2", "ccs"):
        raise InvalidParameterError(f"hard_cutoff applies to methods 'd2' and 'ccs', not '{method}'; leave it at 0.")
    check_positive_int(k, "k")
    seed = check_positive_int(seed, "seed", minimum=0)  # None would make the cached result a lie
    if budget is not None:
        budget = check_positive_int(budget, "budget")
    for name, gamma in (("gamma_forward", gamma_forward), ("gamma_reverse", gamma_reverse)):
        if not isinstance(gamma, (int, float, np.integer, np.floating)) or not np.isfinite(gamma) or gamma < 0:
            raise InvalidParameterError(f"{name} must be a finite number >= 0, got {gamma!r}.")
    if strata is not None:
        strata = check_positive_int(strata, "strata")
        if method != "d2":
            hint = " (CCS stratifies by n_bins=)" if method == "ccs" else ""
            raise InvalidParameterError(f"strata= applies to method 'd2', not '{method}'; leave it at None{hint}.")
    if partitions is not None:
        partitions = check_positive_int(partitions, "partitions")
        if method != "d2":
            raise InvalidParameterError(f"partitions= applies to method 'd2', not '{method}'; leave it at None.")
        if by is not None or hard_cutoff > 0 or strata is not None:
            raise InvalidParameterError(
                "partitions= cannot be combined with by=, hard_cutoff= or strata= (each partition is a budget of "
                "its own); use one or the other."
            )
        if partition_neighbours not in ("local", "halo", "global"):
            raise InvalidParameterError(
                f"partition_neighbours must be 'local', 'halo' or 'global', got {partition_neighbours!r}."
            )
        if partitions > n:
            raise InvalidParameterError(f"partitions={partitions} exceeds the {n} rows; use partitions <= {n}.")
    num_proc = check_positive_int(num_proc, "num_proc")
    columns = [c for c in (score, embedding if needs_embedding else None, by, cutoff_score) if c is not None]
    require_columns(ds, *columns)

    scores = _scores(ds, score, higher_is_harder, "score") if score is not None else None
    cutoff = None
    if hard_cutoff > 0:
        cutoff_column = cutoff_score or score
        if cutoff_column is None:
            raise InvalidParameterError("hard_cutoff > 0 needs cutoff_score=<column> (or score=<column>).")
        cutoff = _scores(ds, cutoff_column, higher_is_harder, "cutoff_score")
    labels = _label_array(ds, by) if by is not None else None
    if not needs_embedding:
        X = None
    elif method == "d2":
        from .graph import RowBlocks

        # D2 reads the column's record batches in place: a memory-mapped dataset is never
        # copied into one matrix. The values are checked block by block.
        X = RowBlocks(embedding_blocks(ds, embedding), name=f"column '{embedding}'")
        X.check_finite()
    else:
        X = embedding_matrix(ds, embedding)
    record: dict = {}

    if method == "d2":
        if n < 2:
            raise InvalidParameterError("D2 needs at least 2 rows (a kNN graph); the dataset has 1. Use method='topk'.")
        if labels is None and k >= n:
            raise InvalidParameterError(f"k={k} must be smaller than the number of rows ({n}); use k <= {n - 1}.")
        if scale_scores:
            scores = _minmax(scores)
        if partitions is not None:
            from .selection.partitioned import d2_partitioned_order

            result = d2_partitioned_order(
                scores, X.dense(), n_partitions=partitions, k=k, gamma_forward=float(gamma_forward),
                gamma_reverse=float(gamma_reverse), graph=graph, squared=squared, neighbours=partition_neighbours,
                budget=budget, index=index, seed=seed, num_proc=num_proc,
            )
            record.update(partitions=partitions, partition_neighbours=partition_neighbours)
            return {"d2_rank": result.ranks, "d2_score": result.forward_scores}, record
        result = d2_order(
            scores, X, k=k, gamma_forward=float(gamma_forward), gamma_reverse=float(gamma_reverse), graph=graph,
            squared=squared, labels=labels, strata=strata, hard_cutoff=hard_cutoff,
            cutoff_scores=None if cutoff is None else -cutoff, budget=budget, index=index, seed=seed,
        )
        return {"d2_rank": result.ranks, "d2_score": result.forward_scores}, record

    from .selection import baselines

    if method == "random":
        selection = baselines.random_order(n, seed=seed)
    elif method in ("topk", "easiest"):
        selection = baselines.topk_order(scores, hardest=method == "topk")
    elif method == "ccs":
        selection = baselines.ccs_order(scores, cutoff_scores=None if cutoff is None else -cutoff,
                                        hard_cutoff=hard_cutoff, n_bins=check_positive_int(n_bins, "n_bins"), seed=seed)
    elif method == "moderate":
        label_column = label or by or ("label" if "label" in ds.column_names else None)
        classes = _label_array(ds, label_column) if label_column is not None else np.zeros(n, np.int64)
        record["label"] = label_column
        selection = baselines.moderate_order(X, classes)
    else:  # kcenter
        selection = baselines.kcenter_order(X, budget=budget, seed=seed)
    ranks = selection.ranks
    if budget is not None and method != "kcenter":
        ranks = np.where(ranks < budget, ranks, -1)
    return {f"{method}_rank": ranks}, record
