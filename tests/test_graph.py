"""Tests of hf_d2prune.graph against brute-force numpy references."""

from pathlib import Path

import numpy as np
import pytest

from hf_d2prune.errors import InvalidParameterError, InvalidValuesError
from hf_d2prune.graph import RowBlocks, estimate_memory, knn_graph, recall_at_k

DATA = Path(__file__).parent / "data" / "d2_reference"


def brute_force_knn(x, k):
    x = x.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: lowest id
    return idx, np.take_along_axis(d, idx, 1)


@pytest.fixture(scope="module")
def sms():
    return np.load(DATA / "sms_symmetric" / "embeddings.npy")


def test_exact_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    idx, dist = knn_graph(x, 7, index="exact")
    ref_idx, ref_dist = brute_force_knn(x, 7)
    assert idx.dtype == np.int64 and dist.dtype == np.float32 and idx.shape == (300, 7)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-6)


def test_distances_are_euclidean_not_squared():
    x = np.array([[0, 0], [3, 4], [0, 10]], dtype=np.float32)
    idx, dist = knn_graph(x, 1)
    assert idx.ravel().tolist() == [1, 0, 1]
    assert dist.ravel().tolist() == [5.0, 5.0, pytest.approx(np.hypot(3, 6))]


def test_self_excluded_by_id_with_duplicates():
    # Rows 0..3 are identical: each row's neighbours are the other three, never itself.
    x = np.array([[1, 1]] * 4 + [[5, 5], [6, 6]], dtype=np.float32)
    idx, dist = knn_graph(x, 3, index="exact")
    for row in range(4):
        assert sorted(idx[row].tolist()) == [i for i in range(4) if i != row]
        assert (dist[row] == 0).all()
    assert (idx != np.arange(6)[:, None]).all()


def test_self_excluded_by_id_approximate_index():
    x = np.repeat(np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32), 3, axis=0)
    for index in ("hnsw", "ivf"):
        idx, _ = knn_graph(x, 2, index=index, nlist=4, nprobe=4)
        assert (idx != np.arange(len(x))[:, None]).all()


def test_exact_ties_lowest_id_first():
    x = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)
    idx, dist = knn_graph(x, 4)
    assert idx[0].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(dist[0], 1.0)


def test_block_size_invariance(sms):
    a = knn_graph(sms[:1000], 5, block_size=4096)
    b = knn_graph(sms[:1000], 5, block_size=77)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_dtype_conversion_float64_and_float16(sms):
    x = sms[:500]
    ref = knn_graph(x, 5)
    np.testing.assert_array_equal(knn_graph(x.astype(np.float64), 5)[0], ref[0])
    idx16, _ = knn_graph(x.astype(np.float16), 5)
    assert recall_at_k(idx16, ref[0]) > 0.9


def test_hnsw_recall_on_sentence_embeddings(sms):
    exact, _ = knn_graph(sms, 10, index="exact")
    approx, dist = knn_graph(sms, 10, index="hnsw")
    assert recall_at_k(approx, exact) >= 0.95
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_ivf_recall_on_sentence_embeddings(sms):
    exact, _ = knn_graph(sms, 10, index="exact")
    approx, _ = knn_graph(sms, 10, index="ivf", nprobe=64)
    assert recall_at_k(approx, exact) >= 0.95


def test_ivf_deterministic_under_seed(sms):
    a = knn_graph(sms[:2000], 5, index="ivf", seed=3)
    b = knn_graph(sms[:2000], 5, index="ivf", seed=3)
    np.testing.assert_array_equal(a[0], b[0])


def test_cosine_is_l2_of_normalised_vectors():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8)).astype(np.float32) * rng.uniform(0.1, 10, size=(200, 1)).astype(np.float32)
    idx, dist = knn_graph(x, 5, metric="cosine")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref_idx, ref_dist = brute_force_knn(xn, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    cos = np.einsum("id,ikd->ik", xn, xn[idx])
    np.testing.assert_allclose(dist, np.sqrt(np.maximum(2 - 2 * cos, 0)), atol=1e-5)


def test_k_out_of_range_names_k_and_n():
    x = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(InvalidParameterError, match=r"k=5.*n=5"):
        knn_graph(x, 5)
    with pytest.raises(InvalidParameterError, match="k"):
        knn_graph(x, 0)


def test_nan_error_names_rows():
    x = np.ones((10, 3), dtype=np.float32)
    x[4, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(InvalidValuesError, match=r"2 rows \(first: 4, 7\)"):
        knn_graph(x, 2)


def test_cosine_zero_vector_error():
    x = np.ones((4, 2), dtype=np.float32)
    x[2] = 0
    with pytest.raises(InvalidValuesError, match="first: 2"):
        knn_graph(x, 1, metric="cosine")


def test_estimate_memory():
    est = estimate_memory(1_000_000, 384, k=10, index="hnsw")
    assert est["embeddings"] == 1_000_000 * 384 * 4
    assert est["graph"] == 1_000_000 * 10 * 12
    assert est["total"] == sum(v for key, v in est.items() if key != "total")
    assert "GiB" in str(est)
    assert estimate_memory(1000, 8, dtype="float64")["conversion"] == 1000 * 8 * 4


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2], [0, 3]]), np.array([[2, 1], [0, 2]])) == 0.75
    with pytest.raises(InvalidValuesError):
        recall_at_k(np.zeros((2, 2)), np.zeros((2, 3)))


# ----------------------------------------------------------------------------- row blocks

def _split(x, sizes):
    bounds = np.cumsum([0] + list(sizes))
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def test_row_blocks_reads_ranges_and_ids_across_blocks():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    rb = RowBlocks(_split(x, [3, 1, 6]))
    assert rb.shape == (10, 4)
    np.testing.assert_array_equal(rb.rows(2, 7), x[2:7])
    assert np.shares_memory(rb.rows(4, 9), x)  # inside one float32 block: a view
    ids = np.array([[9, 0, 3], [3, 3, 5]])
    np.testing.assert_array_equal(rb.take(ids), x[ids])
    np.testing.assert_array_equal(rb.dense(), x)
    np.testing.assert_array_equal(rb.subset(np.array([1, 4, 8])).dense(), x[[1, 4, 8]])
    assert rb.subset(np.arange(10)) is rb


def test_row_blocks_name_the_global_row_with_nan():
    x = np.ones((10, 3), dtype=np.float32)
    x[7, 1] = np.nan
    with pytest.raises(InvalidValuesError, match=r"1 row \(first: 7\)"):
        knn_graph(_split(x, [5, 5]), 2)


def test_blocks_give_the_graph_of_the_whole_matrix(sms):
    import faiss

    x = sms[:1500]
    blocks = _split(x, [700, 1, 500, 299])
    threads = faiss.omp_get_max_threads()
    for index in ("exact", "hnsw", "ivf"):
        faiss.omp_set_num_threads(1)  # bit-identical approximate builds
        try:
            a = knn_graph(x, 6, index=index, nlist=8)
            b = knn_graph(blocks, 6, index=index, nlist=8)
        finally:
            faiss.omp_set_num_threads(threads)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_float16_blocks_are_converted_block_by_block(sms):
    x16 = sms[:1000].astype(np.float16)
    whole = knn_graph(x16.astype(np.float32), 5, index="exact")
    blocks = knn_graph(_split(x16, [400, 600]), 5, index="exact")
    np.testing.assert_array_equal(whole[0], blocks[0])


@pytest.mark.parametrize("storage", ["flat", "fp16", "sq8"])
def test_hnsw_storage_recall_and_exact_distances(sms, storage):
    exact, _ = knn_graph(sms, 10, index="exact")
    approx, dist = knn_graph(sms, 10, index="hnsw", storage=storage)
    assert recall_at_k(approx, exact) >= 0.95
    # whatever the storage, the distances of the neighbours found are exact
    x = sms.astype(np.float64)
    true = np.sqrt(((x[approx] - x[:, None, :]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, true, rtol=0, atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_unknown_storage_is_refused(sms):
    with pytest.raises(InvalidParameterError, match="storage"):
        knn_graph(sms[:50], 3, index="hnsw", storage="pq")


def test_estimate_memory_storage_and_blocks():
    flat = estimate_memory(1_000_000, 384, index="hnsw", storage="flat")
    fp16 = estimate_memory(1_000_000, 384, index="hnsw", storage="fp16")
    assert flat["index"] - fp16["index"] == 1_000_000 * 384 * 2
    assert estimate_memory(10_000, 384, index="exact", blocks=3)["conversion"] == 10_000 * 384 * 4
    assert estimate_memory(10_000, 384, index="exact")["conversion"] == 0
