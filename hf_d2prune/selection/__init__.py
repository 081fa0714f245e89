"""Coreset selectors: pure functions over numpy arrays returning a selection order and ranks.

``d2_order`` (D2 pruning) and the baselines ``random_order``, ``topk_order``, ``ccs_order``,
``moderate_order``, ``kcenter_order``; each returns a :class:`Selection` whose ``order[:N]`` is
the coreset at budget ``N`` and whose ``ranks`` (-1 = never selected) become a ``*_rank`` column.
"""

from ._budget import equal_allocation, interleave_by_allocation
from ._result import Selection
from .baselines import ccs_order, kcenter_order, moderate_order, random_order, topk_order
from .d2 import D2Result, d2_forward, d2_order, d2_reverse_order

__all__ = [
    "Selection",
    "D2Result",
    "d2_order",
    "d2_forward",
    "d2_reverse_order",
    "random_order",
    "topk_order",
    "ccs_order",
    "moderate_order",
    "kcenter_order",
    "equal_allocation",
    "interleave_by_allocation",
]
