"""Tests of the baseline selectors (random, top-k, CCS, Moderate-DS, k-center)."""

from pathlib import Path

import numpy as np
import pytest

from hf_d2prune.errors import InvalidParameterError
from hf_d2prune.selection._budget import equal_allocation
from hf_d2prune.selection.baselines import (
    ccs_order, kcenter_order, moderate_order, random_order, topk_order,
)

DATA = Path(__file__).parent / "data" / "d2_reference"


@pytest.fixture(scope="module")
def synth():
    folder = DATA / "synth2k_classwise"
    return np.load(folder / "embeddings.npy"), np.load(folder / "labels.npy"), np.load(folder / "scores.npy")


def test_random_order_deterministic_permutation():
    a, b, c = random_order(100, seed=1), random_order(100, seed=1), random_order(100, seed=2)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    np.testing.assert_array_equal(np.sort(a.order), np.arange(100))
    np.testing.assert_array_equal(a.ranks[a.order], np.arange(100))


def test_topk_order_stable_ties():
    s = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert topk_order(s).order.tolist() == [1, 4, 0, 2, 3]
    assert topk_order(s, hardest=False).order.tolist() == [3, 0, 2, 1, 4]


def ccs_bins(scores, n_bins):
    """Obvious per-row binning: bin b holds low + b·w <= s < low + (b+1)·w, the max in the last."""
    low, high = scores.min(), scores.max()
    width = (high - low) / n_bins
    bins = np.empty(len(scores), dtype=int)
    for i, s in enumerate(scores):
        b = int((s - low) / width) if width > 0 else 0
        bins[i] = min(b, n_bins - 1)
    return bins


def test_ccs_prefix_property_and_bins(synth):
    _, _, scores = synth
    aum = np.random.default_rng(0).normal(size=len(scores))
    result = ccs_order(scores, cutoff_scores=aum, hard_cutoff=0.1, n_bins=50, seed=0)
    cut = np.argsort(aum, kind="stable")[:200]
    assert set(np.flatnonzero(result.ranks == -1)) == set(cut)
    keep = np.setdiff1d(np.arange(len(scores)), cut)
    bins = np.full(len(scores), -1)
    bins[keep] = ccs_bins(scores[keep], 50)
    sizes = np.bincount(bins[keep], minlength=50)
    for budget in (0, 1, 49, 50, 51, 300, 1000, 1799, 1800):
        chosen = bins[result.order[:budget]]
        np.testing.assert_array_equal(np.bincount(chosen, minlength=50), equal_allocation(sizes, budget))


def test_ccs_deterministic_and_seed_matters(synth):
    _, _, scores = synth
    a = ccs_order(scores, hard_cutoff=0.0, seed=4)
    b = ccs_order(scores, hard_cutoff=0.0, seed=4)
    c = ccs_order(scores, hard_cutoff=0.0, seed=5)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    assert len(a.order) == len(scores)


def test_ccs_without_cutoff_scores_drops_hardest():
    s = np.arange(20.0)
    result = ccs_order(s, hard_cutoff=0.1, n_bins=4)
    assert np.flatnonzero(result.ranks == -1).tolist() == [18, 19]


def test_ccs_constant_scores_single_bin():
    result = ccs_order(np.ones(10), hard_cutoff=0.0, seed=0)
    np.testing.assert_array_equal(np.sort(result.order), np.arange(10))


def test_moderate_band_around_median(synth):
    x, labels, _ = synth
    result = moderate_order(x, labels)
    n = len(labels)
    centres = {c: np.median(x[labels == c], axis=0) for c in np.unique(labels)}
    distance = np.array([np.linalg.norm(x[i] - centres[labels[i]]) for i in range(n)])
    rank = np.empty(n, dtype=int)
    rank[np.argsort(distance, kind="stable")] = np.arange(n)
    for keep in (0.1, 0.3, 0.5, 0.9):
        budget = int(keep * n)
        band = rank[result.order[:budget]]
        # every prefix is a contiguous band of distance ranks centred on the median
        assert band.max() - band.min() + 1 == budget
        assert abs((band.min() + band.max()) / 2 - (n - 1) / 2) <= 0.5


def kcenter_brute(x, first, budget):
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    order = [first]
    for _ in range(budget - 1):
        nearest = d[:, order].min(axis=1)
        nearest[order] = -1
        order.append(int(np.argmax(nearest)))
    return order


def test_kcenter_farthest_point_property():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    result = kcenter_order(x, budget=60, seed=7, block_size=97)
    first = int(np.random.default_rng(7).integers(400))
    assert result.order.tolist() == kcenter_brute(x, first, 60)
    assert (result.ranks >= 0).sum() == 60


def test_kcenter_full_order_and_budget_guard():
    x = np.random.default_rng(1).normal(size=(50, 3))
    full = kcenter_order(x, seed=0)
    np.testing.assert_array_equal(np.sort(full.order), np.arange(50))
    np.testing.assert_array_equal(kcenter_order(x, budget=20, seed=0).order, full.order[:20])
    with pytest.raises(InvalidParameterError, match="budget"):
        kcenter_order(np.zeros((60_000, 1), dtype=np.float32))
    with pytest.raises(InvalidParameterError, match="budget"):
        kcenter_order(x, budget=51)


def test_kcenter_cosine_scale_invariant():
    x = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    scaled = x * np.random.default_rng(3).uniform(0.5, 5, size=(100, 1)).astype(np.float32)
    a = kcenter_order(x, budget=10, metric="cosine")
    b = kcenter_order(scaled, budget=10, metric="cosine")
    np.testing.assert_array_equal(a.order, b.order)
