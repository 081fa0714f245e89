"""Run ds.d2.embed in every process of a launch and save what each process got back.

`python -m torch.distributed.run --nproc_per_node 2 this.py DATA_DIR OUT_DIR` (gloo on CPU), used
by tests/test_distributed_embed.py. DATA_DIR holds two datasets written by `save_to_disk`:
`sms` (real text, embedded with the packaged MiniLM) and `digits` (301 rows of pixel vectors, an
odd count so the two shards differ in size, embedded with the deterministic `pixel_features`).
Each process writes OUT_DIR/rank<k>.npz.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def pixel_features(values) -> np.ndarray:
    """A deterministic encoder: elementwise features of each row alone (no BLAS), 192-d."""
    x = np.asarray(values, dtype=np.float32)
    return np.concatenate([x, x * x, np.cos(3.0 * x)], axis=1)


def nan_for_marked_rows(values) -> np.ndarray:
    """An encoder that returns NaN for rows whose first pixel is marked (only in the second shard)."""
    out = pixel_features(values)
    out[np.asarray(values, dtype=np.float32)[:, 0] < 0] = np.nan
    return out


class CountingEncoder:
    """Counts its calls, to show that a cached call loads no model and encodes nothing."""

    def __init__(self):
        self.calls = 0

    def __call__(self, values):
        self.calls += 1
        return pixel_features(values)


def main(data_dir: str, out_dir: str) -> None:
    import datasets
    import torch

    torch.set_num_threads(1)
    import hf_d2prune  # noqa: F401  (registers ds.d2)
    from hf_d2prune import distributed
    from hf_d2prune import embedding as embedding_module
    from hf_d2prune.errors import InvalidParameterError

    rank = int(os.environ.get("RANK", "0"))
    # rounds of a few rows: the gather runs many rounds, with shards of different sizes
    distributed.GATHER_CHUNK_BYTES = 16 << 10
    result: dict = {}

    # real text with the packaged MiniLM, on a dataset with cache files
    sms = datasets.load_from_disk(os.path.join(data_dir, "sms"))
    out = sms.d2.embed("text", map_batch_size=64)
    result.update(sms_embedding=out.d2.embeddings(), sms_text=np.array(out["text"]), sms_label=np.array(out["label"]),
                  sms_columns=np.array(out.column_names), sms_fingerprint=np.array(out._fingerprint),
                  sms_cache_files=np.array([f["filename"] for f in out.cache_files]),
                  processes=np.array(out.d2.provenance[-1]["num_processes"]))

    # an identical call loads the cache file the main process wrote, without loading the model
    real_build = embedding_module.build_encoder

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a cached call")

    embedding_module.build_encoder = no_model
    try:
        again = sms.d2.embed("text", map_batch_size=64)
    finally:
        embedding_module.build_encoder = real_build
    result.update(sms_again_embedding=again.d2.embeddings(), sms_again_fingerprint=np.array(again._fingerprint),
                  sms_again_cache_files=np.array([f["filename"] for f in again.cache_files]))

    # a deterministic callable on 301 rows: uneven shards (151 + 150), float32 and float16
    digits = datasets.load_from_disk(os.path.join(data_dir, "digits"))
    counting = CountingEncoder()
    d32 = digits.d2.embed("pixels", model=counting, model_fingerprint="pixel-features-v1", map_batch_size=40)
    first_calls = counting.calls
    d32_again = digits.d2.embed("pixels", model=counting, model_fingerprint="pixel-features-v1", map_batch_size=40)
    d16 = digits.d2.embed("pixels", model=pixel_features, dtype="float16", output_column="emb16", map_batch_size=40)
    result.update(digits_embedding=d32.d2.embeddings(), digits_label=np.array(d32["label"]),
                  digits_pixels=np.array(d32["pixels"], dtype=np.float32), digits_columns=np.array(d32.column_names),
                  digits_calls=np.array([first_calls, counting.calls - first_calls]),
                  digits_again_embedding=d32_again.d2.embeddings(),
                  digits_fp16=d16.d2.embeddings("emb16", dtype=np.float16),
                  digits_fp16_feature=np.array(d16.features["emb16"].feature.dtype))

    # in memory (no cache file): every process builds the column itself; and fewer rows than processes
    memory = datasets.Dataset.from_dict({"pixels": np.asarray(digits["pixels"], dtype=np.float32)[:7],
                                         "id": list(range(7))})
    result["memory_embedding"] = memory.d2.embed("pixels", model=pixel_features).d2.embeddings()
    result["memory_cache_files"] = np.array(len(memory.d2.embed("pixels", model=pixel_features).cache_files))
    one = memory.select(range(1))
    shuffled = datasets.Dataset.from_dict({"pixels": np.asarray(digits["pixels"], dtype=np.float32)}).shuffle(seed=3)
    result["shuffled_embedding"] = shuffled.d2.embed("pixels", model=pixel_features).d2.embeddings()
    result["shuffled_pixels"] = np.asarray(shuffled["pixels"], dtype=np.float32)  # an indices mapping, in its order
    result["one_row_embedding"] = one.d2.embed("pixels", model=pixel_features).d2.embeddings()

    # a failure in one process is raised in every process (no process waits forever)
    pixels = np.asarray(digits["pixels"], dtype=np.float32).copy()
    pixels[250:, 0] = -1.0  # rows of the second shard only
    broken = datasets.Dataset.from_dict({"pixels": pixels})
    try:
        broken.d2.embed("pixels", model=nan_for_marked_rows)
        result["failure"] = np.array("no error")
    except Exception as err:  # noqa: BLE001 - the class name is what is checked
        result["failure"] = np.array(f"{type(err).__name__}: {err}")

    # forked CPU workers inside a launch: refused
    try:
        digits.d2.embed("pixels", model=pixel_features, num_proc=2)
        result["num_proc_error"] = np.array("no error")
    except InvalidParameterError as err:
        result["num_proc_error"] = np.array(str(err))

    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **result)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1], sys.argv[2])
