"""The hf-d2prune command line on real packaged data."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest

from hf_d2prune.cli import main
from hf_d2prune.provenance import read_provenance


@pytest.fixture()
def sms_csv(tmp_path, sms):
    path = tmp_path / "sms.csv"
    sms.select(range(80)).to_csv(str(path), index=False)
    return path


def test_help_lists_commands_and_examples():
    out = subprocess.run([sys.executable, "-m", "hf_d2prune.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("run", "embed", "select", "examples:", "hf-d2prune run sms_spam --keep 0.3"):
        assert word in out
    run_help = subprocess.run([sys.executable, "-m", "hf_d2prune.cli", "run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--gamma-forward" in run_help and "--keep" in run_help and "--hard-cutoff" in run_help


def test_run_on_a_csv_file(tmp_path, sms_csv, capsys):
    out_dir = tmp_path / "coreset"
    scored_dir = tmp_path / "scored"
    assert main(["run", str(sms_csv), "--column", "text", "--keep", "0.25", "--k", "5",
                 "--out", str(out_dir), "--save-scored", str(scored_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    small = datasets.load_from_disk(str(out_dir))
    scored = datasets.load_from_disk(str(scored_dir))
    assert len(small) == summary["kept_rows"] == 20
    assert {"text", "label", "embedding", "prototype_distance", "d2_rank", "d2_score"} <= set(scored.column_names)
    ranks = np.asarray(scored["d2_rank"])
    assert small["text"] == [t for t, r in zip(scored["text"], ranks) if 0 <= r < 20]
    assert sum(int(v.split("/")[0]) for v in summary["kept_per_class"].values()) == 20


def test_embed_then_select(tmp_path, sms_csv):
    emb = tmp_path / "emb"
    ranked = tmp_path / "ranked"
    assert main(["embed", str(sms_csv), "--column", "text", "--out", str(emb)]) == 0
    assert main(["select", str(emb), "--method", "kcenter", "--out", str(ranked)]) == 0
    ds = datasets.load_from_disk(str(ranked))
    assert sorted(ds["kcenter_rank"]) == list(range(80))
    assert main(["select", str(emb), "--strata", "3", "--class-wise", "--out", str(tmp_path / "strata")]) == 0
    step = read_provenance(datasets.load_from_disk(str(tmp_path / "strata")))[-1]
    assert step["strata"] == 3 and step["by"] == "label"


def test_library_errors_exit_with_status_2(tmp_path, sms_csv, capsys):
    assert main(["embed", str(sms_csv), "--column", "txt", "--out", str(tmp_path / "x")]) == 2
    assert "column 'txt' not found; available: text, label" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_existing_output_survives_a_failed_run(tmp_path, sms_csv):
    out_dir = tmp_path / "out"
    assert main(["embed", str(sms_csv), "--column", "text", "--out", str(out_dir)]) == 0
    before = sorted(p.name for p in out_dir.iterdir())
    assert main(["run", str(out_dir), "--keep", "2.5", "--out", str(out_dir)]) == 2  # 2.5 rows: invalid
    assert sorted(p.name for p in out_dir.iterdir()) == before
    assert len(datasets.load_from_disk(str(out_dir))) == 80


@pytest.mark.slow
def test_main_job_on_the_builtin_dataset(tmp_path, capsys):
    """The README's main job: the whole SMS spam collection, offline."""
    out_dir = tmp_path / "sms-d2-30"
    assert main(["run", "sms_spam", "--keep", "0.3", "--out", str(out_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_rows"] == 4862 and summary["kept_rows"] == 1459
    assert len(datasets.load_from_disk(str(out_dir))) == 1459


def test_run_writes_the_hub_layout_and_card_regenerates(tmp_path, sms_csv):
    hub_dir = tmp_path / "hub"
    assert main(["run", str(sms_csv), "--column", "text", "--keep", "0.5", "--k", "5", "--out", str(tmp_path / "small"),
                 "--save-scored", str(tmp_path / "full"), "--hub-dir", str(hub_dir), "--license", "cc-by-4.0"]) == 0
    loaded = datasets.load_dataset(str(hub_dir), split="train")
    assert len(loaded) == 40
    card_text = (hub_dir / "README.md").read_text()
    assert "license: cc-by-4.0" in card_text and "d2" in card_text
    out_card = tmp_path / "card" / "README.md"
    assert main(["card", str(tmp_path / "small"), "--full", str(tmp_path / "full"), "--out", str(out_card),
                 "--license", "cc-by-4.0"]) == 0
    assert "40" in out_card.read_text()


def test_bad_repo_id_is_rejected_before_any_work(tmp_path, sms_csv, monkeypatch, capsys):
    from hf_d2prune import embedding

    monkeypatch.setattr(embedding, "build_encoder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert main(["run", str(sms_csv), "--column", "text", "--keep", "0.5", "--out", str(tmp_path / "o"),
                 "--push-to-hub", "not a/valid//repo"]) == 2
    assert "repo" in capsys.readouterr().err


def test_run_with_a_training_dynamics_score(tmp_path, sms_csv):
    scored = tmp_path / "scored"
    assert main(["run", str(sms_csv), "--column", "text", "--score", "aum", "--epochs", "3", "--keep", "0.5",
                 "--k", "5", "--out", str(tmp_path / "small"), "--save-scored", str(scored)]) == 0
    ds = datasets.load_from_disk(str(scored))
    aum = np.asarray(ds["aum"])
    assert np.isfinite(aum).all() and aum.std() > 0
    assert [s["step"] for s in ds.d2.provenance] == ["embed", "train_dynamics", "coreset"]


def test_run_with_a_subset_score_extrapolated_to_every_row(tmp_path, sms_csv):
    scored = tmp_path / "scored"
    assert main(["run", str(sms_csv), "--column", "text", "--score", "tdds", "--epochs", "11", "--subset", "0.5",
                 "--keep", "0.5", "--k", "5", "--out", str(tmp_path / "small"), "--save-scored", str(scored)]) == 0
    ds = datasets.load_from_disk(str(scored))
    tdds = np.asarray(ds["tdds"])
    measured = np.asarray(ds["tdds_measured"])
    assert measured.sum() == 40 and np.isfinite(tdds).all()
    assert [s["step"] for s in ds.d2.provenance] == ["embed", "train_dynamics", "extrapolate", "coreset"]
    step = ds.d2.provenance[1]
    assert step["match_steps"] is True and step["subset_batch_size"] < 64  # tdds: on by default


def test_run_match_steps_off_keeps_the_full_batch_for_the_subset(tmp_path, sms_csv):
    scored = tmp_path / "scored"
    assert main(["run", str(sms_csv), "--column", "text", "--score", "tdds", "--epochs", "11", "--subset", "0.5",
                 "--match-steps", "off", "--keep", "0.5", "--out", str(tmp_path / "small"),
                 "--save-scored", str(scored)]) == 0
    step = datasets.load_from_disk(str(scored)).d2.provenance[1]
    assert step["match_steps"] is False and step["subset_batch_size"] == 64
