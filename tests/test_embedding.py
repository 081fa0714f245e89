"""ds.d2.embed: values, caching, splits, images, and bad input."""

from __future__ import annotations

import time

import datasets
import numpy as np
import pytest

import hf_d2prune
from hf_d2prune import embedding as embedding_module
from hf_d2prune.errors import (
    ColumnNotFoundError,
    ColumnTypeError,
    InvalidParameterError,
    InvalidValuesError,
    ModelNotFoundError,
)


def _snapshot(ds):
    return ds._fingerprint, ds.to_dict(), ds.column_names


def test_text_embeddings_equal_sentence_transformers(sms, minilm):
    ds = sms.select(range(200))
    out = ds.d2.embed("text", batch_size=32)
    ours = out.d2.embeddings()
    theirs = minilm.encode(ds["text"], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert ours.shape == (200, 384)
    assert out.features["embedding"] == datasets.Sequence(datasets.Value("float32"), length=384)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert out["text"] == ds["text"] and out["label"] == ds["label"]


def test_paraphrase_is_nearer_than_unrelated_text():
    ds = datasets.Dataset.from_dict({"text": [
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Interest rates were raised by the central bank.",
    ]})
    X = ds.d2.embed("text").d2.embeddings()
    assert X[0] @ X[1] > 0.5 > X[0] @ X[2]


def test_none_and_empty_text_embed_as_empty_string(minilm):
    ds = datasets.Dataset.from_dict({"text": ["hello there", None, ""]})
    X = ds.d2.embed("text").d2.embeddings()
    empty = minilm.encode([""], normalize_embeddings=True)[0]
    np.testing.assert_allclose(X[1], empty, atol=1e-5)
    np.testing.assert_allclose(X[2], empty, atol=1e-5)


def test_identical_call_loads_from_cache_without_loading_the_model(sms, on_disk, monkeypatch):
    ds = on_disk(sms.select(range(300)))
    t0 = time.perf_counter()
    first = ds.d2.embed("text")
    first_time = time.perf_counter() - t0

    def fail(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a cached call")

    monkeypatch.setattr(embedding_module, "build_encoder", fail)
    t0 = time.perf_counter()
    second = ds.d2.embed("text")
    second_time = time.perf_counter() - t0
    assert second._fingerprint == first._fingerprint
    assert [f["filename"] for f in second.cache_files] == [f["filename"] for f in first.cache_files]
    assert first._fingerprint in first.cache_files[0]["filename"]
    np.testing.assert_array_equal(second.d2.embeddings(), first.d2.embeddings())
    assert second_time < first_time / 3
    assert second.d2.provenance == first.d2.provenance


@pytest.mark.parametrize("change", [
    {"normalize": False},
    {"output_column": "vec"},
    {"model": lambda texts: np.ones((len(texts), 3))},
])
def test_changed_argument_recomputes(sms, on_disk, change):
    ds = on_disk(sms.select(range(40)))
    base = ds.d2.embed("text")
    other = ds.d2.embed("text", **change)
    assert other._fingerprint != base._fingerprint
    column = change.get("output_column", "embedding")
    X = other.d2.embeddings(column)
    assert other.cache_files[0]["filename"] != base.cache_files[0]["filename"]
    if "normalize" in change:
        # all-MiniLM-L6-v2 ends in its own Normalize module, so raw vectors are unit length too.
        np.testing.assert_allclose(X, base.d2.embeddings(), atol=1e-5)
    elif "model" in change:
        np.testing.assert_allclose(X, 1 / np.sqrt(3), atol=1e-6)


def test_changed_column_recomputes(on_disk):
    ds = on_disk(datasets.Dataset.from_dict({"a": ["red apple", "green pear"], "b": ["fast car", "slow boat"]}))
    ea, eb = ds.d2.embed("a"), ds.d2.embed("b")
    assert ea._fingerprint != eb._fingerprint
    assert not np.allclose(ea.d2.embeddings(), eb.d2.embeddings())


def test_in_memory_module_fingerprint_follows_its_weights():
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))  # RGB 8x8 input
    ds = datasets.Dataset.from_dict({"image": [np.full((8, 8), i, np.uint8) for i in range(3)]},
                                    features=datasets.Features({"image": datasets.Array2D((8, 8), "uint8")}))
    a = ds.d2.embed("image", model=net, normalize=False)
    b = ds.d2.embed("image", model=net, normalize=False)
    with torch.no_grad():
        net[1].weight.add_(1.0)
    c = ds.d2.embed("image", model=net, normalize=False)
    assert a._fingerprint == b._fingerprint != c._fingerprint


def test_dataset_dict_applies_per_split(sms):
    dd = datasets.DatasetDict({"train": sms.select(range(20)), "test": sms.select(range(20, 30))})
    out = dd.d2.embed("text")
    assert isinstance(out, datasets.DatasetDict)
    assert {k: len(v) for k, v in out.items()} == {"train": 20, "test": 10}
    for split in ("train", "test"):
        np.testing.assert_allclose(out[split].d2.embeddings(), dd[split].d2.embed("text").d2.embeddings(), atol=1e-6)
    assert set(dd.d2.embeddings.__doc__.split()) >= {"Apply", "every", "split."}
    arrays = out.d2.embeddings()
    assert arrays["train"].shape == (20, 384)


def test_dataset_dict_error_names_the_split(sms):
    dd = datasets.DatasetDict({"train": sms.select(range(5)), "test": sms.select(range(5)).remove_columns("text")})
    with pytest.raises(ColumnNotFoundError, match="split 'test'.*'text' not found"):
        dd.d2.embed("text")


def test_image_column_with_small_torch_module():
    import torch

    digits = hf_d2prune.builtin.load_builtin("digits").select(range(50))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU())  # (B, 6, 6, 6) map -> pooled
    out = digits.d2.embed("image", model=net, normalize=False, batch_size=16)
    X = out.d2.embeddings()
    pixels = np.stack([np.asarray(img.convert("RGB"), np.float32) / 255 for img in digits["image"]])
    with torch.no_grad():
        expected = net(torch.from_numpy(pixels).permute(0, 3, 1, 2)).mean(dim=(2, 3)).numpy()
    assert X.shape == (50, 6)
    np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-6)


def test_image_column_with_default_efficientnet_lite0():
    digits = hf_d2prune.builtin.load_builtin("digits").select(range(12))
    out = digits.d2.embed("image", batch_size=12)
    X = out.d2.embeddings()
    direct = embedding_module.EfficientNetLite0Features("cpu")(digits["image"])
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    assert X.shape == (12, 1280)
    np.testing.assert_allclose(X, direct, atol=1e-5)
    assert out.d2.provenance[-1]["model"] == "efficientnet-lite0"


def test_normalize_flag_on_a_callable_model():
    ds = datasets.Dataset.from_dict({"x": [3.0, 0.5]})
    def f(xs):
        return np.stack([xs, np.zeros(len(xs))], axis=1) * 2

    np.testing.assert_allclose(ds.d2.embed("x", model=f, normalize=False).d2.embeddings(), [[6, 0], [1, 0]])
    np.testing.assert_allclose(ds.d2.embed("x", model=f).d2.embeddings(), [[1, 0], [1, 0]])


def test_callable_model_on_any_column():
    ds = datasets.Dataset.from_dict({"x": [1.0, 2.0, 3.0]})
    out = ds.d2.embed("x", model=lambda xs: np.stack([xs, np.square(xs)], axis=1), normalize=False)
    np.testing.assert_allclose(out.d2.embeddings(), [[1, 1], [2, 4], [3, 9]])


def _recording(seen):
    def f(values):
        seen.append(values)
        return np.asarray(values, dtype=np.float64).reshape(len(values), -1)[:, :3] + 1.0

    return f


@pytest.mark.parametrize("feature, values, shape", [
    (datasets.Array2D((2, 3), "uint8"), np.arange(24, dtype=np.uint8).reshape(4, 2, 3), (2, 3)),
    (datasets.Sequence(datasets.Value("float64"), length=3), np.linspace(0, 1, 12).reshape(4, 3), (3,)),
])
def test_callable_gets_fixed_shape_numeric_columns_as_numpy(feature, values, shape):
    ds = datasets.Dataset.from_dict({"x": values, "label": [0, 1, 0, 1]},
                                    features=datasets.Features({"x": feature, "label": datasets.Value("int64")}))
    seen: list = []
    out = ds.d2.embed("x", model=_recording(seen), model_fingerprint="first3", normalize=False)
    batch = seen[-1]
    assert isinstance(batch, np.ndarray) and batch.dtype == values.dtype and batch.shape == (4, *shape)
    np.testing.assert_array_equal(batch, values)
    np.testing.assert_allclose(out.d2.embeddings(), values.reshape(4, -1)[:, :3] + 1.0)
    # the result is unformatted like its input, and its fingerprint does not depend on the view
    assert out.format["type"] is None and isinstance(out[0]["x"], list)
    again = ds.d2.embed("x", model=_recording([]), model_fingerprint="first3", normalize=False)
    assert again._fingerprint == out._fingerprint


def test_callable_gets_the_users_format_and_lists_otherwise():
    ds = datasets.Dataset.from_dict({"x": np.ones((3, 2), dtype=np.float32), "ragged": [[1.0], [2.0, 3.0], []]})
    seen: list = []
    out = ds.with_format("torch").d2.embed("x", model=lambda v: (seen.append(v), v.numpy())[1], normalize=False)
    assert type(seen[-1]).__name__ == "Tensor" and out.format["type"] == "torch"
    seen.clear()
    ds.d2.embed("ragged", model=lambda v: (seen.append(v), np.array([[len(r), 1.0] for r in v]))[1])
    assert isinstance(seen[-1], list) and seen[-1][1] == [2.0, 3.0]


# ----------------------------------------------------------------------------- bad input

@pytest.fixture()
def guard_model_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the error must be raised before the model loads")

    monkeypatch.setattr(embedding_module, "build_encoder", fail)


def test_missing_column_lists_available(sms, guard_model_loading):
    before = _snapshot(sms.select(range(3)))
    ds = sms.select(range(3))
    with pytest.raises(ColumnNotFoundError, match=r"column 'txet' not found; available: text, label"):
        ds.d2.embed("txet")
    assert _snapshot(ds) == before


def test_numeric_columns_are_rejected(sms, guard_model_loading):
    ds = sms.select(range(3)).map(lambda r: {"length": len(r["text"])})
    with pytest.raises(ColumnTypeError, match=r"column 'label'.*ClassLabel.*text \(strings\) or images"):
        ds.d2.embed("label")
    with pytest.raises(ColumnTypeError, match=r"column 'length' holds int64 values.*pass model=<callable>"):
        ds.d2.embed("length")


def test_empty_dataset_is_rejected(guard_model_loading):
    ds = datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    with pytest.raises(InvalidValuesError, match="empty"):
        ds.d2.embed("text")


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_bad_batch_size(sms, guard_model_loading, bad):
    with pytest.raises(InvalidParameterError, match="batch_size"):
        sms.select(range(3)).d2.embed("text", batch_size=bad)


def test_unknown_model_says_how_to_provide_it(sms):
    ds = sms.select(range(3))
    before = _snapshot(ds)
    with pytest.raises(ModelNotFoundError, match="could not load text model 'no-such-org/no-such-model'.*offline"):
        ds.d2.embed("text", model="no-such-org/no-such-model")
    assert _snapshot(ds) == before


def test_output_column_cannot_overwrite_input(sms, guard_model_loading):
    with pytest.raises(InvalidParameterError, match="overwrite the input column"):
        sms.select(range(3)).d2.embed("text", output_column="text")


def test_missing_image_is_reported_before_the_model_loads(guard_model_loading):
    from PIL import Image

    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4)), None]},
                                    features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(ColumnTypeError, match=r"no image in 1 row \(first: 1\)"):
        ds.d2.embed("image")


def test_num_proc_gives_the_same_embeddings(sms):
    ds = sms.select(range(48))
    single = ds.d2.embed("text").d2.embeddings()
    multi = ds.d2.embed("text", num_proc=2, map_batch_size=12).d2.embeddings()
    np.testing.assert_allclose(multi, single, atol=1e-5)


def test_float16_embeddings_halve_storage_and_keep_the_selection(sms):
    ds = sms.select(range(400))
    full = ds.d2.embed("text")
    half = ds.d2.embed("text", dtype="float16")
    assert half.features["embedding"] == datasets.Sequence(datasets.Value("float16"), length=384)
    assert half._fingerprint != full._fingerprint
    assert half.data.nbytes < 0.6 * full.data.nbytes
    X16, X32 = half.d2.embeddings(), full.d2.embeddings()
    assert X16.dtype == np.float32
    np.testing.assert_allclose(X16, X32, atol=1e-3)
    ranks = {}
    for name, d in (("16", half), ("32", full)):
        scored = d.d2.score("prototype_distance").d2.coreset(score="prototype_distance", k=10)
        ranks[name] = np.asarray(scored["d2_rank"])
    kept16 = set(np.flatnonzero((ranks["16"] >= 0) & (ranks["16"] < 120)))
    kept32 = set(np.flatnonzero((ranks["32"] >= 0) & (ranks["32"] < 120)))
    assert len(kept16 & kept32) >= 0.9 * 120
    with pytest.raises(InvalidParameterError, match="dtype must be"):
        ds.d2.embed("text", dtype="int8")
