"""Every script in examples/ runs offline, on smaller settings, and prints what its docstring promises.

Each example runs as ``python examples/NAME.py ARGS`` would run it (``__name__ == "__main__"``, its
own ``sys.argv``, a scratch working directory; offline and with a private datasets cache, as
conftest.py sets up every test), but inside the test process, which saves importing torch and
transformers once per example. The checks read its printed figures, so an example that runs but
has stopped finding what it claims to find fails too.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from hf_d2prune.builtin import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture
def run_example(tmp_path, monkeypatch, capsys):
    """``run_example(name, *args)``: run ``examples/<name>`` as a script in ``tmp_path``; return what it printed."""

    def run(name: str, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
        monkeypatch.chdir(tmp_path)
        threads = torch.get_num_threads()
        capsys.readouterr()
        try:
            with torch.random.fork_rng():
                runpy.run_path(str(EXAMPLES / name), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out

    return run


def figures(text: str, label: str, pattern: str = r"\s+(\w+)\s+(-?[\d.]+)") -> dict[str, float]:
    """``{name: value}`` of the consecutive lines matching ``pattern`` (name, value) after the line containing ``label``."""
    block = text.split(label, 1)[1]
    found = {}
    for line in block.splitlines()[1:]:
        match = re.fullmatch(pattern, line)
        if match is None:
            if found:
                break
            continue
        found[match.group(1)] = float(match.group(2))
    return found


def test_every_example_has_a_test():
    tested = {"dynamics_digits.py", "dynamics_fashion_mnist.py", "dynamics_text.py", "dynamics_trainer.py",
              "embed_texts.py", "extrapolate_digits.py", "prune_texts.py", "save_for_hub.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_embed_texts(run_example):
    out = run_example("embed_texts.py", "--n", "300")
    agreement = float(re.search(r"nearest neighbour has the same label for ([\d.]+)%", out).group(1))
    assert agreement > 85


def test_prune_texts(run_example):
    out = run_example("prune_texts.py", "--n", "400", "--keep", "0.25")
    methods = ("random", "topk", "easiest", "ccs", "moderate", "kcenter", "d2")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in methods}
    assert set(rows) == set(methods)
    assert all(int(row[1]) == 100 for row in rows.values())  # 25% of 400 for every method
    score = {m: float(r[3]) for m, r in rows.items()}
    diversity = {m: float(r[4]) for m, r in rows.items()}
    assert max(score, key=score.get) == "topk" and min(score, key=score.get) == "easiest"
    assert max(diversity, key=diversity.get) == "kcenter"
    assert score["d2"] > score["random"] and diversity["d2"] > diversity["random"]  # harder *and* more spread out


def test_save_for_hub(run_example, tmp_path):
    out = run_example("save_for_hub.py", str(tmp_path / "hub"), "--rows", "200")
    assert "kept 60 of 200 rows" in out and "-> 60 rows" in out
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "hf_d2prune" in card and "prototype_distance" in card
    assert {p.name for p in (tmp_path / "hub" / "plots").glob("*.png")} >= {"retention_per_class.png",
                                                                            "score_kept_vs_dropped.png"}


def test_dynamics_digits(run_example):
    out = run_example("dynamics_digits.py")
    auroc = figures(out, "AUROC of each score")
    assert auroc["aum"] >= 0.9 and auroc["forgetting"] >= 0.9, auroc


def test_dynamics_text(run_example):
    out = run_example("dynamics_text.py", "--n", "600", "--epochs", "10")
    auroc = figures(out, "AUROC of each score")
    assert auroc["aum"] >= 0.9, auroc
    kept = float(re.search(r"of which ([\d.]+)% are flipped", out).group(1))
    assert kept < 5  # the hard cutoff drops the likeliest-mislabelled rows first


def test_dynamics_trainer_and_resume(run_example):
    out = run_example("dynamics_trainer.py", "--n", "160", "--epochs", "2", "--resume")
    assert set(figures(out, "AUROC of each score")) >= {"aum", "forgetting", "el2n"}
    gaps = figures(out, "resuming a new Trainer",
                   r"\s+(\w+)\s+largest difference to the uninterrupted run: ([\d.e+-]+)")
    assert gaps and max(gaps.values()) < 1e-4, gaps


def test_extrapolate_digits(run_example):
    out = run_example("extrapolate_digits.py")
    assert re.search(r"measured \d+ of 1797 rows", out)
    spearman = float(re.search(r"Spearman vs a full training run: (-?[\d.]+)", out).group(1))
    assert spearman > 0.3
    assert "steps: ['embed', 'train_dynamics', 'extrapolate', 'coreset', 'prune']" in out


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST (apt-get install dataset-fashion-mnist) is not installed")
def test_dynamics_fashion_mnist(run_example):
    out = run_example("dynamics_fashion_mnist.py", "--n", "1500", "--epochs", "4")
    assert figures(out, "AUROC")["aum"] >= 0.8
