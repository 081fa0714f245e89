"""Tests of D2 pruning: the authors' reference outputs, and a slow obvious implementation."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_d2prune.errors import InvalidParameterError, InvalidValuesError
from hf_d2prune.graph import knn_graph
from hf_d2prune.selection import _greedy
from hf_d2prune.selection._budget import equal_allocation, interleave_by_allocation, score_strata, split_rows
from hf_d2prune.selection.d2 import d2_adjacency, d2_forward, d2_order, d2_reverse_order

DATA = Path(__file__).parent / "data" / "d2_reference"
REFERENCE_GRAPH = DATA / "sms_directed_graph.npz"


def load_case(name):
    folder = DATA / name
    case = json.loads((folder / "params.json").read_text())
    for field in ("embeddings", "scores", "labels", "selected"):
        case[field] = np.load(folder / f"{field}.npy")
    if (folder / "order.npy").exists():
        case["order"] = np.load(folder / "order.npy")
    return case


def run_case(case):
    return d2_order(
        case["scores"], case["embeddings"], k=case["k"], gamma_forward=case["gamma_forward"],
        gamma_reverse=case["gamma_reverse"], graph=case["graph"],
        labels=case["labels"] if case["class_wise"] else None, budget=case["keep"],
    )


# ---------------------------------------------------------------- reference outputs

def test_reference_sms_symmetric_identical_order():
    case = load_case("sms_symmetric")
    np.testing.assert_array_equal(run_case(case).order, case["order"])


def test_reference_sms_directed():
    # The reference's directed graph was computed in float32 (faiss-style), so among rows that
    # are near-duplicates (distances equal to the last float32 bit) its neighbour choice and
    # rounding differ from any exact computation. The first 466 picks are identical, the first
    # divergence is a pick between two near-duplicate rows, and the selected sets differ by one.
    case = load_case("sms_directed")
    order = run_case(case).order
    np.testing.assert_array_equal(order[:466], case["order"][:466])
    assert len(np.intersect1d(order, case["selected"])) >= len(case["selected"]) - 1


@pytest.mark.parametrize("name", ["synth2k_symmetric", "synth2k_directed"])
def test_reference_synth2k_overlap(name):
    case = load_case(name)
    order = run_case(case).order
    assert len(order) == case["keep"]
    assert len(np.intersect1d(order, case["selected"])) >= 0.97 * len(case["selected"])


def test_reference_synth2k_symmetric_identical_order():
    case = load_case("synth2k_symmetric")
    np.testing.assert_array_equal(run_case(case).order, case["order"])


def test_reference_classwise_identical_set():
    case = load_case("synth2k_classwise")
    np.testing.assert_array_equal(np.sort(run_case(case).order), case["selected"])


# ---------------------------------------------------------------- slow obvious reference

def slow_d2(scores, indices, distances, gamma_f, gamma_r, graph, budget):
    """O(N·n) D2 on a dense adjacency, as written in the paper + reference code."""
    n = len(scores)
    w = np.full((n, n), np.nan)  # distance per edge, NaN = no edge
    for i in range(n):
        for j, d in zip(indices[i], distances[i]):
            w[i, j] = d if np.isnan(w[i, j]) else min(w[i, j], d)
            if graph == "symmetric":
                w[j, i] = w[i, j] if np.isnan(w[j, i]) else min(w[j, i], d)
    d32 = w.astype(np.float32)
    s32 = np.asarray(scores, dtype=np.float32)
    support = np.maximum(s32, np.float32(1e-7)) if graph == "symmetric" else s32
    forward = np.asarray(scores, dtype=np.float64).copy()
    for i in range(n):
        for j in range(n):
            if not np.isnan(w[i, j]):
                forward[i] += float(np.exp(-np.float32(gamma_f) * d32[i, j]) * support[j])
    values = forward.copy()
    picked = np.zeros(n, bool)
    order = []
    for _ in range(budget):
        i = int(np.argmax(np.where(picked, -np.inf, values)))  # first max = lowest id
        order.append(i)
        picked[i] = True
        v = values[i]
        for j in range(n):
            if not np.isnan(w[i, j]) and not picked[j]:
                values[j] -= float(np.exp(-np.float32(gamma_r) * d32[i, j])) * v
    return forward, np.array(order)


@st.composite
def graphs(draw):
    n = draw(st.integers(2, 25))
    k = draw(st.integers(1, min(4, n - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    indices = np.array([rng.choice([j for j in range(n) if j != i], size=k, replace=False) for i in range(n)])
    # few distinct distances and scores: many exact ties
    distances = rng.choice([0.0, 0.5, 1.0, 2.0], size=(n, k)).astype(np.float32)
    scores = rng.choice([-1.0, 0.0, 0.5, 1.0, 3.0], size=n).astype(np.float32)
    return scores, indices, distances


@settings(max_examples=150, deadline=None)
@given(graphs(), st.sampled_from(["symmetric", "directed"]), st.sampled_from([0.0, 0.5, 1.0]),
       st.sampled_from(["numba", "python"]))
def test_heap_matches_slow_reference(g, graph, gamma_r, backend):
    if backend == "numba" and not _greedy.HAVE_NUMBA:
        pytest.skip("numba not installed")
    scores, indices, distances = g
    forward_ref, order_ref = slow_d2(scores, indices, distances, 1.0, gamma_r, graph, len(scores))
    forward = d2_forward(scores, indices, distances, gamma=1.0, graph=graph)
    np.testing.assert_allclose(forward, forward_ref, rtol=1e-12)
    indptr, nbrs, dist = d2_adjacency(indices, distances, graph=graph)
    weights = np.exp(-np.float32(gamma_r) * dist.astype(np.float32)).astype(np.float64)
    order = _greedy.reverse_greedy(forward, indptr, nbrs, weights, len(scores), backend=backend)
    np.testing.assert_array_equal(order, order_ref)
    np.testing.assert_array_equal(
        d2_reverse_order(forward, indices, distances, gamma=gamma_r, graph=graph), order_ref)


def test_numba_and_python_backends_identical():
    if not _greedy.HAVE_NUMBA:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    idx, dist = knn_graph(x, 6)
    s = rng.random(3000)
    for graph in ("symmetric", "directed"):
        indptr, nbrs, d = d2_adjacency(idx, dist, graph=graph)
        fw = d2_forward(s, idx, dist, graph=graph)
        w = np.exp(-d)
        a = _greedy.reverse_greedy(fw, indptr, nbrs, w, 3000, backend="numba")
        b = _greedy.reverse_greedy(fw, indptr, nbrs, w, 3000, backend="python")
        np.testing.assert_array_equal(a, b)


def test_budget_is_prefix_of_full_order():
    case = load_case("synth2k_symmetric")
    full = d2_order(case["scores"], case["embeddings"], k=5)
    part = d2_order(case["scores"], case["embeddings"], k=5, budget=300)
    np.testing.assert_array_equal(part.order, full.order[:300])
    assert (part.ranks == -1).sum() == 1700
    np.testing.assert_array_equal(np.sort(full.order), np.arange(2000))
    assert full.ranks[full.order[17]] == 17


def test_precomputed_neighbors_equal_embeddings_path():
    case = load_case("synth2k_directed")
    nb = knn_graph(case["embeddings"], 5)
    a = d2_order(case["scores"], case["embeddings"], k=5, graph="directed", budget=600)
    b = d2_order(case["scores"], neighbors=nb, graph="directed", budget=600)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.forward_scores, b.forward_scores)


# ---------------------------------------------------------------- class-wise

def test_allocation_monotone_and_interleave_prefix_exact():
    rng = np.random.default_rng(0)
    for sizes in ([1, 5, 5], [2, 2, 10], [0, 3, 3, 7], list(rng.integers(0, 12, size=8)), [4]):
        sizes = np.array(sizes)
        groups = []
        start = 0
        for size in sizes:
            groups.append(np.arange(start, start + size))
            start += size
        merged = interleave_by_allocation(groups, sizes)
        group_of = np.repeat(np.arange(len(sizes)), sizes)
        previous = np.zeros(len(sizes), dtype=np.int64)
        for budget in range(sizes.sum() + 1):
            alloc = equal_allocation(sizes, budget)
            assert alloc.sum() == budget and (alloc <= sizes).all()
            assert (alloc >= previous).all()  # monotone: one group grows by one
            previous = alloc
            np.testing.assert_array_equal(np.bincount(group_of[merged[:budget]], minlength=len(sizes)), alloc)


def test_classwise_prefix_property():
    case = load_case("synth2k_classwise")
    kwargs = dict(k=5, gamma_forward=1.0, gamma_reverse=0.1, labels=case["labels"])
    full = d2_order(case["scores"], case["embeddings"], **kwargs)
    assert len(full.order) == 2000
    for budget in (1, 10, 123, 600, 1999):
        direct = d2_order(case["scores"], case["embeddings"], budget=budget, **kwargs)
        np.testing.assert_array_equal(direct.order, full.order[:budget])
        # and the direct per-class selection: each class's first picks by its own D2
        counts = equal_allocation(np.bincount(case["labels"]), budget)
        np.testing.assert_array_equal(np.bincount(case["labels"][full.order[:budget]], minlength=10), counts)


def test_classwise_runs_d2_inside_each_class():
    case = load_case("synth2k_classwise")
    labels, scores, x = case["labels"], case["scores"], case["embeddings"]
    full = d2_order(scores, x, k=5, gamma_reverse=0.1, labels=labels)
    rows = np.flatnonzero(labels == 3)
    inside = d2_order(scores[rows], x[rows], k=5, gamma_reverse=0.1)
    np.testing.assert_array_equal(full.order[np.isin(full.order, rows)], rows[inside.order])


def test_classwise_small_classes_k_clamped_and_singletons():
    x = np.arange(12, dtype=np.float32).reshape(-1, 1)
    labels = np.array([0] + [1] * 3 + [2] * 8)
    result = d2_order(np.ones(12), x, k=10, labels=labels)
    assert sorted(result.order.tolist()) == list(range(12))
    assert result.order[:3].tolist().count(0) == 1  # the one-row class is taken in round 1


# ---------------------------------------------------------------- stratified D2

def test_one_stratum_is_plain_d2():
    case = load_case("synth2k_symmetric")
    for labels in (None, load_case("synth2k_classwise")["labels"]):
        plain = d2_order(case["scores"], case["embeddings"], k=5, gamma_reverse=0.1, labels=labels)
        one = d2_order(case["scores"], case["embeddings"], k=5, gamma_reverse=0.1, labels=labels, strata=1)
        np.testing.assert_array_equal(one.order, plain.order)
        np.testing.assert_array_equal(one.forward_scores, plain.forward_scores)


def test_strata_get_ccs_budgets_and_d2_runs_inside_each():
    case = load_case("synth2k_symmetric")
    scores, x = case["scores"] ** 3, case["embeddings"]  # skewed: strata of very different sizes
    full = d2_order(scores, x, k=5, gamma_reverse=0.1, strata=8)
    level = score_strata(scores, 8)
    sizes = np.bincount(level, minlength=8)
    assert sizes.min() > 1 and sizes.max() > 4 * sizes.min()
    for budget in (1, 9, 100, 777, 2000):
        # every prefix holds CCS's equal allocation over the strata ...
        np.testing.assert_array_equal(np.bincount(level[full.order[:budget]], minlength=8),
                                      equal_allocation(sizes, budget))
        np.testing.assert_array_equal(d2_order(scores, x, k=5, gamma_reverse=0.1, strata=8, budget=budget).order,
                                      full.order[:budget])
    for b in range(8):
        # ... and each stratum's rows come in the order of D2 run on that stratum alone
        rows = np.flatnonzero(level == b)
        inside = d2_order(scores[rows], x[rows], k=5, gamma_reverse=0.1)
        np.testing.assert_array_equal(full.order[level[full.order] == b], rows[inside.order])
        np.testing.assert_allclose(full.forward_scores[rows], inside.forward_scores)


def test_strata_keep_every_difficulty_level_at_small_budgets():
    # 40 hard rows (score 1) and 160 easy ones (score 0.1), interleaved in space: plain D2 spends
    # a small budget on hard rows only (narrow kernels); two strata give each level half of it.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    scores = np.where(np.arange(200) % 5 == 0, 1.0, 0.1)
    plain = d2_order(scores, x, k=5, gamma_forward=4.0, gamma_reverse=4.0)
    assert (scores[plain.order[:20]] == 1.0).all()
    strat = d2_order(scores, x, k=5, gamma_forward=4.0, gamma_reverse=4.0, strata=2)
    assert (scores[strat.order[:20]] == 1.0).sum() == 10


def test_strata_inside_classes_after_the_cutoff():
    case = load_case("synth2k_classwise")
    labels, scores, x = case["labels"], case["scores"], case["embeddings"]
    aum = np.random.default_rng(1).normal(size=2000)
    result = d2_order(scores, x, k=5, labels=labels, strata=4, hard_cutoff=0.1, cutoff_scores=aum)
    cut = np.argsort(aum, kind="stable")[:200]
    assert set(np.flatnonzero(result.ranks == -1)) == set(cut)
    keep = np.setdiff1d(np.arange(2000), cut)
    for budget in (10, 333, 1800):
        picked = result.order[:budget]
        np.testing.assert_array_equal(np.bincount(labels[picked], minlength=10),
                                      equal_allocation(np.bincount(labels[keep], minlength=10), budget))
    rows = keep[labels[keep] == 7]  # one class: strata of its own scores (after the cutoff), D2 inside
    inside = d2_order(scores[rows], x[rows], k=5, strata=4)
    np.testing.assert_array_equal(result.order[np.isin(result.order, rows)], rows[inside.order])


def test_score_strata_matches_ccs_bins():
    values = np.array([0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
    assert score_strata(values, 4).tolist() == [0, 0, 1, 2, 3, 3]
    assert score_strata(np.full(3, 2.0), 5).tolist() == [0, 0, 0]
    assert score_strata(np.zeros(0), 5).tolist() == []


def test_split_rows_keeps_each_groups_order_and_empty_groups():
    rows = np.array([7, 3, 9, 1, 4, 8])
    parts = split_rows(rows, np.array([2, 0, 2, 0, 2, 3]), 5)
    assert [part.tolist() for part in parts] == [[3, 1], [], [7, 9, 4], [8], []]


# ---------------------------------------------------------------- options and edge cases

def test_hard_cutoff_ranks_minus_one():
    case = load_case("synth2k_symmetric")
    aum = np.random.default_rng(0).normal(size=2000)
    result = d2_order(case["scores"], case["embeddings"], k=5, hard_cutoff=0.1, cutoff_scores=aum)
    cut = np.argsort(aum, kind="stable")[:200]
    assert set(np.flatnonzero(result.ranks == -1)) == set(cut)
    assert np.isnan(result.forward_scores[cut]).all()
    assert len(result.order) == 1800
    # D2 ran on the remaining rows' own graph
    keep = np.setdiff1d(np.arange(2000), cut)
    direct = d2_order(case["scores"][keep], case["embeddings"][keep], k=5)
    np.testing.assert_array_equal(result.order, keep[direct.order])


def test_hard_cutoff_floor_and_ties_by_index():
    x = np.arange(10, dtype=np.float32).reshape(-1, 1)
    result = d2_order(np.ones(10), x, k=2, hard_cutoff=0.25, cutoff_scores=np.zeros(10))
    assert np.flatnonzero(result.ranks == -1).tolist() == [0, 1]  # int(2.5) = 2, lowest ids


def test_constant_scores_pure_diversity():
    # two tight clusters: constant scores must alternate clusters first
    x = np.array([[0.0], [0.01], [0.02], [10.0], [10.01], [10.02]], dtype=np.float32)
    result = d2_order(np.ones(6), x, k=2, gamma_reverse=1.0)
    first_two = set(result.order[:2].tolist())
    assert len(first_two & {0, 1, 2}) == 1 and len(first_two & {3, 4, 5}) == 1


def test_single_row_and_two_rows():
    r = d2_order(np.array([0.3]), np.zeros((1, 4)))
    assert r.order.tolist() == [0] and r.ranks.tolist() == [0]
    assert r.forward_scores.tolist() == [pytest.approx(0.3)]
    r = d2_order(np.array([0.3, 0.5]), np.zeros((2, 4)), k=10)  # k clamped to 1
    assert r.order.tolist() == [1, 0]


def test_squared_kernel():
    idx = np.array([[1], [0]])
    dist = np.array([[2.0], [2.0]], dtype=np.float32)
    f = d2_forward(np.array([1.0, 1.0]), idx, dist, squared=True)
    np.testing.assert_allclose(f, 1 + np.exp(-4.0), rtol=1e-6)


def test_negative_scores_clamped_only_as_neighbours():
    idx = np.array([[1], [0]])
    dist = np.zeros((2, 1), dtype=np.float32)
    f = d2_forward(np.array([-2.0, 1.0]), idx, dist)
    np.testing.assert_allclose(f, [-2.0 + 1.0, 1.0 + 1e-7], rtol=1e-6)
    f = d2_forward(np.array([-2.0, 1.0]), idx, dist, graph="directed")
    np.testing.assert_allclose(f, [-1.0, -1.0])


def test_errors():
    x = np.zeros((5, 2), dtype=np.float32)
    s = np.ones(5)
    with pytest.raises(InvalidParameterError, match="budget"):
        d2_order(s, x, k=2, budget=6)
    with pytest.raises(InvalidParameterError, match="graph"):
        d2_order(s, x, graph="undirected")
    with pytest.raises(InvalidParameterError, match="gamma_forward"):
        d2_order(s, x, gamma_forward=-1)
    with pytest.raises(InvalidValuesError, match="first: 2"):
        d2_order(np.array([1, 1, np.nan, 1, 1.0]), x)
    with pytest.raises(InvalidValuesError, match="rows"):
        d2_order(s, np.zeros((4, 2)))
    with pytest.raises(InvalidParameterError, match="labels"):
        d2_order(s, neighbors=knn_graph(x + np.arange(5)[:, None], 2), labels=np.zeros(5))
    with pytest.raises(InvalidParameterError, match="strata"):
        d2_order(s, neighbors=knn_graph(x + np.arange(5)[:, None], 2), strata=2)
    with pytest.raises(InvalidParameterError, match="strata"):
        d2_order(s, x, k=2, strata=0)
    with pytest.raises(InvalidParameterError, match="hard_cutoff"):
        d2_order(s, x, k=2, hard_cutoff=1.5)
    with pytest.raises(InvalidValuesError, match="own id"):
        d2_forward(s, np.zeros((5, 1), dtype=int), np.zeros((5, 1)))


def test_reference_sms_directed_on_the_reference_graph():
    """Given the graph the reference ranked (tests/data/d2_reference/GRAPH.md), every pick matches."""
    case = load_case("sms_directed")
    graph = np.load(REFERENCE_GRAPH)
    result = d2_order(case["scores"], neighbors=(graph["indices"], graph["distances"]),
                      gamma_forward=case["gamma_forward"], gamma_reverse=case["gamma_reverse"],
                      graph="directed", budget=case["keep"])
    np.testing.assert_array_equal(result.order, case["order"])
