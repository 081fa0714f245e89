"""Coreset selectors: pure functions over numpy arrays returning a selection order and ranks.

``d2_order`` (D2 pruning) and the baselines ``random_order``, ``topk_order``, ``ccs_order``,
``moderate_order``, ``kcenter_order``; each returns a :class:`Selection` whose ``order[:N]`` is
the coreset at budget ``N`` and whose ``ranks`` (-1 = never selected) become a ``*_rank`` column.
``d2_partitioned_order`` runs D2 inside k-means partitions (one process, a pool, or one rank
each) and merges them into one such order (:mod:`.partitioned`).
"""

from ._budget import equal_allocation, interleave_by_allocation, interleave_proportional, proportional_allocation
from ._result import Selection
from .baselines import ccs_order, kcenter_order, moderate_order, random_order, topk_order
from .d2 import D2Result, d2_forward, d2_order, d2_reverse_order
from .partitioned import (
    PartitionPlan,
    PartitionResult,
    d2_partitioned_order,
    merge_partitions,
    partition_rows,
    partitions_for_rank,
    plan_partitions,
    run_partition,
    run_partitions_for_rank,
)

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
    "proportional_allocation",
    "interleave_proportional",
    "d2_partitioned_order",
    "partition_rows",
    "plan_partitions",
    "run_partition",
    "merge_partitions",
    "partitions_for_rank",
    "run_partitions_for_rank",
    "PartitionPlan",
    "PartitionResult",
]
