"""Geometric difficulty scores computed from embeddings alone (no training run).

Every score here follows the library convention: higher = harder / more important.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InvalidParameterError
from .validation import check_finite, check_positive_int

__all__ = ["prototype_distance", "GEOMETRIC_SCORES"]


def prototype_distance(
    embeddings: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    n_prototypes: Optional[int] = None,
    seed: int = 0,
) -> np.ndarray:
    """Euclidean distance of each row to its prototype; far from the prototype = hard.

    The self-supervised prototype metric of Sorscher et al., "Beyond neural scaling laws:
    beating power law scaling via data pruning" (NeurIPS 2022): with ``labels`` the prototype
    of a row is the mean embedding of its class; without, the nearest of ``n_prototypes``
    k-means centroids (faiss, seeded). Rows far from every prototype are atypical (hard).

    Args:
        embeddings: float ``(n, d)``.
        labels: optional int ``(n,)`` class ids.
        n_prototypes: k-means clusters when ``labels`` is None (default ``round(sqrt(n))``,
            at least 1, at most n).
        seed: k-means seed.

    Returns:
        float32 ``(n,)`` distances (higher = harder).

    Example:
        >>> X = np.array([[0., 0.], [0., 2.], [10., 0.]], np.float32)
        >>> prototype_distance(X, np.array([0, 0, 1])).tolist()
        [1.0, 1.0, 0.0]
    """
    X = np.ascontiguousarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise InvalidParameterError(f"embeddings must be a non-empty (n, d) array, got shape {X.shape}.")
    check_finite(X, "embeddings")
    n = len(X)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise InvalidParameterError(f"labels must have shape ({n},), got {labels.shape}.")
        classes, inverse = np.unique(labels, return_inverse=True)
        sums = np.zeros((len(classes), X.shape[1]), np.float64)
        np.add.at(sums, inverse, X)
        centroids = (sums / np.bincount(inverse)[:, None]).astype(np.float32)
        return np.linalg.norm(X - centroids[inverse], axis=1).astype(np.float32)

    import faiss

    n_prototypes = n_prototypes if n_prototypes is not None else max(1, int(round(np.sqrt(n))))
    n_prototypes = min(check_positive_int(n_prototypes, "n_prototypes"), n)
    # several restarts (best objective kept): one Lloyd run often merges two true clusters
    kmeans = faiss.Kmeans(X.shape[1], n_prototypes, niter=25, nredo=5, seed=int(seed), verbose=False,
                          max_points_per_centroid=max(256, -(-n // n_prototypes)))
    kmeans.train(X)
    squared, _ = kmeans.index.search(X, 1)
    return np.sqrt(np.maximum(squared[:, 0], 0.0)).astype(np.float32)


#: Scores ``ds.d2.score`` can compute from an embedding column (name -> function).
GEOMETRIC_SCORES = {"prototype_distance": prototype_distance}
