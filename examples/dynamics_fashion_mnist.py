"""Training dynamics on Fashion-MNIST with a small CNN, offline, then a D2 coreset from them.

Fashion-MNIST ships in the Debian package ``dataset-fashion-mnist`` (``apt-get install
dataset-fashion-mnist``). Flips 10% of the labels of a subsample, trains a small CNN from scratch
with ``ds.d2.train_dynamics``, reports how well each score finds the flipped rows (AUROC), and
ranks the rows with D2 on AUM with a hard cutoff of the likeliest-mislabelled rows.

    python examples/dynamics_fashion_mnist.py              # 6,000 images, about 2 min on 2 CPU cores
    python examples/dynamics_fashion_mnist.py --n 60000 --epochs 12
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import hf_d2prune  # noqa: E402,F401
from hf_d2prune.builtin import load_builtin  # noqa: E402

SCORES = ["aum", "forgetting", "el2n", "confidence", "loss"]


def small_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 28)),                 # the image column arrives as (B, 28, 28) uint8
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10),
    )


class Scaled(torch.nn.Module):
    """Pixels 0..255 -> [0, 1] in front of the CNN."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.float() / 255.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    ds = load_builtin("fashion_mnist").shuffle(seed=0).select(range(args.n)).flatten_indices()
    rng = np.random.default_rng(0)
    clean = np.asarray(ds["label"])
    flipped = rng.random(len(ds)) < 0.10
    noisy = np.where(flipped, (clean + rng.integers(1, 10, len(ds))) % 10, clean)
    ds = ds.map(lambda _, i: {"label": int(noisy[i])}, with_indices=True, features=ds.features, desc="Flipping labels")

    torch.manual_seed(0)
    ds = ds.d2.train_dynamics(Scaled(small_cnn()), inputs="image", epochs=args.epochs, batch_size=128,
                              lr=2e-3, scores=SCORES)
    print(f"{flipped.sum()} of {len(ds)} labels flipped; AUROC of each score for finding them:")
    for name in SCORES:
        print(f"  {name:12s} {roc_auc_score(flipped, np.asarray(ds[name])):.3f}")

    # D2 needs an embedding: the CNN's pixels are a fine stand-in at this size (784-d).
    ds = ds.d2.embed("image", model=lambda images: np.asarray(images, np.float32).reshape(len(images), -1) / 255.0)
    ranked = ds.d2.coreset(score="aum", method="d2", k=10, hard_cutoff=0.1)
    small = ranked.d2.prune(keep=0.3)
    ranks = np.asarray(ranked["d2_rank"])
    kept = (ranks >= 0) & (ranks < len(small))
    print(f"\nD2 on AUM, 10% hard cutoff: keeps {len(small)} rows; flipped among them: {flipped[kept].mean():.1%} "
          f"(10% overall); per class: {np.bincount(np.asarray(small['label']), minlength=10).tolist()}")


if __name__ == "__main__":
    main()
