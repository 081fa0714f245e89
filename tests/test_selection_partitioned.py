"""Tests of partitioned D2: budgets, prefixes, exactness against d2_order, processes, errors."""

import numpy as np
import pytest

from hf_d2prune.errors import InvalidParameterError, InvalidValuesError
from hf_d2prune.graph import knn_graph
from hf_d2prune.selection import _budget
from hf_d2prune.selection._budget import interleave_proportional, proportional_allocation, proportional_sequence
from hf_d2prune.selection.d2 import d2_order
from hf_d2prune.selection.partitioned import (
    d2_partitioned_order,
    merge_partitions,
    partition_rows,
    partitions_for_rank,
    plan_partitions,
    run_partition,
    run_partitions_for_rank,
)

MODES = ["local", "halo", "global"]


@pytest.fixture(scope="module")
def data():
    """1,500 rows: a 12-component Gaussian mixture in 16 dims (clusters touch), random scores."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16)) * 1.5
    x = (centres[rng.integers(0, 12, 1500)] + rng.normal(size=(1500, 16))).astype(np.float32)
    return x, rng.random(1500)


@pytest.fixture(scope="module")
def blobs():
    """Four far-apart Gaussian blobs of unequal sizes, rows shuffled."""
    rng = np.random.default_rng(1)
    sizes = [100, 250, 400, 50]
    cluster = rng.permutation(np.repeat(np.arange(4), sizes))
    centres = np.eye(4, 8) * 100
    x = (centres[cluster] + rng.normal(size=(len(cluster), 8))).astype(np.float32)
    return x, rng.random(len(cluster)), cluster


def counts(order, labels, n_groups):
    return np.bincount(labels[order], minlength=n_groups)


# ---------------------------------------------------------------- proportional budgets

def test_proportional_sequence_within_quota_at_every_budget():
    rng = np.random.default_rng(3)
    cases = [[1, 3], [5, 0, 5], [1, 1, 1, 97], [7], [2, 3, 5, 7, 11, 13]]
    cases += [list(rng.integers(0, 30, rng.integers(1, 9))) for _ in range(60)]
    for sizes in cases:
        sizes = np.array(sizes)
        n = int(sizes.sum())
        if n == 0:
            continue
        seq = proportional_sequence(sizes)
        cum = np.zeros(len(sizes), dtype=np.int64)
        for budget in range(1, n + 1):
            cum[seq[budget - 1]] += 1
            assert ((budget * sizes) // n <= cum).all() and (cum <= -(-budget * sizes // n)).all(), (sizes, budget)
        np.testing.assert_array_equal(cum, sizes)
        np.testing.assert_array_equal(proportional_allocation(sizes, n // 3),
                                      np.bincount(seq[:n // 3], minlength=len(sizes)))


def test_proportional_sequence_same_without_numba():
    rng = np.random.default_rng(4)
    for _ in range(20):
        sizes = rng.integers(0, 40, rng.integers(1, 7)).astype(np.int64)
        if sizes.sum() == 0:
            continue
        fast, ok = _budget._proportional_sequence_fast(sizes, np.int64(sizes.sum()))
        slow, ok_slow = _budget._proportional_sequence_impl(sizes, np.int64(sizes.sum()))
        assert ok and ok_slow
        np.testing.assert_array_equal(fast, slow)


def test_interleave_proportional_prefixes_and_truncation():
    sizes = np.array([4, 0, 9, 2])
    groups = [np.arange(0, 4), np.zeros(0, np.int64), np.arange(4, 13), np.arange(13, 15)]
    label = np.repeat(np.arange(4), sizes)
    merged = interleave_proportional(groups, sizes)
    np.testing.assert_array_equal(np.sort(merged), np.arange(15))
    for budget in range(16):
        np.testing.assert_array_equal(counts(merged[:budget], label, 4), proportional_allocation(sizes, budget))
    # Orders truncated at the shares of budget 7 merge to exactly the first 7 rows.
    share = proportional_allocation(sizes, 7)
    np.testing.assert_array_equal(interleave_proportional([g[:a] for g, a in zip(groups, share)], sizes), merged[:7])


# ---------------------------------------------------------------- exactness

@pytest.mark.parametrize("graph", ["symmetric", "directed"])
def test_one_partition_local_equals_d2_order(data, graph):
    x, s = data
    ref = d2_order(s, x, k=7, graph=graph, gamma_reverse=0.5, index="exact")
    got = d2_partitioned_order(s, x, n_partitions=1, k=7, graph=graph, gamma_reverse=0.5, index="exact")
    np.testing.assert_array_equal(got.order, ref.order)
    np.testing.assert_array_equal(got.ranks, ref.ranks)
    np.testing.assert_array_equal(got.forward_scores, ref.forward_scores)
    part = d2_partitioned_order(s, x, n_partitions=1, k=7, graph=graph, gamma_reverse=0.5, budget=200)
    np.testing.assert_array_equal(part.order, ref.order[:200])


@pytest.mark.parametrize("graph", ["symmetric", "directed"])
def test_global_mode_forward_equals_global_d2(data, graph):
    x, s = data
    nb = knn_graph(x, 8)
    ref = d2_order(s, neighbors=nb, graph=graph)
    one = d2_partitioned_order(s, x, n_partitions=1, neighbours="global", global_graph=nb, graph=graph)
    np.testing.assert_array_equal(one.order, ref.order)
    four = d2_partitioned_order(s, x, n_partitions=4, neighbours="global", global_graph=nb, graph=graph)
    # Forward passing uses every edge, so forward scores are those of global D2, bit for bit.
    np.testing.assert_array_equal(four.forward_scores, ref.forward_scores)


def slow_halo(s, x, own, halo, k, gamma_f, gamma_r):
    """Dense halo-mode D2: symmetric kNN graph over own+halo rows, forward, then the argmax greedy
    over all of them, where a halo row on top is skipped (not selected) but lowers its neighbours."""
    nodes = np.union1d(own, halo)
    d = np.sqrt(((x[nodes, None, :].astype(np.float64) - x[None, nodes, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    edge = np.full(d.shape, np.nan)
    for i in range(len(nodes)):
        for j in np.lexsort((np.arange(len(nodes)), d[i]))[:k]:
            edge[i, j] = edge[j, i] = d[i, j]
    w = np.exp(-np.float32(gamma_f) * edge.astype(np.float32))
    support = np.maximum(s[nodes].astype(np.float32), np.float32(1e-7))
    forward = s[nodes].copy()
    for i in range(len(nodes)):
        for j in range(len(nodes)):
            if not np.isnan(edge[i, j]):
                forward[i] += float(w[i, j] * support[j])
    is_own = np.isin(nodes, own)
    values = forward.copy()
    picks = []
    for _ in range(len(nodes)):
        i = int(np.argmax(values))
        if is_own[i]:
            picks.append(nodes[i])
        v, values[i] = values[i], -np.inf
        for j in np.flatnonzero(~np.isnan(edge[i])):
            if np.isfinite(values[j]):
                values[j] -= float(np.exp(-np.float32(gamma_r) * np.float32(edge[i, j]))) * v
    return np.array(picks), forward[is_own]


def test_halo_mode_matches_dense_reference():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    s = rng.random(60)
    own, halo = np.arange(0, 60, 2), np.arange(1, 40, 2)
    result = run_partition(s, x, own, neighbours="halo", halo_rows=halo, k=4, gamma_reverse=0.7, index="exact")
    picks, forward = slow_halo(s, x, own, halo, 4, 1.0, 0.7)
    np.testing.assert_array_equal(result.order, picks)
    np.testing.assert_allclose(result.forward_scores, forward, rtol=1e-6)
    part = run_partition(s, x, own, neighbours="halo", halo_rows=halo, k=4, gamma_reverse=0.7, budget=11)
    np.testing.assert_array_equal(part.order, picks[:11])
    # No halo rows: the same as local mode, i.e. d2_order on the partition.
    local = run_partition(s, x, own, neighbours="local", k=4, index="exact")
    np.testing.assert_array_equal(run_partition(s, x, own, neighbours="halo", halo_rows=[], k=4).order, local.order)


@pytest.mark.parametrize("neighbours", MODES)
def test_separated_blobs_equal_classwise_d2_with_proportional_budget(blobs, neighbours):
    x, s, cluster = blobs
    plan = plan_partitions(x, 4, seed=0)
    # k-means finds the blobs: partitions are the clusters, relabelled.
    assert len(set(zip(plan.labels.tolist(), cluster.tolist()))) == 4
    budget = 321
    got = d2_partitioned_order(s, x, n_partitions=4, k=6, neighbours=neighbours, budget=budget, halo=0.5, seed=0)
    share = proportional_allocation(plan.sizes, budget)
    for p, rows in enumerate(plan.members):
        ref = d2_order(s[rows], x[rows], k=6, budget=int(share[p]))
        mine = got.order[plan.labels[got.order] == p]
        np.testing.assert_array_equal(mine, rows[ref.order])


# ---------------------------------------------------------------- properties of the merged order

def test_partitions_deterministic_under_seed(data):
    x, _ = data
    a = partition_rows(x, 6, seed=3)
    np.testing.assert_array_equal(a, partition_rows(x, 6, seed=3))
    assert a.dtype == np.int64 and a.shape == (1500,) and set(a.tolist()) <= set(range(6))
    assert not np.array_equal(a, partition_rows(x, 6, seed=4)) or len(np.unique(a)) == 6
    plan = plan_partitions(x, 6, seed=3, halo=0.2)
    np.testing.assert_array_equal(plan.labels, a)
    for p, halo in enumerate(plan.halos):
        assert len(halo) <= np.ceil(0.2 * plan.sizes[p]) and not (plan.labels[halo] == p).any()


@pytest.mark.parametrize("neighbours", MODES)
def test_every_row_ranked_once_budgets_proportional_prefix_consistent(data, neighbours):
    x, s = data
    kwargs = dict(n_partitions=5, k=6, neighbours=neighbours, halo=0.3, seed=1)
    full = d2_partitioned_order(s, x, **kwargs)
    np.testing.assert_array_equal(np.sort(full.order), np.arange(1500))
    np.testing.assert_array_equal(full.ranks[full.order], np.arange(1500))
    assert np.isfinite(full.forward_scores).all()
    plan = plan_partitions(x, 5, seed=1)
    sizes = plan.sizes
    for budget in (1, 7, 150, 450, 751, 1499):
        got = counts(full.order[:budget], plan.labels, 5)
        assert ((budget * sizes) // 1500 <= got).all() and (got <= -(-budget * sizes // 1500)).all()
        np.testing.assert_array_equal(got, plan.budgets(budget))
    for budget in (0, 150, 751):
        part = d2_partitioned_order(s, x, budget=budget, **kwargs)
        np.testing.assert_array_equal(part.order, full.order[:budget])
        assert (part.ranks >= 0).sum() == budget


def test_given_partitions_and_rank_split_equal_single_call(data):
    x, s = data
    labels = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    whole = d2_partitioned_order(s, x, partitions=labels, k=5, neighbours="halo", halo=0.2, budget=900)
    plan = plan_partitions(x, partitions=labels, halo=0.2)
    gathered = []
    for rank in range(3):  # three "ranks", gathered in any order
        gathered = run_partitions_for_rank(plan, s, x, rank=rank, world_size=3, neighbours="halo", k=5,
                                           budget=900) + gathered
    assert partitions_for_rank(4, 1, 3) == [1]
    merged = merge_partitions(gathered, n=1500)
    np.testing.assert_array_equal(merged.order, whole.order)
    np.testing.assert_array_equal(merged.forward_scores, whole.forward_scores)
    with pytest.raises(InvalidValuesError, match="every row"):
        merge_partitions(gathered[1:], n=1500)


def test_num_proc_two_identical_to_one(data):
    x, s = data
    kwargs = dict(n_partitions=4, k=6, neighbours="halo", halo=0.25, budget=1000, seed=2)
    one = d2_partitioned_order(s, x, num_proc=1, **kwargs)
    two = d2_partitioned_order(s, x, num_proc=2, **kwargs)
    np.testing.assert_array_equal(two.order, one.order)
    np.testing.assert_array_equal(two.forward_scores, one.forward_scores)


# ---------------------------------------------------------------- errors

def test_bad_parameters_raise(data):
    x, s = data
    x, s = x[:50], s[:50]
    call = lambda **kw: d2_partitioned_order(s, x, **{"n_partitions": 2, **kw})  # noqa: E731
    for value in (0, 51, 1.5, True):
        with pytest.raises(InvalidParameterError, match="n_partitions"):
            call(n_partitions=value)
    with pytest.raises(InvalidParameterError, match="n_partitions"):
        d2_partitioned_order(s, x)
    with pytest.raises(InvalidParameterError, match="neighbours"):
        call(neighbours="ring")
    with pytest.raises(InvalidParameterError, match="halo"):
        call(neighbours="halo", halo=-0.1)
    with pytest.raises(InvalidParameterError, match="num_proc"):
        call(num_proc=0)
    with pytest.raises(InvalidParameterError, match="budget"):
        call(budget=51)
    with pytest.raises(InvalidParameterError, match="gamma_reverse"):
        call(gamma_reverse=-1)
    with pytest.raises(InvalidParameterError, match="graph"):
        call(graph="undirected")
    with pytest.raises(InvalidParameterError, match="index"):
        call(index="annoy")
    with pytest.raises(InvalidParameterError, match="global_graph"):
        call(global_graph=knn_graph(x, 3))
    with pytest.raises(InvalidParameterError, match="partitions"):
        call(partitions=np.r_[np.zeros(49, int), [5]])
    with pytest.raises(InvalidValuesError, match="rows"):
        d2_partitioned_order(s, x[:40], n_partitions=2)
    with pytest.raises(InvalidValuesError, match="NaN"):
        d2_partitioned_order(np.r_[s[:-1], np.nan], x, n_partitions=2)
    with pytest.raises(InvalidParameterError, match="halo_rows"):
        run_partition(s, x, np.arange(10), neighbours="halo")
    with pytest.raises(InvalidParameterError, match="global_graph"):
        run_partition(s, x, np.arange(10), neighbours="global")
    with pytest.raises(InvalidValuesError, match="overlaps"):
        run_partition(s, x, np.arange(10), neighbours="halo", halo_rows=[9, 10])
    with pytest.raises(InvalidValuesError, match="repeated"):
        run_partition(s, x, [1, 1, 2])
    with pytest.raises(InvalidParameterError, match="rank"):
        partitions_for_rank(4, 2, 2)
    with pytest.raises(InvalidParameterError, match="n_partitions"):
        partition_rows(x, 0)
