"""Baseline coreset selectors, each returning a :class:`Selection` (order + ranks).

- :func:`random_order`: uniform random permutation.
- :func:`topk_order`: by score, hardest (or easiest) first.
- :func:`ccs_order`: Coverage-centric Coreset Selection (Zheng et al., ICLR 2023).
- :func:`moderate_order`: Moderate-DS (Xia et al., ICLR 2023).
- :func:`kcenter_order`: greedy k-center (Sener & Savarese, ICLR 2018).

All are pure functions over numpy arrays and deterministic under ``seed``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import check_finite, check_positive_int
from ._budget import interleave_by_allocation, score_strata, split_rows
from ._cutoff import hard_cutoff_rows
from ._result import Selection

__all__ = ["random_order", "topk_order", "ccs_order", "moderate_order", "kcenter_order", "KCENTER_FULL_ORDER_MAX_ROWS"]

#: Above this many rows :func:`kcenter_order` needs an explicit ``budget``: the full order costs
#: O(n²·d) (n passes over all rows).
KCENTER_FULL_ORDER_MAX_ROWS = 50_000


def _scores(scores, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1 or s.size == 0:
        raise InvalidValuesError(f"{name} must be a non-empty 1-D array, got shape {s.shape}.")
    check_finite(s, name)
    return s.astype(np.float64)


def random_order(n: int, seed: int = 0) -> Selection:
    """Uniformly random order: ``numpy.random.default_rng(seed).permutation(n)``.

    Example:
        >>> random_order(5, seed=0).order.tolist()
        [2, 4, 3, 0, 1]
    """
    n = check_positive_int(n, "n")
    return Selection.from_order(np.random.default_rng(seed).permutation(n), n)


def topk_order(scores, hardest: bool = True) -> Selection:
    """Order by score: highest first if ``hardest`` (scores are "higher = harder"), else lowest
    first; ties by lowest row id.

    Example:
        >>> topk_order([0.2, 0.9, 0.2, 0.5]).order.tolist()
        [1, 3, 0, 2]
    """
    s = _scores(scores)
    order = np.argsort(-s if hardest else s, kind="stable")
    return Selection.from_order(order, len(s))


def ccs_order(scores, *, cutoff_scores=None, hard_cutoff: float = 0.1, n_bins: int = 50, seed: int = 0) -> Selection:
    """Coverage-centric coreset selection (Zheng, Liu, Chen & Prakash, ICLR 2023).

    1. Hard cutoff: drop ``int(hard_cutoff·n)`` rows — the lowest ``cutoff_scores`` (e.g. AUM,
       low = likely mislabelled), or without them the highest ``scores`` (the hardest); rank -1.
    2. Split the remaining rows into ``n_bins`` equal-width bins of ``scores`` between their min
       and max (:func:`._budget.score_strata`).
    3. Budget: bins visited from the smallest up, each ``min(size, remaining // bins_left)``;
       rows drawn uniformly at random inside each bin.

    The order is prefix-consistent: ``order[:N]`` is that selection at budget ``N`` for every
    ``N`` (one random permutation per bin, merged by :func:`._budget.interleave_by_allocation`).

    Args:
        scores: ``(n,)`` difficulty scores to stratify by (e.g. AUM, forgetting, EL2N).
        cutoff_scores: ``(n,)`` scores for the hard cutoff, low = drop.
        hard_cutoff: fraction β in ``[0, 1)``; the paper tunes it per pruning rate.
        n_bins: number of strata (paper: 50).
        seed: seed of the draws inside bins.

    Returns:
        :class:`Selection`.

    Example:
        >>> r = ccs_order(np.arange(100.0), hard_cutoff=0.1, n_bins=5, seed=0)
        >>> int((r.ranks == -1).sum()), len(r.order)
        (10, 90)
    """
    s = _scores(scores)
    n = len(s)
    n_bins = check_positive_int(n_bins, "n_bins")
    alive = np.ones(n, dtype=bool)
    alive[hard_cutoff_rows(n, hard_cutoff, cutoff_scores, scores=s)] = False
    rows = np.flatnonzero(alive)
    rng = np.random.default_rng(seed)
    per_bin = split_rows(rows, score_strata(s[rows], n_bins), n_bins)
    per_bin = [members[rng.permutation(len(members))] for members in per_bin]
    order = interleave_by_allocation(per_bin, [len(m) for m in per_bin])
    return Selection.from_order(order, n)


def moderate_order(embeddings, labels) -> Selection:
    """Moderate-DS (Xia, Liu, Yu, Shen, Han & Liu, ICLR 2023): keep rows of moderate difficulty.

    Difficulty is the Euclidean distance of a row's embedding to its class's elementwise median
    embedding (the authors' ``get_median``). Distances are ranked globally across classes, and
    the order starts at the median distance and widens symmetrically, so ``order[:N]`` is the
    central band ``[0.5 - r/2, 0.5 + r/2]`` of distance ranks that the paper keeps at rate
    ``r = N/n`` (the authors round the band's two edges separately; we add rows alternately at
    either end, nearer-to-centre first, which differs from theirs by at most one row per end).

    Args:
        embeddings: ``(n, d)`` features.
        labels: ``(n,)`` class labels.

    Returns:
        :class:`Selection`.

    Example:
        >>> x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
        >>> moderate_order(x, [0, 0, 0, 1, 1]).order.tolist()[:2]
        [4, 3]
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InvalidValuesError(f"embeddings must be (n, d) and labels (n,); got {x.shape} and {y.shape}.")
    check_finite(x, "embeddings")
    n = x.shape[0]
    classes, inverse = np.unique(y, return_inverse=True)
    centres = np.stack([np.median(x[inverse == c], axis=0) for c in range(len(classes))])
    distance = np.linalg.norm(x - centres[inverse], axis=1)
    by_distance = np.argsort(distance, kind="stable")
    position = np.arange(n)
    # |2p + 1 - n| is the (doubled) distance of rank p from the middle; ties: lower rank first.
    order = by_distance[np.lexsort((position, np.abs(2 * position + 1 - n)))]
    return Selection.from_order(order, n)


def kcenter_order(embeddings, *, budget: int | None = None, seed: int = 0, metric: str = "l2",
                  block_size: int = 65536) -> Selection:
    """Greedy k-center (Sener & Savarese, ICLR 2018): repeatedly take the row farthest from the
    rows taken so far.

    The first row is drawn uniformly with ``numpy.random.default_rng(seed)`` (as the authors'
    ``kCenterGreedy`` does). Each step updates every row's distance to its nearest centre, in
    blocks of ``block_size`` rows, so a run costs O(n·budget·d) time and O(n) extra memory;
    ties go to the lowest row id.

    Args:
        embeddings: ``(n, d)`` vectors.
        budget: rows to pick; ``None`` orders all rows, allowed up to
            :data:`KCENTER_FULL_ORDER_MAX_ROWS` rows (above that it is O(n²·d): pass a budget).
        seed: seed of the first pick.
        metric: ``"l2"`` or ``"cosine"`` (Euclidean distance of L2-normalised vectors).
        block_size: rows per distance update block.

    Returns:
        :class:`Selection` with ``budget`` rows in ``order``.

    Example:
        >>> x = np.array([[0.0], [1.0], [10.0], [4.0]])
        >>> kcenter_order(x, budget=3, seed=0).order.tolist()
        [3, 2, 0]
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidValuesError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}.")
    check_finite(x, "embeddings")
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if metric == "cosine":
        from ..graph import _normalise_rows

        x = _normalise_rows(x, "embeddings")
    elif metric != "l2":
        raise InvalidParameterError(f"metric must be 'l2' or 'cosine', got {metric!r}.")
    if budget is None:
        if n > KCENTER_FULL_ORDER_MAX_ROWS:
            raise InvalidParameterError(
                f"kcenter_order over n={n} rows needs budget=: the full order costs O(n²·d); "
                f"pass the number of rows you will keep."
            )
        budget = n
    budget = check_positive_int(budget, "budget", minimum=0)
    if budget > n:
        raise InvalidParameterError(f"budget={budget} exceeds the {n} rows available.")
    block_size = check_positive_int(block_size, "block_size")
    order = np.empty(budget, dtype=np.int64)
    if budget == 0:
        return Selection.from_order(order, n)
    nearest = np.full(n, np.inf, dtype=np.float64)
    pick = int(np.random.default_rng(seed).integers(n))
    for t in range(budget):
        order[t] = pick
        centre = x[pick]
        for lo in range(0, n, block_size):
            diff = x[lo:lo + block_size] - centre
            np.minimum(nearest[lo:lo + block_size], np.einsum("ij,ij->i", diff, diff), out=nearest[lo:lo + block_size])
        nearest[pick] = -1.0  # picked rows never win again (duplicates keep distance 0 >= -1)
        pick = int(np.argmax(nearest))
    return Selection.from_order(order, n)
