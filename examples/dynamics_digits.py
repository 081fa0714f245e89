"""Training-dynamics scores on real data, offline: which digits does a small CNN find hardest?

Flips the labels of 10% of scikit-learn's 8x8 digits, trains a small CNN for a few epochs with
``train_dynamics`` (Accelerate; runs unchanged under ``accelerate launch --cpu --num_processes 2``)
and checks that the scores find the flipped rows: AUROC of AUM and forgetting events.

    python examples/dynamics_digits.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import train_dynamics  # noqa: E402

SCORES = ["aum", "forgetting", "el2n", "confidence", "variability", "dynamic_uncertainty", "tdds"]


def flip_labels(ds, fraction: float, seed: int = 0):
    """Give a random ``fraction`` of rows a wrong label; return the dataset and the flipped mask."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds["label"])
    flipped = rng.random(len(labels)) < fraction
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    ds = ds.map(lambda _, i: {"label": int(noisy[i])}, with_indices=True, features=ds.features, desc="Flipping labels")
    return ds, flipped, labels


def main() -> None:
    torch.manual_seed(0)
    ds, flipped, clean = flip_labels(load_builtin("digits"), 0.10)
    model = torch.nn.Sequential(                       # input: (B, 1, 8, 8) pixels in [0, 1]
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )
    ds = train_dynamics(ds, model, inputs="image", epochs=11, batch_size=32, lr=3e-3, scores=SCORES,
                        du_window=5, tdds_window=5)

    print(f"\n{flipped.sum()} of {len(ds)} labels flipped. AUROC of each score for finding them:")
    for name in SCORES:
        print(f"  {name:22s} {roc_auc_score(flipped, np.asarray(ds[name])):.3f}")

    aum = np.asarray(ds["aum"])
    print("\nThe 10 hardest rows by AUM (stored as -AUM: higher = harder):")
    print("  row   -AUM  forgetting  label  true label  flipped")
    for row in np.argsort(-aum)[:10]:
        print(f"  {row:4d} {aum[row]:6.2f} {ds[int(row)]['forgetting']:10.0f} {ds[int(row)]['label']:6d}"
              f" {clean[row]:11d}  {'yes' if flipped[row] else 'no'}")


if __name__ == "__main__":
    main()
