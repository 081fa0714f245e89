"""The result type every selector returns: a selection order and per-row ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Selection", "ranks_from_order"]


def ranks_from_order(order: np.ndarray, n: int) -> np.ndarray:
    """Return int64 ``(n,)`` ranks: ``ranks[order[t]] = t``, ``-1`` for rows not in ``order``."""
    ranks = np.full(n, -1, dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
    return ranks


@dataclass(frozen=True)
class Selection:
    """A selection order over ``n`` rows ("rank, not mask").

    Attributes:
        order: int64 row ids in the order they are selected; the coreset at budget ``N`` is
            ``order[:N]``. Rows never selected (hard-cut, or beyond a requested budget) are absent.
        ranks: int64 ``(n,)``: position of each row in ``order``, ``-1`` for rows never selected;
            the coreset at budget ``N`` is ``ranks >= 0 & ranks < N``.
    """

    order: np.ndarray
    ranks: np.ndarray

    @classmethod
    def from_order(cls, order: np.ndarray, n: int) -> "Selection":
        order = np.asarray(order, dtype=np.int64)
        return cls(order=order, ranks=ranks_from_order(order, n))

    def mask(self, budget: int) -> np.ndarray:
        """Boolean ``(n,)`` mask of the first ``budget`` rows selected."""
        return (self.ranks >= 0) & (self.ranks < budget)
