"""save_for_hub / push_to_hub: the repo layout, round trips through load_dataset, the push up to the network."""

from __future__ import annotations

import logging
import os
import tempfile
import traceback
from pathlib import Path

import pytest

import datasets
import hf_d2prune  # noqa: F401
from hf_d2prune.card import check_card_metadata, pipeline_columns
from hf_d2prune.errors import InvalidParameterError
from hf_d2prune.hub import OutputExistsError, push_to_hub, save_for_hub
from test_card import ranked_sms

TOKEN = "hf_TESTtokenTHATmustNEVERleak0123456789"
EXPECTED = ["README.md", "data/train-00000-of-00001.parquet", "plots/retention_per_class.png",
            "plots/score_kept_vs_dropped.png"]


@pytest.fixture(scope="module")
def ranked():
    return ranked_sms()


@pytest.fixture(scope="module")
def small(ranked):
    return ranked.d2.prune(keep=0.3)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)).replace(os.sep, "/") for p in folder.rglob("*") if p.is_file())


def _same_rows(a: datasets.Dataset, b: datasets.Dataset) -> None:
    assert a.features == b.features
    assert a.to_dict() == b.to_dict()


# ----------------------------------------------------------------------------- save_for_hub

def test_save_for_hub_round_trip(ranked, small, tmp_path):
    out = save_for_hub(small, tmp_path / "repo", full=ranked, license="cc-by-4.0", source="sms_spam",
                       scores_config=True)
    assert _files(out) == sorted(EXPECTED + ["scores/train-00000-of-00001.parquet"])
    check_card_metadata((out / "README.md").read_text())

    loaded = datasets.load_dataset(str(out), split="train")
    _same_rows(loaded, small.remove_columns(pipeline_columns(small)))
    assert loaded.features["label"] == datasets.ClassLabel(names=["ham", "spam"])

    scores = datasets.load_dataset(str(out), "scores", split="train")
    _same_rows(scores, ranked.flatten_indices())
    assert scores.features["embedding"] == datasets.Sequence(datasets.Value("float32"), length=384)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_save_for_hub_with_scores_keeps_every_feature(small, tmp_path):
    out = save_for_hub(small, tmp_path / "repo", include_scores=True, license="mit")
    assert _files(out) == ["README.md", "data/train-00000-of-00001.parquet"]  # no full= -> no plots
    loaded = datasets.load_dataset(str(out), split="train")
    _same_rows(loaded, small.flatten_indices())
    # the features also survive from the parquet schema alone (the README's dataset_info aside)
    direct = datasets.load_dataset("parquet", data_files=str(out / "data" / "train-00000-of-00001.parquet"),
                                   split="train")
    assert direct.features == small.features


def test_save_for_hub_refuses_a_non_empty_folder_and_keeps_user_files(small, tmp_path):
    target = tmp_path / "repo"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_for_hub(small, target, license="mit")
    assert _files(target) == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"

    # a failure midway (no license known) leaves the folder as it was, and no temp folder behind
    with pytest.raises(InvalidParameterError, match="license="):
        save_for_hub(small, target, overwrite=True)
    assert _files(target) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]

    save_for_hub(small, target, overwrite=True, license="mit")
    assert "notes.txt" not in _files(target) and "README.md" in _files(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]

    empty = tmp_path / "empty"
    empty.mkdir()
    save_for_hub(small, empty, license="mit")  # an existing empty folder is fine


# ----------------------------------------------------------------------------- push_to_hub

class FakeHub:
    """Stands in for the Hub at the HfApi boundary: records repos and commits, reads uploaded bytes."""

    def __init__(self, existing=()):
        self.existing = list(existing)
        self.calls = []
        self.uploads: dict[str, bytes] = {}
        self.deletes: list[str] = []
        self.tokens = set()
        self.fail_commit = False

    def install(self, monkeypatch):
        from huggingface_hub import CommitInfo, HfApi, RepoUrl

        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", repo_id, kwargs))
            hub.tokens.add(api.token)
            return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        def list_repo_files(api, repo_id, **kwargs):
            hub.calls.append(("list_repo_files", repo_id, kwargs))
            return list(hub.existing)

        def create_commit(api, repo_id, operations, **kwargs):
            hub.calls.append(("create_commit", repo_id, kwargs))
            if hub.fail_commit:
                raise OSError("connection reset while uploading")
            for op in operations:
                if hasattr(op, "as_file"):
                    with op.as_file() as fh:
                        hub.uploads[op.path_in_repo] = fh.read()
                else:
                    hub.deletes.append(op.path_in_repo)
            return CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/abc", commit_message=kwargs.get("commit_message", ""),
                              commit_description="", oid="abc", pr_url=None)

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "list_repo_files", list_repo_files)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        return self


def test_push_commits_the_save_for_hub_layout_in_one_commit(ranked, small, tmp_path, monkeypatch, caplog):
    from huggingface_hub import DatasetCard

    stale = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    hub = FakeHub(existing=[".gitattributes", "README.md", "data/test-00000-of-00001.parquet", *stale]).install(monkeypatch)
    caplog.set_level(logging.DEBUG)
    info = push_to_hub(small, "me/sms-d2-30", full=ranked, token=TOKEN, license="cc-by-4.0", source="sms_spam")

    assert [c[0] for c in hub.calls] == ["create_repo", "list_repo_files", "create_commit"]
    assert hub.calls[0][2]["repo_type"] == "dataset" and hub.calls[2][2]["repo_type"] == "dataset"
    assert hub.tokens == {TOKEN}  # the token reaches huggingface_hub ...
    assert sorted(hub.uploads) == EXPECTED
    assert hub.deletes == stale  # old shards of this split go; other splits' files stay
    assert info.oid == "abc"

    # the same layout as save_for_hub, byte for byte for the card and the data
    local = save_for_hub(small, tmp_path / "local", full=ranked, license="cc-by-4.0", source="sms_spam")
    local_card = (local / "README.md").read_text()
    pushed_card = hub.uploads["README.md"].decode()
    assert pushed_card.replace("me/sms-d2-30", "<this repo>") == local_card.replace("me/sms-d2-30", "<this repo>")
    card = DatasetCard(pushed_card)
    assert card.data.license == "cc-by-4.0" and "D2 Pruning" in card.text
    check_card_metadata(pushed_card)

    data_file = tmp_path / "pushed.parquet"
    data_file.write_bytes(hub.uploads["data/train-00000-of-00001.parquet"])
    pushed = datasets.load_dataset("parquet", data_files=str(data_file), split="train")
    _same_rows(pushed, small.remove_columns(pipeline_columns(small)))

    # ... and nowhere else: not in any uploaded file, not in any log record
    for path, data in hub.uploads.items():
        assert TOKEN.encode() not in data, path
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_push_with_keep_and_scores_config(ranked, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    push_to_hub(ranked, "me/sms", keep=0.3, scores_config=True, include_scores=True, license="mit")
    assert "scores/train-00000-of-00001.parquet" in hub.uploads
    assert "datasets.load_dataset(\"me/sms\", \"scores\")" in hub.uploads["README.md"].decode()


@pytest.mark.parametrize("repo_id", ["no spaces allowed/x", "a/b/c", "--bad--/name", ""])
def test_invalid_repo_id_fails_before_any_work(small, monkeypatch, repo_id):
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(InvalidParameterError, match="repo_id"):
        push_to_hub(small, repo_id, license="mit")
    assert hub.calls == []


def test_missing_license_fails_before_the_repo_is_created(small, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(InvalidParameterError, match="license="):
        push_to_hub(small, "me/x")
    assert hub.calls == []


def test_failed_push_leaves_nothing_behind_locally(small, tmp_path, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    hub.fail_commit = True
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(OSError, match="connection reset"):
        push_to_hub(small, "me/x", license="mit", token=TOKEN)
    assert list(scratch.iterdir()) == []


def test_no_token_gives_huggingface_hubs_own_error(small, tmp_path, monkeypatch):
    """No token and no network: the first Hub call raises huggingface_hub's error, unwrapped."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(Exception) as caught:
        push_to_hub(small, "me/x", license="mit")
    assert type(caught.value).__module__.startswith("huggingface_hub")
    last_frame = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert "huggingface_hub" in last_frame.filename
    assert list(scratch.iterdir()) == []  # it failed before any local work


def test_push_of_a_plain_dataset_says_its_provenance_is_unknown(monkeypatch):
    hub = FakeHub().install(monkeypatch)
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"]})
    push_to_hub(ds, "me/plain", license="mit")
    assert sorted(hub.uploads) == ["README.md", "data/train-00000-of-00001.parquet"]
    assert "no `hf_d2prune` provenance" in hub.uploads["README.md"].decode()
