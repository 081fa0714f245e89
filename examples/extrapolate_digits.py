"""Score extrapolation on real data, offline: score 20% of the digits, extrapolate to the rest, prune.

Scikit-learn's 8x8 digits; the 64 pixels (scaled to [0, 1]) are the embedding (``ds.d2.embed``
with a plain function as the model) and a small MLP head on them is the scoring model. The TDDS
score is measured by training on a seeded 20% of the rows only (``train_dynamics(subset=0.2)``),
filled into the other 80% by kNN extrapolation (Schmidt et al., arXiv 2506.09010), and used by D2
pruning. A full training run is done too, only to show how close the cheap path gets.

    python examples/extrapolate_digits.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import hf_d2prune  # noqa: E402,F401  (registers ds.d2)
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import train_dynamics  # noqa: E402
from hf_d2prune.extrapolation_api import extrapolate  # noqa: E402


def pixels(images):
    """A batch of 8x8 images as rows of 64 values in [0, 1]."""
    return np.stack([np.asarray(image, dtype=np.float32).ravel() / 255.0 for image in images])


def score(ds, subset):
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    return train_dynamics(ds, head, inputs="embedding", epochs=12, scores=["tdds"], tdds_window=10,
                          subset=subset, seed=0, progress=False)


def main() -> None:
    ds = load_builtin("digits")
    ds = ds.d2.embed("image", model=pixels, normalize=False)  # any callable from a batch of images to vectors

    part = score(ds, subset=0.2)                      # TDDS on 20% of rows, NaN elsewhere
    mask = np.asarray(part["tdds_measured"])
    filled = extrapolate(part, "tdds", method="knn")  # k and weighting chosen on held-out measured rows
    step = filled.d2.provenance[-1]
    print(f"measured {mask.sum()} of {len(ds)} rows; kNN k={step['k']} ({step['weighting']}), "
          f"held-out Spearman {step['validation']['value']:.3f}")

    full = np.asarray(score(ds, subset=None)["tdds"], dtype=np.float64)
    tdds = np.asarray(filled["tdds"], dtype=np.float64)
    print(f"Spearman vs a full training run: {spearmanr(tdds[~mask], full[~mask])[0]:.3f} on the extrapolated rows; "
          f"noise ceiling {spearmanr(tdds[mask], full[mask])[0]:.3f} (measured rows, two different runs)")

    kept = filled.d2.coreset("tdds", method="d2", k=10).d2.prune(keep=0.5)
    print(f"D2 coreset at 50%: {len(kept)} rows; class counts {np.bincount(kept['label']).tolist()}")
    print("steps:", [s["step"] for s in kept.d2.provenance])


if __name__ == "__main__":
    main()
