"""Embedding columns as numpy arrays: bulk, zero-copy where possible, and strict."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

import hf_d2prune  # noqa: F401
from hf_d2prune.arrays import column_array, embedding_blocks, embedding_matrix
from hf_d2prune.errors import ColumnNotFoundError, ColumnTypeError, InvalidValuesError
from hf_d2prune.validation import nonfinite_rows


def _fixed(X):
    return datasets.Dataset.from_dict(
        {"embedding": X, "label": np.arange(len(X))},
        features=datasets.Features({"embedding": datasets.Sequence(datasets.Value("float32"), length=X.shape[1]),
                                    "label": datasets.Value("int64")}),
    )


def test_single_chunk_is_a_zero_copy_view():
    X = np.random.default_rng(0).normal(size=(100, 7)).astype(np.float32)
    ds = _fixed(X)
    out = embedding_matrix(ds)
    np.testing.assert_array_equal(out, X)
    assert out.flags.c_contiguous and out.dtype == np.float32
    buffer_address = ds.data.column("embedding").chunks[0].values.buffers()[1].address
    assert out.__array_interface__["data"][0] == buffer_address


def test_indices_mapping_and_multiple_chunks_keep_row_order():
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    ds = datasets.concatenate_datasets([_fixed(X[:7]), _fixed(X[7:])])
    shuffled = ds.select([5, 19, 0, 8, 8])
    np.testing.assert_array_equal(embedding_matrix(shuffled), X[[5, 19, 0, 8, 8]])
    np.testing.assert_array_equal(embedding_matrix(ds.select(range(3, 12))), X[3:12])


def test_variable_length_lists_are_read_and_ragged_rows_named():
    ds = datasets.Dataset.from_dict({"embedding": [[1.0, 2.0], [3.0, 4.0]]})
    np.testing.assert_array_equal(embedding_matrix(ds), [[1, 2], [3, 4]])
    ragged = datasets.Dataset.from_dict({"embedding": [[1.0, 2.0], [3.0], [1.0, 1.0], [2.0]]})
    with pytest.raises(InvalidValuesError, match=r"unequal length.*2 rows \(first: 1, 3\)"):
        embedding_matrix(ragged)


def test_nan_rows_are_counted_and_named():
    X = np.ones((10, 4), np.float32)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(InvalidValuesError, match=r"NaN or inf in 2 rows \(first: 3, 7\)"):
        embedding_matrix(_fixed(X))


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_opposite_infinities_and_huge_values_are_named_without_numpy_warnings():
    """+inf and −inf in one block sum to NaN, and huge finite values overflow the sum: the check
    must name exactly the non-finite rows and let no RuntimeWarning reach the user."""
    X = np.full((6, 2), 1e308)
    X[1, 0], X[4, 1] = np.inf, -np.inf
    np.testing.assert_array_equal(nonfinite_rows(X), [1, 4])
    np.testing.assert_array_equal(nonfinite_rows(np.full((3, 2), 1e308)), [])
    np.testing.assert_array_equal(nonfinite_rows(np.full((3, 2), 3e38, dtype=np.float32)), [])  # the float32 sum overflows


def test_wrong_types_and_missing_columns():
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "embedding": [[1.0], None]})
    with pytest.raises(ColumnNotFoundError, match="'emb' not found; available: text, embedding"):
        embedding_matrix(ds, "emb")
    with pytest.raises(ColumnTypeError, match="'text' holds string"):
        embedding_matrix(ds, "text")
    with pytest.raises(InvalidValuesError, match=r"missing embeddings in 1 row \(first: 1\)"):
        embedding_matrix(ds)
    with pytest.raises(ColumnTypeError, match="numeric column"):
        column_array(ds, "text")


def test_column_array_respects_selection():
    ds = datasets.Dataset.from_dict({"score": [0.5, 1.5, 2.5, 3.5]}).select([3, 1])
    np.testing.assert_array_equal(column_array(ds, "score"), [3.5, 1.5])


def test_blocks_of_a_memory_mapped_dataset_are_views_of_the_file(tmp_path):
    X = np.random.default_rng(1).normal(size=(2500, 8)).astype(np.float32)
    _fixed(X).save_to_disk(str(tmp_path / "ds"))  # written in record batches of 1,000 rows
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    blocks = embedding_blocks(ds)
    assert [len(b) for b in blocks] == [len(c) for c in ds.data.column("embedding").chunks]
    assert len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate(blocks), X)
    addresses = [c.values.buffers()[1].address + c.values.offset * 4 for c in ds.data.column("embedding").chunks]
    assert [b.__array_interface__["data"][0] for b in blocks] == addresses  # no copy
    assert not any(b.flags.writeable for b in blocks)
    # D2 on the blocks equals D2 on one contiguous copy of the matrix
    ds = ds.add_column("score", np.random.default_rng(2).random(len(ds)).astype(np.float32))
    in_memory = datasets.Dataset.from_dict({"embedding": X, "score": ds["score"]})
    np.testing.assert_array_equal(ds.d2.coreset(score="score", k=5)["d2_rank"],
                                  in_memory.d2.coreset(score="score", k=5)["d2_rank"])


def test_float16_blocks_stay_float16():
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float16)
    ds = datasets.Dataset.from_dict({"embedding": X}, features=datasets.Features(
        {"embedding": datasets.Sequence(datasets.Value("float16"), length=4)}))
    blocks = embedding_blocks(ds)
    assert blocks[0].dtype == np.float16
    np.testing.assert_array_equal(np.concatenate(blocks), X)


def test_missing_rows_follow_selections_and_shuffles():
    from hf_d2prune.arrays import missing_rows

    ds = datasets.Dataset.from_dict({"text": ["a", None, "c", None, "e"], "n": [1, 2, 3, 4, 5]})
    assert missing_rows(ds, "text").tolist() == [1, 3]
    assert missing_rows(ds.select([4, 3, 0, 1]), "text").tolist() == [1, 3]
    assert missing_rows(ds.select([0, 2]), "text").tolist() == []
    assert missing_rows(ds, "n").tolist() == []
