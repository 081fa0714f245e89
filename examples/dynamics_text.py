"""Training dynamics on text, offline: a linear head on frozen MiniLM embeddings of SMS spam.

Embeds the messages, flips the labels of 10% of them, trains a linear classifier on the frozen
embeddings with ``ds.d2.train_dynamics`` and checks which scores find the flipped messages
(AUROC), then prunes with D2 on the AUM score, dropping the likeliest-mislabelled rows first.

    python examples/dynamics_text.py            # 2,000 messages, about a minute on 2 CPU cores
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import hf_d2prune  # noqa: E402,F401
from hf_d2prune.builtin import load_builtin  # noqa: E402

SCORES = ["aum", "forgetting", "el2n", "loss", "confidence", "tdds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    ds = load_builtin("sms_spam").select(range(args.n)).d2.embed("text")
    rng = np.random.default_rng(0)
    clean = np.asarray(ds["label"])
    flipped = rng.random(len(ds)) < 0.10
    noisy = np.where(flipped, 1 - clean, clean)
    ds = ds.map(lambda _, i: {"label": int(noisy[i])}, with_indices=True, features=ds.features, desc="Flipping labels")

    torch.manual_seed(0)
    head = torch.nn.Linear(384, 2)
    ds = ds.d2.train_dynamics(head, inputs="embedding", epochs=args.epochs, batch_size=64, lr=1e-2, scores=SCORES)

    print(f"{flipped.sum()} of {len(ds)} labels flipped; AUROC of each score for finding them:")
    for name in SCORES:
        print(f"  {name:12s} {roc_auc_score(flipped, np.asarray(ds[name])):.3f}")

    ranked = ds.d2.coreset(score="aum", method="d2", k=10, hard_cutoff=0.1)
    small = ranked.d2.prune(keep=0.5)
    kept_flipped = flipped[np.flatnonzero((np.asarray(ranked["d2_rank"]) >= 0) & (np.asarray(ranked["d2_rank"]) < len(small)))]
    print(f"\nD2 on AUM with a 10% hard cutoff keeps {len(small)} rows, of which {kept_flipped.mean():.1%} "
          f"are flipped (10% in the full set).")


if __name__ == "__main__":
    main()
