"""Interrupted runs leave nothing a rerun would trust, and earlier outputs survive a failed write.

- ``embed`` interrupted by KeyboardInterrupt raised inside the model after some batches, and a
  subprocess SIGKILLed in the middle of ``Dataset.map``: no cache file of the step's fingerprint
  is left, so a rerun recomputes (the model is called) and gives the right values.
- ``train_dynamics`` interrupted inside the model's forward after some batches: the input is
  unchanged and a rerun with a fresh model gives exactly the scores of an uninterrupted run.
- ``save_for_hub`` and the CLI's ``save_atomic``: an exception (or KeyboardInterrupt) in the middle
  of writing leaves the previous output byte for byte and no temporary folder beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import hf_d2prune  # noqa: F401
from hf_d2prune import hub as hub_module
from hf_d2prune.io import replace_atomically, save_atomic

torch.set_num_threads(1)
datasets.disable_progress_bars()

N = 40


def _texts() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [f"message number {i} " + "x" * (i % 7) for i in range(N)],
                                       "label": [i % 2 for i in range(N)]})


def encode(values: list) -> np.ndarray:
    """A deterministic stand-in for a text model: (length, count of 'x', 1)."""
    return np.array([[len(v), v.count("x"), 1.0] for v in values], dtype=np.float32)


def _expected() -> np.ndarray:
    X = encode(_texts()["text"])
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class InterruptAfter:
    def __init__(self, batches: int):
        self.batches, self.calls = batches, 0

    def __call__(self, values):
        self.calls += 1
        if self.calls > self.batches:
            raise KeyboardInterrupt
        return encode(values)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, values):
        self.calls += 1
        return encode(values)


def _cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("cache-"))


def test_keyboard_interrupt_inside_embed_leaves_no_cache_and_rerun_is_right(tmp_path):
    _texts().save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    before = (ds._fingerprint, ds.to_dict())
    model = InterruptAfter(batches=3)
    with pytest.raises(KeyboardInterrupt):
        ds.d2.embed("text", model, model_fingerprint="toy-v1", map_batch_size=4)
    assert model.calls == 4  # the dimension probe, two batches written, interrupted in the third
    assert (ds._fingerprint, ds.to_dict()) == before
    assert _cache_files(tmp_path / "ds") == []  # nothing a rerun could load
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.startswith("tmp")], "temporary map output removed"

    rerun = Counting()
    out = ds.d2.embed("text", rerun, model_fingerprint="toy-v1", map_batch_size=4)
    assert rerun.calls > 0, "recomputed, not loaded from a partial cache"
    np.testing.assert_allclose(out.d2.embeddings(), _expected(), rtol=1e-6)
    again = Counting()
    cached = ds.d2.embed("text", again, model_fingerprint="toy-v1", map_batch_size=4)
    assert again.calls == 0 and cached.d2.embeddings().tobytes() == out.d2.embeddings().tobytes()


_KILLED = """
import os, sys, time
sys.path.insert(0, {tests!r})
import datasets, numpy as np, hf_d2prune
from test_interrupted import encode
calls = 0
def slow(values):
    global calls
    calls += 1
    if calls == 4:
        open({marker!r}, "w").write("mid-map")
        time.sleep(60)   # killed here
    return encode(values)
ds = datasets.load_from_disk({path!r})
ds.d2.embed("text", slow, model_fingerprint="toy-v1", map_batch_size=4)
"""


def test_sigkill_mid_map_leaves_no_cache_a_rerun_would_load(tmp_path):
    _texts().save_to_disk(str(tmp_path / "ds"))
    marker = tmp_path / "started"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED.format(tests=str(Path(__file__).parent), marker=str(marker),
                                                     path=str(tmp_path / "ds"))))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, "the child exited before reaching the middle of map"
            assert time.monotonic() < deadline, "the child never reached the middle of map"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert _cache_files(tmp_path / "ds") == []  # only datasets' own tmp* file can remain; it is never loaded
    rerun = Counting()
    out = ds.d2.embed("text", rerun, model_fingerprint="toy-v1", map_batch_size=4)
    assert rerun.calls > 0
    np.testing.assert_allclose(out.d2.embeddings(), _expected(), rtol=1e-6)
    assert len(_cache_files(tmp_path / "ds")) == 1


# ----------------------------------------------------------------------------- train_dynamics

def _dyn_data() -> datasets.Dataset:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 64)
    X = rng.normal(size=(64, 4)).astype(np.float32) + labels[:, None]
    return datasets.Dataset.from_dict({"embedding": X, "label": labels},
                                      features=datasets.Features({"embedding": datasets.Sequence(datasets.Value("float32"), length=4),
                                                                  "label": datasets.ClassLabel(names=["a", "b"])}))


class Head(torch.nn.Module):
    def __init__(self, interrupt_after: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        self.interrupt_after, self.calls = interrupt_after, 0

    def forward(self, x):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        return self.linear(x)


def test_keyboard_interrupt_inside_train_dynamics_then_rerun_gives_the_right_scores():
    ds = _dyn_data()
    before = (ds._fingerprint, ds.to_dict())
    kwargs = dict(inputs="embedding", epochs=3, batch_size=16, scores=["aum", "forgetting", "el2n"], progress=False)
    reference = ds.d2.train_dynamics(Head(), **kwargs)
    with pytest.raises(KeyboardInterrupt):
        ds.d2.train_dynamics(Head(interrupt_after=6), **kwargs)  # the probe + 5 training batches, then stop
    assert (ds._fingerprint, ds.to_dict()) == before
    assert ds.column_names == ["embedding", "label"]
    rerun = ds.d2.train_dynamics(Head(), **kwargs)
    for name in ("aum", "forgetting", "el2n"):
        assert np.asarray(rerun[name]).tobytes() == np.asarray(reference[name]).tobytes(), name
    assert rerun._fingerprint == reference._fingerprint


# ----------------------------------------------------------------------------- atomic outputs

def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


@pytest.fixture(scope="module")
def pruned():
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(30)], "label": rng.integers(0, 2, 30),
                                     "embedding": rng.normal(size=(30, 3)).astype(np.float32),
                                     "score": rng.random(30)},
                                    features=datasets.Features({"text": datasets.Value("string"),
                                                                "label": datasets.ClassLabel(names=["a", "b"]),
                                                                "embedding": datasets.Sequence(datasets.Value("float32"), length=3),
                                                                "score": datasets.Value("float32")}))
    ranked = ds.d2.coreset(score="score", method="topk")
    return ranked, ranked.d2.prune(keep=0.5, method="topk")


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_for_hub_keeps_the_previous_output_and_no_temp_folder(pruned, tmp_path, monkeypatch, error):
    ranked, small = pruned
    out = tmp_path / "hub"
    small.d2.save_for_hub(out, full=ranked, license="mit")
    previous, siblings = _tree(out), _siblings(out)
    real_build_card = hub_module.build_card

    def fail_after_the_data(*args, **kwargs):  # parquet shards already written to the temp folder
        real_build_card(*args, **kwargs)
        raise error

    monkeypatch.setattr(hub_module, "build_card", fail_after_the_data)
    with pytest.raises(type(error)):
        small.d2.save_for_hub(out, full=ranked, license="mit", overwrite=True)
    assert _tree(out) == previous
    assert _siblings(out) == siblings == []


def test_failed_cli_save_keeps_the_previous_output_and_no_temp_folder(pruned, tmp_path, monkeypatch):
    ranked, small = pruned
    out = tmp_path / "out"
    save_atomic(small, out)
    previous = _tree(out)
    real = datasets.Dataset.save_to_disk

    def half_written(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        (Path(path) / "state.json").write_text("{truncated")
        raise OSError("no space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", half_written)
    with pytest.raises(OSError, match="no space"):
        save_atomic(ranked, out)
    assert _tree(out) == previous and _siblings(out) == []
    assert len(datasets.load_from_disk(str(out))) == len(small)


def test_a_swap_that_fails_half_way_puts_the_previous_output_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".out.tmp-"):
            raise OSError("rename failed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        replace_atomically(out, lambda tmp: (tmp / "new.txt").write_text("new"))
    assert _tree(out) == {"old.txt": b"previous"} and _siblings(out) == []


def test_an_output_path_that_is_a_file_is_refused_and_kept(tmp_path):
    from hf_d2prune.errors import OutputExistsError

    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="is a file"):
        replace_atomically(target, lambda tmp: (tmp / "x").write_text("x"))
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
