"""ds.d2.embed under torchrun: two CPU processes (gloo) each get the single-process result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

import hf_d2prune  # noqa: F401
from hf_d2prune import embedding as embedding_module
from hf_d2prune.distributed import launched, shard_bounds
from hf_d2prune.errors import InvalidParameterError

sys.path.insert(0, os.path.dirname(__file__))
from dist_embed_script import pixel_features  # noqa: E402

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digits(n: int = 301) -> datasets.Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = datasets.Features({"pixels": datasets.Sequence(datasets.Value("float32"), length=64),
                                  "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"pixels": (bunch.data[:n] / 16.0).astype(np.float32), "label": bunch.target[:n]},
                                      features=features)


@pytest.fixture(scope="module")
def launch(sms, tmp_path_factory):
    """Run tests/dist_embed_script.py in 2 processes on saved datasets; ``(data_dir, [rank0, rank1])``."""
    data = tmp_path_factory.mktemp("dist_embed_data")
    out = tmp_path_factory.mktemp("dist_embed_out")
    sms.select(range(300)).save_to_disk(str(data / "sms"))
    _digits().save_to_disk(str(data / "digits"))
    script = Path(__file__).with_name("dist_embed_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                          str(script), str(data), str(out)],
                         env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return data, [dict(np.load(out / f"rank{rank}.npz")) for rank in range(WORLD)]


@pytest.mark.slow
def test_every_process_gets_the_single_process_minilm_embeddings(launch, sms):
    _, ranks = launch
    reference = sms.select(range(300)).d2.embed("text", map_batch_size=64)
    expected = reference.d2.embeddings()
    for rank, got in enumerate(ranks):
        assert got["processes"] == WORLD
        assert got["sms_embedding"].shape == (300, 384)
        np.testing.assert_allclose(got["sms_embedding"], expected, atol=1e-5, rtol=0, err_msg=f"rank {rank}")
        # row order and the other columns are those of the input
        assert got["sms_text"].tolist() == reference["text"]
        assert got["sms_label"].tolist() == reference["label"]
        assert got["sms_columns"].tolist() == ["text", "label", "embedding"]
    np.testing.assert_array_equal(ranks[1]["sms_embedding"], ranks[0]["sms_embedding"])


@pytest.mark.slow
def test_uneven_shards_and_float16_equal_the_single_process_run_exactly(launch):
    _, ranks = launch
    digits = _digits()
    expected = digits.d2.embed("pixels", model=pixel_features).d2.embeddings()
    expected16 = digits.d2.embed("pixels", model=pixel_features, dtype="float16",
                                 output_column="emb16").d2.embeddings("emb16", dtype=np.float16)
    small = expected[:7]
    shuffled = datasets.Dataset.from_dict({"pixels": digits["pixels"]}).shuffle(seed=3)
    shuffled_expected = shuffled.d2.embed("pixels", model=pixel_features).d2.embeddings()
    for got in ranks:
        np.testing.assert_array_equal(got["digits_embedding"], expected)  # 151 + 150 rows
        np.testing.assert_array_equal(got["digits_again_embedding"], expected)
        np.testing.assert_array_equal(got["digits_pixels"], np.asarray(digits["pixels"], dtype=np.float32))
        assert got["digits_label"].tolist() == digits["label"]
        assert got["digits_columns"].tolist() == ["pixels", "label", "embedding"]
        assert str(got["digits_fp16_feature"]) == "float16"
        np.testing.assert_array_equal(got["digits_fp16"], expected16)
        # in memory: each process builds the column itself; 1 row on 2 processes leaves a shard empty
        np.testing.assert_array_equal(got["memory_embedding"], small)
        assert int(got["memory_cache_files"]) == 0
        np.testing.assert_array_equal(got["one_row_embedding"], small[:1])
        # a shuffled dataset (indices mapping): shards follow its row order, not the order on disk
        np.testing.assert_array_equal(got["shuffled_pixels"], np.asarray(shuffled["pixels"], dtype=np.float32))
        np.testing.assert_array_equal(got["shuffled_embedding"], shuffled_expected)


@pytest.mark.slow
def test_the_main_process_writes_one_cache_file_that_every_call_then_loads(launch, monkeypatch):
    data, ranks = launch
    for got in ranks:
        # every process returns the same dataset: the one file, with the same fingerprint
        assert got["sms_fingerprint"] == ranks[0]["sms_fingerprint"]
        assert got["sms_cache_files"].tolist() == [str(data / "sms" / f"cache-{ranks[0]['sms_fingerprint']}.arrow")]
        # an identical call in the launch loaded it without loading the model (the script checks that)
        assert got["sms_again_fingerprint"] == got["sms_fingerprint"]
        assert got["sms_again_cache_files"].tolist() == got["sms_cache_files"].tolist()
        np.testing.assert_array_equal(got["sms_again_embedding"], got["sms_embedding"])
        # the encoder ran once per batch of this process's shard, and not at all for the repeat call
        assert got["digits_calls"].tolist()[0] >= 4 and got["digits_calls"].tolist()[1] == 0
    # no per-process or temporary files: one cache file per embed call
    assert sorted(p.name for p in (data / "sms").glob("*.arrow")) == sorted(
        ["data-00000-of-00001.arrow", f"cache-{ranks[0]['sms_fingerprint']}.arrow"])
    assert len(list((data / "digits").glob("cache-*.arrow"))) == 2  # float32 and float16
    assert not [p for p in (data / "sms").iterdir() if p.name.startswith("tmp")]

    # a single process reads the same cache: same fingerprint, no model loaded
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a cached call")

    monkeypatch.setattr(embedding_module, "build_encoder", no_model)
    single = datasets.load_from_disk(str(data / "sms")).d2.embed("text", map_batch_size=64)
    assert single._fingerprint == str(ranks[0]["sms_fingerprint"])
    np.testing.assert_array_equal(single.d2.embeddings(), ranks[0]["sms_embedding"])
    assert single.d2.provenance[-1]["num_processes"] == 1


@pytest.mark.slow
def test_a_failure_in_one_process_is_raised_in_every_process(launch):
    _, ranks = launch
    own, other = str(ranks[1]["failure"]), str(ranks[0]["failure"])  # the NaN rows are in the second shard
    assert own.startswith("InvalidValuesError: model 'nan_for_marked_rows' returned NaN"), own
    assert other.startswith("InvalidValuesError: embed failed in process 1 of 2"), other


@pytest.mark.slow
def test_num_proc_inside_a_launch_is_refused(launch):
    for got in launch[1]:
        assert "use one or the other" in str(got["num_proc_error"])


def test_num_proc_is_refused_before_any_process_group_or_model_is_set_up(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()
    monkeypatch.setattr(embedding_module, "build_encoder", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(InvalidParameterError, match="num_proc=2 forks CPU workers inside each process"):
        _digits(10).d2.embed("pixels", model=pixel_features, num_proc=2)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300, 301])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_contiguous_balanced_and_those_of_dataset_shard(n, world):
    bounds = shard_bounds(n, world)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    if n >= world:
        ds = datasets.Dataset.from_dict({"i": list(range(n))})
        for rank, (start, stop) in enumerate(bounds):
            assert ds.shard(num_shards=world, index=rank, contiguous=True)["i"] == list(range(start, stop))
